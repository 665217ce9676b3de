"""The backward phase: `grad` equals plain autograd (hooks + retain_grad, one prompt at a time),
per example, on tiny GPT-2 and tiny Llama; only the traces that need gradients keep them."""

from __future__ import annotations

import pytest
import torch

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute
from nnrun.tiny import reference_model

# Different lengths: the shorter prompt is left-padded in the batch.
PROMPTS = ["the eiffel tower is in the city of", "the tower is in the city of"]
BLOCKS = {"tiny-gpt2": ("transformer.h", "attn.c_proj"),
          "tiny-llama": ("model.layers", "self_attn.o_proj")}


def grad_config(model: str) -> dict:
    graph = {
        "scopes": [{"id": "t", "kind": "trace", "input": {"column": "prompt"}},
                   {"id": "other", "kind": "trace", "input": {"column": "prompt"}}],
        "nodes": [
            {"id": "logits", "op": "read", "site": "logits", "position": "last", "scope": "t"},
            {"id": "metric", "op": "logit_diff", "answer": " paris", "foil": " rome",
             "scope": "t"},
            {"id": "resid", "op": "grad", "site": "layer_output", "layer": "all",
             "position": "last", "scope": "t"},
            {"id": "heads", "op": "grad", "site": "attention_heads", "layer": 1,
             "position": "last", "scope": "t"},
            {"id": "plain", "op": "read", "site": "logits", "position": "last",
             "scope": "other"},
            *[{"id": f"s{i}", "op": "save"} for i in range(3)]],
        "edges": [{"src": "logits", "dst": "metric.logits"},
                  {"src": "metric", "dst": "resid.metric"},
                  {"src": "metric", "dst": "heads.metric"},
                  {"src": "resid", "dst": "s0"}, {"src": "heads", "dst": "s1"},
                  {"src": "plain", "dst": "s2"}]}
    return {"format": 1, "name": "t", "graph": graph,
            "data": {"rows": [{"prompt": p} for p in PROMPTS]},
            "model": {"name": model, "path": f"builtin:{model}"}}


def reference_grads(model: str, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd on one prompt: d(logit diff at the last position) / d(block outputs, heads)."""
    hf, tok = reference_model(model)
    blocks_path, proj = BLOCKS[model]
    blocks = hf.get_submodule(blocks_path)
    kept = {}

    def keep(key, tensor):
        tensor.retain_grad()
        kept[key] = tensor
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: keep(k, o)) for k, b in
             enumerate(blocks)]
    hooks.append(blocks[1].get_submodule(proj).register_forward_pre_hook(
        lambda m, args: keep("heads", args[0])))
    logits = hf(tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1]
    answer, foil = tok(" paris")["input_ids"][0], tok(" rome")["input_ids"][0]
    (logits[answer] - logits[foil]).backward()
    for h in hooks:
        h.remove()
    resid = torch.stack([kept[k].grad[0, -1] for k in range(len(blocks))])   # (layer, hidden)
    heads = kept["heads"].grad[0, -1].unflatten(-1, (4, 8))                 # (head, head_dim)
    return resid, heads


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def run(request):
    compiled = compile_program(grad_config(request.param))
    return request.param, compiled, execute(compiled, load_model(compiled.model))


def test_gradients_equal_autograd_per_example(run):
    model, compiled, got = run
    assert compiled.graph.axes["resid"] == ("layer", "example", "hidden")
    assert compiled.graph.axes["heads"] == ("example", "head", "head_dim")
    for row, prompt in enumerate(PROMPTS):
        resid, heads = reference_grads(model, prompt)
        assert (got["resid"][:, row] - resid).abs().max().item() <= 1e-5
        assert (got["heads"][row] - heads).abs().max().item() <= 1e-5
        assert resid.abs().max() > 0  # not a comparison of zeros


def test_only_the_trace_that_needs_gradients_keeps_them(run):
    _, compiled, got = run
    source = compiled.program.source
    assert source.count("with torch.enable_grad():") == 1
    assert source.index("torch.enable_grad") < source.index("# scope: t") < \
        source.index("# scope: other")
    assert "with metric.sum().backward():" in source
    assert got["plain"].requires_grad is False
    # Gradients are requested in reverse firing order: layer 1's before layer 0's.
    assert source.index("resid_1 = ") < source.index("resid_0 = ")
