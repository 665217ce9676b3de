"""The node registry: every op module registers, whatever was imported first; malformed node
types fail at registration; the frozen registry cannot change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from nnrun.nodes import REGISTRY
from nnrun.nodes.base import NodeParams, NodeType, Registry

NODES_DIR = Path(__file__).resolve().parents[2] / "nnrun" / "nodes"


def test_every_node_module_is_registered():
    modules = {p.stem for p in NODES_DIR.glob("*.py")} - {"__init__", "base", "contexts", "fields"}
    assert modules == set(REGISTRY.ops())


def test_importing_nnsight_first_keeps_every_op():
    # nnsight gives every object a `.save` attribute; `from nnrun.nodes import save` would bind it.
    code = ("import nnsight\nfrom nnrun.nodes import REGISTRY\n"
            "print(' '.join(REGISTRY.ops()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == REGISTRY.ops()
    assert "save" in out


def test_frozen_registry_refuses_new_types():
    class Late(NodeType):
        op = "late"

        class Params(NodeParams):
            op: Literal["late"]

    with pytest.raises(RuntimeError, match="frozen"):
        REGISTRY.register(Late)
    with pytest.raises(TypeError):
        REGISTRY._types["late"] = Late()  # a real freeze, not a flag


def _params(op):
    return type("P", (NodeParams,), {"__annotations__": {"op": Literal[op]}})


@pytest.mark.parametrize("attrs, message", [
    ({"op": "bad op", "Params": _params("bad op")}, "identifier"),
    ({"op": "x"}, "Params must subclass"),
    ({"op": "x", "Params": _params("y")}, "Literal"),
])
def test_malformed_node_types_are_refused(attrs, message):
    cls = type("Broken", (NodeType,), attrs)
    with pytest.raises(TypeError, match=message):
        Registry().register(cls)


def test_a_non_node_type_is_refused():
    with pytest.raises(TypeError, match="not a NodeType"):
        Registry().register(dict)  # type: ignore[arg-type]
