"""Zero, mean and resample ablation of attention heads equal plain torch hooks (tiny GPT-2 and
Llama; the mean over a reference dataset comes from a first pass, across chunks), and on the demo
model zero-ablating every layer destroys the IOI answer while one head carries it."""

from __future__ import annotations

import pytest
import torch
from method_helpers import HEAD_DIM, N_HEADS, PROJ, experiment_on_demo

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.refs import resampled_rows
from nnrun.run import execute
from nnrun.tiny import reference_model

ROWS = [{"p": "the eiffel tower is in the city of", "ref": "the colosseum tower is in the city of"},
        {"p": "the louvre tower was in the city of", "ref": "a red cat sat on the big mat"},
        {"p": "the kremlin tower is in the country of", "ref": "one two three four five six "
                                                               "seven eight"}]


def ablation_config(model: str) -> dict:
    heads = {"layer": "all", "head": "all"}
    scopes = [{"id": "ref", "kind": "trace", "input": {"column": "ref"}},
              {"id": "other", "kind": "trace", "input": {"column": "p", "resample": 3}}]
    nodes = [{"id": "ref_heads", "op": "read", "site": "attention_heads", "layer": "all",
              "scope": "ref"},
             {"id": "ref_mean", "op": "mean", "axis": "example"},
             {"id": "other_heads", "op": "read", "site": "attention_heads", "layer": "all",
              "scope": "other"}]
    edges = [{"src": "ref_heads", "dst": "ref_mean"}]
    kinds = {"zero": ({"constant": 0.0}, None), "mean": ({}, "ref_mean"),
             "resample": ({"mode": "patch"}, "other_heads")}
    for kind, (fields, source) in kinds.items():
        scopes += [{"id": kind, "kind": "trace"},
                   {"id": f"{kind}_p", "kind": "invoke", "parent": kind, "input": {"column": "p"},
                    "foreach": heads}]
        nodes += [{"id": f"{kind}_w", "op": "write", "site": "attention_heads",
                   "layer": "{layer}", "head": "{head}", "scope": f"{kind}_p", **fields},
                  {"id": f"{kind}_logits", "op": "read", "site": "logits", "position": "last",
                   "scope": f"{kind}_p"},
                  {"id": f"save_{kind}", "op": "save"}]
        edges += [{"src": f"{kind}_logits", "dst": f"save_{kind}"}]
        if source:
            edges.append({"src": source, "dst": f"{kind}_w.value"})
    return {"format": 1, "name": "t", "data": {"rows": ROWS}, "batch_size": 2,
            "graph": {"scopes": scopes, "nodes": nodes, "edges": edges},
            "model": {"name": model, "path": f"builtin:{model}"}}


class Reference:
    """Forward-pre-hooks on the output projections of a plain transformers model."""

    def __init__(self, model: str) -> None:
        self.hf, self.tok = reference_model(model)
        blocks, proj = PROJ[model]
        self.projections = [b.get_submodule(proj) for b in self.hf.get_submodule(blocks)]

    def ids(self, prompt):
        return self.tok(prompt, return_tensors="pt")["input_ids"]

    def heads(self, prompt) -> list[torch.Tensor]:
        cache = {}
        hooks = [m.register_forward_pre_hook(lambda m, a, k=k: cache.__setitem__(k, a[0]))
                 for k, m in enumerate(self.projections)]
        with torch.no_grad():
            self.hf(self.ids(prompt))
        for h in hooks:
            h.remove()
        return [cache[k][0].unflatten(-1, (N_HEADS, HEAD_DIM)) for k in sorted(cache)]

    def ablated(self, prompt, layer, head, value) -> torch.Tensor:
        """Last-position logits with `head` of `layer` set to `value` (position, head_dim)."""
        def hook(m, args):
            x = args[0].unflatten(-1, (N_HEADS, HEAD_DIM)).clone()
            x[0, :, head] = value
            return (x.flatten(-2),)
        h = self.projections[layer].register_forward_pre_hook(hook)
        with torch.no_grad():
            out = self.hf(self.ids(prompt)).logits[0, -1]
        h.remove()
        return out


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def ablated(request):
    compiled = compile_program(ablation_config(request.param))
    return request.param, compiled, execute(compiled, load_model(compiled.model))


def test_ablations_equal_plain_hooks(ablated):
    model, compiled, got = ablated
    assert len(compiled.program.schedule.passes) == 2   # the mean is a first pass of its own
    ref = Reference(model)
    reference_mean = [torch.stack(layer).mean(0) for layer in
                      zip(*[ref.heads(r["ref"]) for r in ROWS])]   # per layer (pos, head, dim)
    others = resampled_rows(len(ROWS), 3)
    worst, spread = 0.0, 0.0
    for i, row in enumerate(ROWS):
        other = ref.heads(ROWS[others[i]]["p"])
        assert others[i] != i
        for layer in range(len(ref.projections)):
            for head in range(N_HEADS):
                values = {"zero": torch.zeros(HEAD_DIM),
                          "mean": reference_mean[layer][:, head],
                          "resample": other[layer][:, head]}
                for kind, value in values.items():
                    want = ref.ablated(row["p"], layer, head, value)
                    worst = max(worst, (got[f"{kind}_logits"][layer, head, i] - want).abs().max())
                spread = max(spread, (got["mean_logits"][layer, head, i] -
                                      got["zero_logits"][layer, head, i]).abs().max())
    assert worst <= 1e-5
    assert spread > 1e-3   # mean and zero ablation differ: the comparison has teeth


def test_ablation_on_the_demo_model():
    """IOI: zeroing every layer's attention and MLP output destroys IO − S; ablating the name
    mover head (zero, mean or resample) removes most of it; most other heads barely matter."""
    got = experiment_on_demo("ablation", limit=24)
    clean = got["clean_diff"].mean()
    assert clean > 10
    assert got["everything_diff"].mean().abs() < 0.1 * clean
    for kind in ("zero", "mean", "resample"):
        effect = got[f"{kind}_effect"].mean(-1)          # (layer, head): mean over examples
        layer, head = divmod(int(effect.argmin()), effect.shape[1])
        assert (layer, head) == (0, 2) and effect[0, 2] < -0.8 * clean, kind
        assert (effect.abs() < 0.1 * clean).sum() >= 12, kind   # most heads barely matter


def test_plan_scans_every_pass():
    """stage=plan: the later pass is scanned too, with zeros standing in for the mean."""
    from nnrun.plan import plan_report

    report = plan_report(compile_program(ablation_config("tiny-gpt2")))
    assert "mean_logits          (layer, head, example, vocab) = (2, 4, 3, 67)" in report
