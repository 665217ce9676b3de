"""Attention patterns: the `attention_pattern` site equals transformers' own attention weights
and a softmax(QKᵀ) recomputed from the query/key projections (tiny GPT-2 and Llama), and on the
demo model the head that carries IOI attends from the final token to the repeated name."""

from __future__ import annotations

import pytest
import torch
from method_helpers import experiment_on_demo

from nnrun.errors import CompileError, GraphError
from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute
from nnrun.tiny import reference_model

PROMPTS = ["the eiffel tower is in the city of", "a red cat sat on the big mat"]


def config(model: str, nodes: list, prompts=PROMPTS) -> dict:
    return {"format": 1, "name": "t", "data": {"rows": [{"p": p} for p in prompts]},
            "graph": {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "p"}}],
                      "nodes": nodes + [{"id": f"s_{n['id']}", "op": "save"} for n in nodes],
                      "edges": [{"src": n["id"], "dst": f"s_{n['id']}"} for n in nodes]},
            "model": {"name": model, "path": f"builtin:{model}"}}


def run(cfg: dict) -> dict:
    compiled = compile_program(cfg)
    return execute(compiled, load_model(compiled.model))


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_patterns_equal_transformers_attention_weights(model):
    got = run(config(model, [
        {"id": "every", "op": "read", "site": "attention_pattern", "layer": "all", "scope": "t"},
        {"id": "one", "op": "read", "site": "attention_pattern", "layer": 1, "head": 2,
         "position": "last", "scope": "t"}]))
    hf, tok = reference_model(model, "eager")  # nnrun loads eager for attention_pattern too
    ids = torch.tensor([tok(p)["input_ids"] for p in PROMPTS])
    with torch.no_grad():
        want = torch.stack(hf(ids, output_attentions=True).attentions)   # (layer, ex, head, q, k)
    assert torch.equal(got["every"], want.transpose(2, 3))   # (layer, example, position, head, key)
    assert torch.equal(got["one"], want[1, :, 2, -1])
    assert torch.allclose(got["every"].sum(-1), torch.ones(()))          # each query: sums to 1


def test_gpt2_patterns_equal_softmax_of_queries_and_keys():
    """An independent recomputation: softmax(q kᵀ / √d + causal mask) from c_attn's output."""
    got = run(config("tiny-gpt2", [{"id": "p", "op": "read", "site": "attention_pattern",
                                    "layer": "all", "scope": "t"}]))["p"]
    hf, tok = reference_model("tiny-gpt2")
    qkv = {}
    hooks = [b.attn.c_attn.register_forward_hook(lambda m, i, o, k=k: qkv.__setitem__(k, o))
             for k, b in enumerate(hf.transformer.h)]
    with torch.no_grad():
        hf(torch.tensor([tok(p)["input_ids"] for p in PROMPTS]))
    for h in hooks:
        h.remove()
    n = got.shape[2]
    causal = torch.full((n, n), float("-inf")).triu(1)
    for layer, out in qkv.items():
        q, k, _ = (x.unflatten(-1, (4, 8)).transpose(1, 2) for x in out.split(32, dim=-1))
        want = (q @ k.transpose(-1, -2) / 8 ** 0.5 + causal).softmax(-1)   # (ex, head, q, k)
        assert (got[layer] - want.transpose(1, 2)).abs().max() <= 1e-6


def test_patterns_cannot_be_written_or_read_over_prompts_of_different_lengths():
    cfg = config("tiny-gpt2", [])
    cfg["graph"]["nodes"] = [{"id": "w", "op": "write", "site": "attention_pattern", "layer": 0,
                              "constant": 0.0, "scope": "t"}]
    with pytest.raises(GraphError) as err:
        compile_program(cfg)
    assert [i.code for i in err.value.issues] == ["read_only_site"]
    with pytest.raises(CompileError) as err:
        compile_program(config("tiny-gpt2", [{"id": "p", "op": "read", "site":
                                              "attention_pattern", "layer": 0, "scope": "t"}],
                               ["the cat sat", "a dog ran on the mat"]))
    assert [i.code for i in err.value.issues] == ["ragged_keys"]


def test_ioi_head_attends_from_the_end_to_the_repeated_name_on_the_demo_model():
    """L0H2, the head that carries IO − S (head patching), reads S2 from the final token."""
    got = experiment_on_demo("attention", limit=32)
    patterns = got["patterns"]                          # (layer, example, position, head, key)
    end_to_s2 = patterns[0, :, -1, 2, 9]                # every row: S2 is token 9
    assert end_to_s2.mean() > 0.9
    assert patterns[0, :, -1, 2, :9].sum(-1).mean() < 0.05   # hardly any weight on the names
    assert torch.allclose(patterns.sum(-1), torch.ones(()), atol=1e-5)
    causal = torch.ones(14, 14).triu(1).bool()
    assert patterns.transpose(2, 3)[..., causal].abs().max() == 0      # no look-ahead


def test_plan_scans_attention_patterns():
    """stage=plan loads the lazy model with eager attention too, so the weights exist."""
    from nnrun.plan import plan_report

    report = plan_report(compile_program(config("tiny-llama", [
        {"id": "p", "op": "read", "site": "attention_pattern", "layer": "all", "scope": "t"}])))
    assert "(layer, example, position, head, key) = (2, 2, 8, 4, 8)" in report
