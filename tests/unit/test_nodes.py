"""Each tensor/metric node's emitted code computes what its documentation says (no model).

The node's `emit()` runs against a stub context; the emitted line is executed on a random tensor
and compared with a direct torch computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from nnrun.nodes import REGISTRY

AXES = ("layer", "example", "position", "vocab")
X = torch.randn(3, 2, 5, 7, generator=torch.Generator().manual_seed(0))
Y = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(1))
TOKEN = 4
# Per-example token ids: the metric picks a different token in each example row.
TOKENS = torch.tensor([4, 6])


@dataclass
class StubContext:
    axes: dict = field(default_factory=lambda: {"in": AXES, "a": AXES, "b": AXES[1:],
                                                "logits": AXES})
    out: str = "out"

    def input(self, port):
        return {"a": "x", "b": "y"}.get(port, "x")

    def in_axes(self, port):
        return self.axes[port]

    def token_ids(self, field_name):
        return "tok"

    def pick_token(self, x, field_name, axes, keepdim=False):
        from nnrun.emit import EmitContext

        return EmitContext.pick_token(self, x, field_name, axes, keepdim)


CASES = [
    ("select_position", {"position": 1}, X[:, :, 1], ("layer", "example", "vocab")),
    ("select_position", {"position": "last"}, X[:, :, -1], ("layer", "example", "vocab")),
    ("mean", {"axis": "position"}, X.mean(2), ("layer", "example", "vocab")),
    ("add", {}, X + Y, AXES),
    ("subtract", {}, X - Y, AXES),
    ("scale", {"factor": -2.5}, X * -2.5, AXES),
    ("softmax", {}, X.softmax(-1), AXES),
    ("log_softmax", {"axis": "position"}, X.log_softmax(2), AXES),
    ("argmax", {}, X.argmax(-1), AXES[:-1]),
    ("argmax", {"axis": "layer"}, X.argmax(0), AXES[1:]),
    ("topk", {"k": 2}, X.topk(2, dim=-1).indices, ("layer", "example", "position", "k")),
    ("topk", {"k": 3, "output": "values"}, X.topk(3, dim=-1).values,
     ("layer", "example", "position", "k")),
    ("logit_diff", {"answer": " a", "foil": {"column": "foil"}},
     torch.stack([X[:, i, :, t] - X[:, i, :, t] for i, t in enumerate(TOKENS)], 1), AXES[:-1]),
    ("prob", {"token": " a"},
     torch.stack([X.softmax(-1)[:, i, :, t] for i, t in enumerate(TOKENS)], 1), AXES[:-1]),
    ("rank", {"token": {"column": "answer"}},
     torch.stack([1 + (X[:, i] > X[:, i, :, t:t + 1]).sum(-1) for i, t in enumerate(TOKENS)], 1),
     AXES[:-1]),
    ("mean", {"axis": "example"}, X.mean(1), ("layer", "position", "vocab")),
    ("std", {"axis": "position"}, X.std(2), ("layer", "example", "vocab")),
    ("sem", {"axis": "position"}, X.std(2) / 5 ** 0.5, ("layer", "example", "vocab")),
]


@pytest.mark.parametrize("op, fields, want, want_axes", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_emitted_code_matches_torch(op, fields, want, want_axes):
    node_type = REGISTRY.get(op)
    params = node_type.Params(id="n", op=op, **fields)
    ctx = StubContext()
    axes = node_type.out_axes(params, {p: ctx.axes[p] for p in node_type.inputs}, ctx)
    scope = {"x": X.clone(), "y": Y.clone(), "torch": torch, "tok": TOKENS}
    for stmt in node_type.emit(params, ctx):
        exec(compile(stmt.code, "<emitted>", "exec"), scope)  # test only: run one emitted line
    out = scope["out"]
    if node_type.outputs:  # named outputs: what a bare `src: n` reads
        port = node_type.default_output(params)
        axes, out = axes[port], getattr(out, port)
    assert axes == want_axes
    assert torch.allclose(out.float(), want.float(), atol=1e-6)


def test_axis_errors_name_the_axis():
    mean = REGISTRY.get("mean")
    with pytest.raises(ValueError, match="no axis `head`"):
        mean.out_axes(mean.Params(id="m", op="mean", axis="head"), {"in": AXES}, None)
    diff = REGISTRY.get("logit_diff")
    with pytest.raises(ValueError, match="`vocab` axis"):
        diff.out_axes(diff.Params(id="d", op="logit_diff", answer="a", foil="b"),
                      {"logits": ("example", "hidden")}, None)


def test_every_op_has_a_summary_and_docstring():
    import importlib

    for node_type in REGISTRY.types():
        assert node_type.summary, node_type.op
        module = importlib.import_module(type(node_type).__module__)
        assert module.__doc__ and module.__doc__.startswith(f"`{node_type.op}`"), node_type.op
