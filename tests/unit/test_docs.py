"""The README documents every registered op and every error class's exit code."""

from __future__ import annotations

from pathlib import Path

from nnrun.errors import EXIT_CODES
from nnrun.nodes import REGISTRY

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_op_has_a_readme_row():
    missing = [op for op in REGISTRY.ops() if f"| `{op}` |" not in README]
    assert not missing


def test_every_named_output_is_in_its_readme_row():
    rows = {line.split("|")[1].strip(" `"): line for line in README.splitlines()
            if line.startswith("| `")}
    for node_type in REGISTRY.types():
        for name in node_type.outputs:
            assert f"`{name}`" in rows[node_type.op], (node_type.op, name)


def test_every_exit_code_is_documented():
    for name, code in EXIT_CODES.items():
        if name.endswith("Error"):
            assert f"| {code} | {name} |" in README, name
