"""The hook contexts as protocols (nnrun.nodes.contexts): every member a protocol lists is one the
stage's real context class has (methods with the same parameters), and node files ask their
contexts for nothing the protocols do not list."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from nnrun.emit import DefineContext, EmitContext
from nnrun.lint import CheckContext
from nnrun.nodes import contexts
from nnrun.sinks import SinkContext

NODES_DIR = Path(__file__).resolve().parents[2] / "nnrun" / "nodes"
IMPLEMENTED_BY = [(contexts.CheckContext, CheckContext), (contexts.EmitContext, EmitContext),
                  (contexts.DefineContext, DefineContext),
                  (contexts.ArtifactContext, SinkContext)]


def members(protocol: type) -> set[str]:
    return set(protocol.__annotations__) | {n for n in vars(protocol) if not n.startswith("_")}


def parameters(function) -> list[str]:
    return [p for p in inspect.signature(function).parameters if p != "self"]


@pytest.mark.parametrize("protocol, cls", IMPLEMENTED_BY, ids=lambda x: x.__module__)
def test_the_real_context_has_every_member(protocol, cls):
    fields = {f.name for f in dataclasses.fields(cls)}
    missing = [m for m in members(protocol) if m not in fields and not hasattr(cls, m)]
    assert not missing, f"{cls.__qualname__} lacks {missing}"
    for name in members(protocol):
        declared = vars(protocol).get(name)
        if inspect.isfunction(declared):
            assert parameters(declared) == parameters(getattr(cls, name)), name


def test_a_check_context_is_one_at_run_time():
    assert isinstance(CheckContext(None, (), "graph.nodes[0]", "n"), contexts.CheckContext)


def test_node_files_use_only_what_the_protocols_list():
    offered = set().union(*(members(p) for p, _ in IMPLEMENTED_BY))
    used = {m for path in NODES_DIR.glob("*.py") if path.name != "contexts.py"
            for m in re.findall(r"\bctx\.(\w+)", path.read_text())}
    assert used - offered == set()
