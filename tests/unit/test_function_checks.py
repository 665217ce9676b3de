"""The `function` node without a model: its file is checked by parsing (never executed), every
mistake is a located issue, the opt-in is refused without the flag and cannot come from the
experiment file, and the program holds the file's text with a wrapper that checks the result."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from nnrun.bind import bind
from nnrun.codegen import generate
from nnrun.data import Dataset
from nnrun.errors import ConfigError, NnrunError
from nnrun.functions import require_opt_in
from nnrun.graph import build_graph
from nnrun.load import load_experiment
from nnrun.model_info import info_from_config
from nnrun.policy import check_experiment_text
from nnrun.tiny import build_config, build_tokenizer

INFO = info_from_config(build_config("tiny-gpt2"))
GOOD = '''import torch


def resid_norm(resid):
    return resid.float().norm(dim=-1)


def scaled(resid, factor):
    return resid * factor.mean()
'''


def spec(fn="functions/mine.py:resid_norm", axes=("example",), **node):
    return {"format": 1, "name": "t", "data": {"rows": [{"prompt": "the city of"}]},
            "graph": {"scopes": [{"id": "run", "kind": "trace", "input": {"column": "prompt"}}],
                      "nodes": [{"id": "resid", "op": "read", "site": "layer_output", "layer": 1,
                                 "position": "last", "scope": "run"},
                                {"id": "norm", "op": "function", "fn": fn,
                                 "axes": axes if isinstance(axes, str) else list(axes), **node},
                                {"id": "save_norm", "op": "save"}],
                      "edges": [{"src": "resid", "dst": "norm"},
                                {"src": "norm", "dst": "save_norm"}]}}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "mine.py").write_text(GOOD)
    return tmp_path


def graph_of(folder, **kwargs):
    source = folder / "exp.yaml"
    return build_graph(load_experiment(spec(**kwargs), source), INFO, source=source)


def codes(folder, text: str | None = None, **kwargs) -> list[str]:
    if text is not None:
        (folder / "functions" / "mine.py").write_text(text)
    try:
        graph_of(folder, **kwargs)
    except NnrunError as err:
        return [i.code for i in err.issues]
    return []


def test_a_good_file_validates(folder):
    assert codes(folder) == []
    assert codes(folder, fn="functions/mine.py:scaled", axes="same") == []


@pytest.mark.parametrize("fn, code", [
    ("functions/other.py:resid_norm", "function_not_found"),
    ("functions/mine.py:resid_nrom", "function_undefined"),
    ("../mine.py:resid_norm", "function_path"),
    ("functions/../../mine.py:resid_norm", "function_path"),
    ("/etc/mine.py:resid_norm", "function_path"),
    ("~/mine.py:resid_norm", "function_path"),
])
def test_file_and_name_mistakes_are_located(folder, fn, code):
    source = folder / "exp.yaml"
    with pytest.raises(NnrunError) as err:
        build_graph(load_experiment(spec(fn=fn), source), INFO, source=source)
    (issue,) = err.value.issues
    assert (issue.code, issue.node, issue.path) == (code, "norm", "graph.nodes[1].fn")
    if code == "function_undefined":
        assert "did you mean `resid_norm`?" in issue.hint


def test_a_link_leading_outside_the_folder_is_refused(folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "evil.py"
    outside.write_text(GOOD)
    os.symlink(outside, folder / "functions" / "link.py")
    assert codes(folder, fn="functions/link.py:resid_norm") == ["function_path"]


@pytest.mark.parametrize("fn", ["mine.txt:f", "functions/mine.py", "mine.py:not-a-name"])
def test_fn_must_be_file_py_colon_name(folder, fn):
    with pytest.raises(ConfigError) as err:
        load_experiment(spec(fn=fn), folder / "exp.yaml")
    assert "FILE.py:FUNCTION" in err.value.issues[0].message


@pytest.mark.parametrize("text, code", [
    ("def resid_norm(x:\n", "function_syntax"),
    ("async def resid_norm(x):\n    return x\n", "function_async"),
    ("from __future__ import annotations\n" + GOOD, "function_unsupported"),
    ("from torch import *\n" + GOOD, "function_unsupported"),
    (GOOD + "HERE = __file__\n", "function_unsupported"),
    (GOOD + "if __name__ == '__main__':\n    print(1)\n", "function_unsupported"),
    (GOOD + "def run(model, data):\n    pass\n", "function_name_clash"),
    (GOOD + "PASSES = []\n", "function_name_clash"),
    (GOOD + "nnrun_x = 1\n", "function_name_clash"),
    (GOOD + "import numpy as torch\n", "function_name_clash"),
    ("# ünïcode\n" + GOOD, None),   # UTF-8: fine
])
def test_file_contents_that_cannot_be_copied_are_refused(folder, text, code):
    assert codes(folder, text) == ([code] if code else [])


def test_a_file_that_is_not_utf8_is_refused(folder):
    (folder / "functions" / "mine.py").write_bytes(b"# \xff\n" + GOOD.encode())
    assert codes(folder) == ["function_file"]


def test_checking_never_executes_the_file(folder, tmp_path):
    marker = tmp_path / "executed"
    text = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n" + GOOD
    assert codes(folder, text) == []
    graph = graph_of(folder)
    generate(graph, bind(graph, build_tokenizer(), Dataset(({"prompt": "the city of"},),
                                                           "inline")))
    assert not marker.exists()   # validated and compiled: not run


def test_a_function_runs_after_the_model_and_keeps_the_example_axis(folder):
    assert codes(folder, scope="run") == ["illegal_scope"]
    assert codes(folder, axes=("hidden",)) == ["axis_mismatch"]
    assert codes(folder, axes=("example", "example")) == ["invalid_value"]


def test_running_needs_the_opt_in(folder):
    graph = graph_of(folder)
    with pytest.raises(ConfigError) as err:
        require_opt_in(graph, {})
    (issue,) = err.value.issues
    assert issue.code == "functions_not_allowed" and issue.node == "norm"
    assert "functions/mine.py:resid_norm" in issue.message and "exp.yaml" in issue.message
    assert "allow_functions=true" in issue.hint
    with pytest.raises(ConfigError, match="true or false"):
        require_opt_in(graph, {"allow_functions": "yes"})
    require_opt_in(graph, {"allow_functions": True})


def test_an_experiment_file_cannot_opt_in():
    with pytest.raises(ConfigError) as err:
        check_experiment_text("name: t\nallow_functions: true\ngraph: {nodes: []}\n", "e.yaml")
    assert [i.code for i in err.value.issues] == ["forbidden_allow_functions"]


def test_two_files_defining_one_name_are_refused(folder):
    (folder / "functions" / "other.py").write_text(GOOD)
    data = spec()
    data["graph"]["nodes"].append({"id": "again", "op": "function", "axes": ["example"],
                                   "fn": "functions/other.py:resid_norm"})
    data["graph"]["edges"].append({"src": "resid", "dst": "again"})
    source = folder / "exp.yaml"
    graph = build_graph(load_experiment(data, source), INFO, source=source)
    with pytest.raises(ConfigError) as err:
        require_opt_in(graph, {"allow_functions": True})
    assert {i.code for i in err.value.issues} == {"function_name_clash"}
    assert "`resid_norm`" in err.value.issues[0].message   # `import torch` in both is fine


def program_module(folder, tmp_path, **kwargs):
    graph = graph_of(folder, **kwargs)
    program = generate(graph, bind(graph, build_tokenizer(), Dataset(
        ({"prompt": "the city of"},), "inline")))
    path = tmp_path / f"program_{program.digest}.py"
    path.write_text(program.source)
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return program, module


def test_the_program_holds_the_file_and_checks_the_result(folder, tmp_path):
    program, module = program_module(folder, tmp_path)
    assert GOOD.rstrip() in program.source
    x = torch.randn(3, 8)
    assert torch.equal(module.nnrun_function_norm(x), x.norm(dim=-1))
    _, wrong = program_module(folder, tmp_path, axes=("example", "hidden"))
    with pytest.raises(ValueError, match=r"returned shape \(3,\).*\(example, hidden\)"):
        wrong.nnrun_function_norm(x)
    line = program.source.splitlines().index("def nnrun_function_norm(*inputs):") + 1
    assert program.line_map[line] == "norm"   # a failure in the wrapper names the node


def test_a_node_named_like_the_function_does_not_shadow_it(folder, tmp_path):
    data = spec()
    data["graph"]["nodes"][1]["id"] = "resid_norm"
    data["graph"]["edges"] = [{"src": "resid", "dst": "resid_norm"},
                              {"src": "resid_norm", "dst": "save_norm"}]
    source = folder / "exp.yaml"
    graph = build_graph(load_experiment(data, source), INFO, source=source)
    program = generate(graph, bind(graph, build_tokenizer(), Dataset(
        ({"prompt": "the city of"},), "inline")))
    assert "resid_norm_1 = nnrun_function_resid_norm(resid)" in program.source
