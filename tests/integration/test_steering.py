"""Steering (contrastive activation addition) equals transformers' greedy `generate` with a forward
hook adding coefficient × (mean positive − mean negative) (tiny GPT-2 and Llama), and on the demo
model coefficient 0 is exactly no steering while the pull towards the target grows with it."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from method_helpers import REPO, experiment_on_demo

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute
from nnrun.tiny import reference_model

ROWS = [  # every prompt 8 tokens: the rows batch without padding
    {"prompt": "the eiffel tower is in the city of", "positive": "the cat sat on the big red mat",
     "negative": "the dog ran on the small blue mat"},
    {"prompt": "the louvre tower was in the city of", "positive": "a cat sat on the big red mat",
     "negative": "a dog ran on the small blue mat"},
    {"prompt": "the kremlin tower is in the country of", "positive": "one cat sat on the red mat .",
     "negative": "one dog ran on the blue mat ."}]
LAYER, STEPS, COEFFICIENTS = 1, 3, [0.0, 1.5, 3.0]
BLOCKS = {"tiny-gpt2": "transformer.h", "tiny-llama": "model.layers"}


def steering_config(model: str) -> dict:
    scopes = [{"id": "pos", "kind": "trace", "input": {"column": "positive"}},
              {"id": "neg", "kind": "trace", "input": {"column": "negative"}},
              {"id": "gen", "kind": "generate", "max_new_tokens": STEPS},
              {"id": "inv", "kind": "invoke", "parent": "gen", "input": {"column": "prompt"},
               "foreach": {"coefficient": COEFFICIENTS}},
              {"id": "step", "kind": "step", "parent": "inv", "steps": STEPS}]
    nodes = [{"id": "p", "op": "read", "site": "layer_output", "layer": LAYER, "position": "last",
              "scope": "pos"},
             {"id": "n", "op": "read", "site": "layer_output", "layer": LAYER, "position": "last",
              "scope": "neg"},
             {"id": "mp", "op": "mean", "axis": "example"},
             {"id": "mn", "op": "mean", "axis": "example"},
             {"id": "vector", "op": "subtract"},
             {"id": "steer", "op": "write", "site": "layer_output", "layer": LAYER,
              "position": "all", "mode": "add", "coefficient": "{coefficient}", "scope": "step"},
             {"id": "logits", "op": "read", "site": "logits", "position": "last",
              "scope": "step"},
             {"id": "tokens", "op": "generated", "scope": "inv"},
             {"id": "texts", "op": "decode", "join": "step"},
             *[{"id": f"s{i}", "op": "save"} for i in range(1, 5)]]
    edges = [{"src": "p", "dst": "mp"}, {"src": "n", "dst": "mn"},
             {"src": "mp", "dst": "vector.a"}, {"src": "mn", "dst": "vector.b"},
             {"src": "vector", "dst": "steer.value"},
             {"src": "tokens", "dst": "texts"}, {"src": "logits", "dst": "s1"},
             {"src": "texts", "dst": "s2"}, {"src": "vector", "dst": "s3"},
             {"src": "tokens", "dst": "s4"}]
    return {"format": 1, "name": "t", "data": {"rows": ROWS}, "batch_size": 2,
            "graph": {"scopes": scopes, "nodes": nodes, "edges": edges},
            "model": {"name": model, "path": f"builtin:{model}"}}


@functools.lru_cache(maxsize=2)
def reference(model: str):
    return reference_model(model)


def reference_steering(model: str, coefficient: float, prompt: str):
    """HF greedy generation of one prompt with c × (mean positive − mean negative) added after
    block LAYER at every position: (per-step logits, generated ids)."""
    hf, tok = reference(model)
    block = hf.get_submodule(BLOCKS[model])[LAYER]

    def last_resid(texts):
        got = []
        h = block.register_forward_hook(lambda m, i, o: got.append(o[:, -1]))
        with torch.no_grad():
            hf(torch.tensor([tok(t)["input_ids"] for t in texts]))
        h.remove()
        return got[0].mean(0)
    vector = last_resid([r["positive"] for r in ROWS]) - last_resid([r["negative"] for r in ROWS])
    h = block.register_forward_hook(lambda m, i, o: o + coefficient * vector)
    with torch.no_grad():
        out = hf.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=STEPS,
                          min_new_tokens=STEPS, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    h.remove()
    return torch.cat(out.logits), out.sequences[0, -STEPS:], vector


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_steering_equals_hooked_generate(model):
    compiled = compile_program(steering_config(model))
    assert len(compiled.program.schedule.passes) == 2      # the vector is a dataset mean first
    got = execute(compiled, load_model(compiled.model))
    assert got["logits"].shape == (3, STEPS, 3, 67)        # (coefficient, step, example, vocab)
    worst = 0.0
    for c, coefficient in enumerate(COEFFICIENTS):
        for i, row in enumerate(ROWS):
            logits, ids, vector = reference_steering(model, coefficient, row["prompt"])
            worst = max(worst, (got["logits"][c, :, i] - logits).abs().max())
            assert torch.equal(got["tokens"][c, i], ids)                 # what it generated
    assert (got["vector"] - vector).abs().max() <= 1e-5
    assert worst <= 1e-5
    assert (got["logits"][0] - got["logits"][-1]).abs().max() > 1e-2   # steering changes it
    assert got["texts"][0][0] == reference(model)[1].decode(got["tokens"][0, 0].tolist())


def test_steering_on_the_demo_model():
    """Coefficient 0 = no steering (the same greedy tokens as plain generation); the first
    token's pull towards paris grows with the coefficient until paris is the usual answer."""
    got = experiment_on_demo("steering")
    diff = got["towards_vs_away"][:, 0].mean(-1)            # (coefficient,) at the first step
    prob = got["towards_prob"][:, 0].mean(-1)
    assert torch.all(diff[1:] > diff[:-1]) and diff[0] < 0 < 10 < diff[-1]
    assert prob[0] < 0.01 and prob[-1] > 0.5
    hf, tok = reference_model("demo")
    lines = (REPO / "experiments" / "data" / "steering_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines]
    with torch.no_grad():
        plain = hf.generate(torch.tensor([tok(p)["input_ids"] for p in prompts]),
                            max_new_tokens=4, min_new_tokens=4, do_sample=False,
                            pad_token_id=tok.pad_token_id)[:, -4:]
    assert got["texts"][0] == [tok.decode(ids) for ids in plain.tolist()]   # coefficient 0
