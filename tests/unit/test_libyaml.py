"""nnrun.libyaml: the C parser changes how fast YAML is read, never what it means. Every config
and experiment file nnrun ships, Hydra's own configs, generated documents and tricky scalars load
to the same values (and compose to the same nodes, lines included) as with the pure-Python
parser; malformed YAML raises the same error text."""

from __future__ import annotations

import io
from pathlib import Path

import hydra
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, _utils

from nnrun.libyaml import HAVE_LIBYAML, compose, parse_configs_with_libyaml

REPO = Path(__file__).resolve().parents[2]
FILES = sorted([*REPO.glob("configs/**/*.yaml"), *REPO.glob("experiments/**/*.yaml"),
                *Path(hydra.__file__).parent.glob("conf/**/*.yaml")])
TRICKY = """\
floats: [1e-3, 1.5e+2, .5, -2E4, .inf, -.Inf, .nan, 1_000.5]
ints: [0x1F, 0o17, 1_000, -3, +4]
not_dates: [2026-11-23, 2026-11-23 10:00:00]
bools: [yes, No, on, OFF, true, False]
nulls: [~, null, Null, ""]
strings: ['1e-3', "x: y", 'it''s', "\\u00e9\\t", plain text, "${params.x}", 12:30]
block: |
  two
  lines
folded: >-
  one
  line
anchors: {a: &a [1, 2], b: *a}
merge: {<<: {x: 1}, y: 2}
"""
pytestmark = pytest.mark.skipif(not HAVE_LIBYAML, reason="PyYAML built without libyaml")


@pytest.fixture(scope="module")
def c_load():
    parse_configs_with_libyaml()
    assert getattr(_utils.get_yaml_loader, "_nnrun_libyaml", False)
    assert issubclass(_utils.get_yaml_loader(), yaml.cyaml.CParser)
    return lambda text: OmegaConf.to_container(OmegaConf.load(io.StringIO(text)))


def pure_reference(text: str):
    """OmegaConf.load with its own (pure-Python) loader."""
    loader = getattr(_utils.get_yaml_loader, "__wrapped__", _utils.get_yaml_loader)()
    data = yaml.load(io.StringIO(text), Loader=loader)
    return OmegaConf.to_container(OmegaConf.create(data)) if data is not None else {}


def shape(node):
    """A node as comparable data: tag, line, column and value (children recursively)."""
    if node is None:
        return None
    value = node.value
    if isinstance(node, yaml.MappingNode):
        value = [(shape(k), shape(v)) for k, v in value]
    elif isinstance(node, yaml.SequenceNode):
        value = [shape(v) for v in value]
    return (type(node).__name__, node.tag, node.start_mark.line, node.start_mark.column, value)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_file_loads_the_same(path, c_load):
    text = path.read_text()
    assert c_load(text) == pure_reference(text)
    assert shape(compose(text)) == shape(yaml.compose(text, Loader=yaml.SafeLoader))


def test_tricky_scalars_load_the_same(c_load):
    assert c_load(TRICKY) == pure_reference(TRICKY)
    loaded = c_load(TRICKY)
    assert loaded["floats"][0] == 1e-3 and isinstance(loaded["not_dates"][0], str)


def test_duplicate_keys_are_still_refused(c_load):
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key a"):
        c_load("a: 1\na: 2\n")


@pytest.mark.parametrize("text", ["a: [1, 2\nb: 3\n", "a: b: c\n", "- x\ny: 1\n", "a: 'open\n",
                                  "\tkey: 1\n", "a: !!python/object:os.system x\n"])
def test_malformed_yaml_gives_the_pure_parsers_error(text):
    try:
        expected = shape(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as err:
        with pytest.raises(type(err)) as got:
            compose(text)
        assert str(got.value) == str(err)
    else:  # a document both accept (a tag is composed, never constructed)
        assert shape(compose(text)) == expected


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(data=st.dictionaries(st.text(min_size=1, max_size=8), VALUES, min_size=1, max_size=5),
       flow=st.booleans())
def test_generated_documents_load_the_same(c_load, data, flow):
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    assert c_load(text) == pure_reference(text)
