"""Attribution patching equals (clean − corrupt) · gradient computed with plain autograd, one
prompt at a time (tiny GPT-2 and Llama), takes one forward and one backward pass per chunk, and on
the demo model correlates with activation patching."""

from __future__ import annotations

import pytest
import torch
from method_helpers import HEAD_DIM, N_HEADS, PROJ, experiment_on_demo

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute
from nnrun.tiny import reference_model

ROWS = [{"clean": "the eiffel tower is in the city of",
         "corrupt": "the colosseum tower is in the city of"},
        {"clean": "the louvre tower was in the city of",
         "corrupt": "the kremlin tower was in the city of"},
        {"clean": "the tower is in the big city of", "corrupt": "the cat is in the big city of"}]


def atp_config(model: str) -> dict:
    reads = [("heads", "attention_heads"), ("resid", "layer_input")]
    nodes = [{"id": "logits", "op": "read", "site": "logits", "position": "last", "scope": "k"},
             {"id": "metric", "op": "logit_diff", "answer": " paris", "foil": " rome",
              "scope": "k"}]
    edges = [{"src": "logits", "dst": "metric.logits"}]
    for name, site in reads:
        nodes += [{"id": f"c_{name}", "op": "read", "site": site, "layer": "all", "scope": "c"},
                  {"id": f"k_{name}", "op": "read", "site": site, "layer": "all", "scope": "k"},
                  {"id": f"g_{name}", "op": "grad", "site": site, "layer": "all", "scope": "k"},
                  {"id": f"atp_{name}", "op": "attribution",
                   "sum": ["position", "head_dim"] if name == "heads" else None},
                  {"id": f"save_{name}", "op": "save"}]
        edges += [{"src": "metric", "dst": f"g_{name}.metric"},
                  {"src": f"g_{name}", "dst": f"atp_{name}.grad"},
                  {"src": f"c_{name}", "dst": f"atp_{name}.clean"},
                  {"src": f"k_{name}", "dst": f"atp_{name}.corrupt"},
                  {"src": f"atp_{name}", "dst": f"save_{name}"}]
    return {"format": 1, "name": "t", "data": {"rows": ROWS}, "batch_size": 2,
            "graph": {"scopes": [{"id": "c", "kind": "trace", "input": {"column": "clean"}},
                                 {"id": "k", "kind": "trace", "input": {"column": "corrupt"}}],
                      "nodes": nodes, "edges": edges},
            "model": {"name": model, "path": f"builtin:{model}"}}


def reference_atp(model: str, row: dict):
    """Autograd on one pair: per layer, Σ_pos,dim (clean − corrupt)·grad over each head, and
    Σ_dim over the residual stream entering each layer (per position)."""
    hf, tok = reference_model(model)
    blocks_path, proj = PROJ[model]
    blocks = hf.get_submodule(blocks_path)

    def run(prompt, keep_grad):
        acts = {}

        def keep(key, x):
            if keep_grad:
                x.retain_grad()
            acts[key] = x
        hooks = [b.register_forward_pre_hook(lambda m, a, k=k: keep(("resid", k), a[0]))
                 for k, b in enumerate(blocks)]
        hooks += [b.get_submodule(proj).register_forward_pre_hook(
            lambda m, a, k=k: keep(("heads", k), a[0])) for k, b in enumerate(blocks)]
        logits = hf(tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1]
        for h in hooks:
            h.remove()
        return acts, logits[tok(" paris")["input_ids"][0]] - logits[tok(" rome")["input_ids"][0]]
    clean, _ = run(row["clean"], False)
    corrupt, metric = run(row["corrupt"], True)
    metric.backward()
    n = len(blocks)
    heads = torch.stack([((clean["heads", k] - corrupt["heads", k]) * corrupt["heads", k].grad)
                         [0].unflatten(-1, (N_HEADS, HEAD_DIM)).sum((0, -1)) for k in range(n)])
    resid = torch.stack([((clean["resid", k] - corrupt["resid", k]) * corrupt["resid", k].grad)
                         [0].sum(-1) for k in range(n)])
    return heads.detach(), resid.detach()                # (layer, head), (layer, position)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_attribution_equals_autograd(model):
    compiled = compile_program(atp_config(model))
    source = compiled.program.source
    assert source.count(".backward():") == 1 and source.count("with model.trace(") == 2
    got = execute(compiled, load_model(compiled.model))
    assert got["atp_heads"].shape == (2, 3, N_HEADS)      # (layer, example, head)
    assert got["atp_resid"].shape == (2, 3, 8)            # (layer, example, position)
    for i, row in enumerate(ROWS):
        heads, resid = reference_atp(model, row)
        assert (got["atp_heads"][:, i] - heads).abs().max() <= 1e-5
        assert (got["atp_resid"][:, i] - resid).abs().max() <= 1e-5
        assert resid.abs().max() > 1e-3


def test_correlation_is_pearson():
    from nnrun.nodes import REGISTRY

    namespace: dict = {"torch": torch}
    exec(REGISTRY.get("correlation").preamble, namespace)
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    want = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
    assert abs(namespace["pearson"](a, b) - want) < 1e-6
    a[0, 0] = float("nan")   # a padded cell is skipped, not propagated
    want = torch.corrcoef(torch.stack([a.flatten()[1:], b.flatten()[1:]]))[0, 1]
    assert abs(namespace["pearson"](a, b) - want) < 1e-6


def test_attribution_tracks_activation_patching_on_the_demo_model():
    """On IOI the AtP estimates correlate with activation patching (r > 0.95 over the layer ×
    head cells and over the residual stream's layer × position cells) and find the same head."""
    got = experiment_on_demo("attribution_patching", limit=16)
    assert got["heads_correlation"] > 0.95 and got["resid_correlation"] > 0.95
    atp, patching = got["heads_atp_normalized"], got["heads_patching_normalized"]
    assert atp.argmax() == patching.argmax()              # L0H2
