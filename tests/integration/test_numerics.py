"""Every intervention nnrun compiles equals an independent plain-torch-hooks implementation.

The reference never touches nnrun or nnsight: it loads the same weights with transformers, registers
forward hooks, and runs one forward pass per patch point (fp32, eager attention).
"""

from __future__ import annotations

import pytest
import torch

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute
from nnrun.tiny import reference_model

CLEAN = "the eiffel tower is in the city of"
CORRUPT = "the colosseum tower is in the city of"
BLOCKS = {"tiny-gpt2": "transformer.h", "tiny-llama": "model.layers"}


def experiment(graph: dict, **params) -> dict:
    return {"format": 1, "name": "t", "params": params, "graph": graph}


def patching_config(model: str, site: str = "layer_output") -> dict:
    graph = {
        "scopes": [
            {"id": "clean_run", "kind": "trace", "input": CLEAN},
            {"id": "patched", "kind": "trace"},
            {"id": "point", "kind": "invoke", "parent": "patched", "input": CORRUPT,
             "foreach": {"layer": "all", "position": "all"}}],
        "nodes": [
            {"id": "clean_resid", "op": "read", "site": site, "layer": "all",
             "scope": "clean_run"},
            {"id": "patch", "op": "write", "site": site, "layer": "{layer}",
             "position": "{position}", "mode": "patch", "scope": "point"},
            {"id": "logits", "op": "read", "site": "logits", "position": "last", "scope": "point"},
            {"id": "effect", "op": "logit_diff", "answer": " paris", "foil": " rome"},
            {"id": "out", "op": "save"}],
        "edges": [{"src": "clean_resid", "dst": "patch.value"},
                  {"src": "logits", "dst": "effect.logits"}, {"src": "effect", "dst": "out"}]}
    return {**experiment(graph), "model": {"name": model, "path": f"builtin:{model}"}}


def hf_model(model: str):
    return reference_model(model)


def blocks(hf, model: str):
    return hf.get_submodule(BLOCKS[model])


def reference_patching(model: str, site: str = "layer_output") -> torch.Tensor:
    """Plain hooks: cache clean block outputs (or inputs), then one patched forward per
    (layer, position)."""
    hf, tok = hf_model(model)
    ids = lambda s: tok(s, return_tensors="pt")["input_ids"]  # noqa: E731
    a, f = tok(" paris")["input_ids"][0], tok(" rome")["input_ids"][0]
    cache = {}
    if site == "layer_input":
        hooks = [b.register_forward_pre_hook(
            lambda m, args, k=k: cache.__setitem__(k, args[0].detach().clone()))
            for k, b in enumerate(blocks(hf, model))]
    else:
        hooks = [b.register_forward_hook(lambda m, i, o, k=k: cache.__setitem__(k, o.detach()))
                 for k, b in enumerate(blocks(hf, model))]
    with torch.no_grad():
        hf(ids(CLEAN))
    for h in hooks:
        h.remove()
    n_layers, n_tokens = len(cache), ids(CORRUPT).shape[1]
    out = torch.zeros(n_layers, n_tokens, 1)
    for layer in range(n_layers):
        for pos in range(n_tokens):
            def patch(m, i, o, layer=layer, pos=pos):
                o = o.clone()
                o[:, pos] = cache[layer][:, pos]
                return o

            def patch_input(m, args, layer=layer, pos=pos):
                x = args[0].clone()
                x[:, pos] = cache[layer][:, pos]
                return (x,) + args[1:]
            block = blocks(hf, model)[layer]
            h = block.register_forward_pre_hook(patch_input) if site == "layer_input" else \
                block.register_forward_hook(patch)
            with torch.no_grad():
                logits = hf(ids(CORRUPT)).logits[:, -1]
            h.remove()
            out[layer, pos] = logits[:, a] - logits[:, f]
    return out


def run_nnrun(config: dict) -> dict:
    compiled = compile_program(config)
    return execute(compiled, load_model(compiled.model))


@pytest.mark.parametrize("site", ["layer_output", "layer_input"])
@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_patching_matches_plain_hooks(model, site):
    got = run_nnrun(patching_config(model, site))["effect"]
    want = reference_patching(model, site)
    assert got.shape == want.shape == (2, 8, 1)
    assert (got - want).abs().max().item() <= 1e-5
    assert want.std() > 0  # the comparison is not between two constants


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_read_equals_hooks_and_zero_write_is_identity_free(model):
    """Reads of every named site equal hook captures exactly (torch.equal)."""
    graph = {"scopes": [{"id": "t", "kind": "trace", "input": CLEAN}],
             "nodes": [{"id": "mlp", "op": "read", "site": "mlp_output", "layer": 1, "scope": "t"},
                       {"id": "attn", "op": "read", "site": "attention_output", "layer": 0,
                        "scope": "t"},
                       {"id": "resid_in", "op": "read", "site": "layer_input", "layer": 1,
                        "scope": "t"},
                       {"id": "logits", "op": "read", "site": "logits", "scope": "t"},
                       *[{"id": f"s{i}", "op": "save"} for i in range(4)]],
             "edges": [{"src": s, "dst": f"s{i}"} for i, s in
                       enumerate(["mlp", "attn", "resid_in", "logits"])]}
    got = run_nnrun({**experiment(graph), "model": {"name": model, "path": f"builtin:{model}"}})
    hf, tok = hf_model(model)
    cap = {}
    layers = blocks(hf, model)
    attn = layers[0].attn if model == "tiny-gpt2" else layers[0].self_attn
    hs = [layers[1].mlp.register_forward_hook(lambda m, i, o: cap.__setitem__("mlp", o)),
          attn.register_forward_hook(lambda m, i, o: cap.__setitem__("attn", o[0])),
          layers[1].register_forward_pre_hook(lambda m, a: cap.__setitem__("resid_in", a[0]))]
    with torch.no_grad():
        cap["logits"] = hf(tok(CLEAN, return_tensors="pt")["input_ids"]).logits
    for h in hs:
        h.remove()
    for key in cap:
        assert torch.equal(got[key], cap[key]), key


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_steering_add_and_zero_ablation_match_hooks(model):
    """`write mode=add` of a read vector and `replace constant=0` equal hook edits."""
    graph = {"scopes": [{"id": "src", "kind": "trace", "input": CLEAN},
                        {"id": "t", "kind": "trace", "input": CORRUPT}],
             "nodes": [{"id": "vec", "op": "read", "site": "layer_output", "layer": 0,
                        "position": "last", "scope": "src"},
                       {"id": "steer", "op": "write", "site": "layer_output", "layer": 0,
                        "position": "all", "mode": "add", "coefficient": 2.5, "scope": "t"},
                       {"id": "ablate", "op": "write", "site": "mlp_output", "layer": 1,
                        "position": 2, "constant": 0.0, "scope": "t"},
                       {"id": "logits", "op": "read", "site": "logits", "scope": "t"},
                       {"id": "out", "op": "save"}],
             "edges": [{"src": "vec", "dst": "steer.value"}, {"src": "logits", "dst": "out"}]}
    got = run_nnrun({**experiment(graph), "model": {"name": model, "path": f"builtin:{model}"}})
    hf, tok = hf_model(model)
    ids = lambda s: tok(s, return_tensors="pt")["input_ids"]  # noqa: E731
    layers = blocks(hf, model)
    cap = {}
    h = layers[0].register_forward_hook(lambda m, i, o: cap.__setitem__("v", o[:, -1].clone()))
    with torch.no_grad():
        hf(ids(CLEAN))
    h.remove()
    hs = [layers[0].register_forward_hook(lambda m, i, o: o + 2.5 * cap["v"]),
          layers[1].mlp.register_forward_hook(lambda m, i, o: _zero_pos(o, 2))]
    with torch.no_grad():
        want = hf(ids(CORRUPT)).logits
    for h in hs:
        h.remove()
    assert (got["logits"] - want).abs().max().item() <= 1e-5


def _zero_pos(o, pos):
    o = o.clone()
    o[:, pos] = 0
    return o


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_generation_step_logits_match_transformers_generate(model):
    """Per-step logits read in a `step` scope equal transformers' greedy `generate` logits."""
    graph = {"scopes": [{"id": "gen", "kind": "generate", "max_new_tokens": 3},
                        {"id": "inv", "kind": "invoke", "parent": "gen", "input": CLEAN},
                        {"id": "steps", "kind": "step", "parent": "inv", "steps": 3}],
             "nodes": [{"id": "logits", "op": "read", "site": "logits", "position": "last",
                        "scope": "steps"}, {"id": "out", "op": "save"}],
             "edges": [{"src": "logits", "dst": "out"}]}
    got = run_nnrun({**experiment(graph), "model": {"name": model, "path": f"builtin:{model}"}})
    hf, tok = hf_model(model)
    ids = tok(CLEAN, return_tensors="pt")
    with torch.no_grad():
        gen = hf.generate(**ids, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                          output_logits=True, return_dict_in_generate=True,
                          pad_token_id=tok.pad_token_id)
    want = torch.stack(gen.logits)  # (step, batch, vocab)
    assert got["logits"].shape == want.shape
    assert (got["logits"] - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_logit_lens_and_rank_match_hooks(model):
    graph = {"scopes": [{"id": "t", "kind": "trace", "input": CLEAN}],
             "nodes": [{"id": "lens", "op": "logit_lens", "scope": "t"},
                       {"id": "r", "op": "rank", "token": " paris"},
                       {"id": "s1", "op": "save"}, {"id": "s2", "op": "save"}],
             "edges": [{"src": "lens", "dst": "r.logits"}, {"src": "lens", "dst": "s1"},
                       {"src": "r", "dst": "s2"}]}
    got = run_nnrun({**experiment(graph), "model": {"name": model, "path": f"builtin:{model}"}})
    hf, tok = hf_model(model)
    norm = hf.transformer.ln_f if model == "tiny-gpt2" else hf.model.norm
    resid = {}
    hs = [b.register_forward_hook(lambda m, i, o, k=k: resid.__setitem__(k, o[:, -1]))
          for k, b in enumerate(blocks(hf, model))]
    with torch.no_grad():
        logits = hf(tok(CLEAN, return_tensors="pt")["input_ids"]).logits[:, -1]
        want = torch.stack([hf.lm_head(norm(resid[k])) for k in sorted(resid)])
    for h in hs:
        h.remove()
    assert (got["lens"] - want).abs().max().item() <= 1e-5
    assert (got["lens"][-1] - logits).abs().max().item() <= 1e-5  # last layer = real logits
    answer = tok(" paris")["input_ids"][0]
    want_rank = 1 + (want > want[..., answer:answer + 1]).sum(-1)
    assert torch.equal(got["r"], want_rank)


def _block_outputs(hf, model, ids) -> dict[int, torch.Tensor]:
    cache = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: cache.__setitem__(
        k, (o[0] if isinstance(o, tuple) else o).detach())) for k, b in enumerate(blocks(hf, model))]
    with torch.no_grad():
        hf(ids)
    for h in hooks:
        h.remove()
    return cache


def _greedy(hf, tok, prompt: str, steps: int) -> tuple[torch.Tensor, int]:
    ids = tok(prompt, return_tensors="pt")
    gen = hf.generate(**ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                      pad_token_id=tok.pad_token_id)
    return gen, ids["input_ids"].shape[1]


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_generation_foreach_and_steps_keep_their_axes(model):
    """A foreach over layers around a step scope: value[layer, step] is that layer's output at
    the token generated at that step (the values arrive step by step, not point by point)."""
    graph = {"scopes": [{"id": "gen", "kind": "generate", "max_new_tokens": 3},
                        {"id": "inv", "kind": "invoke", "parent": "gen", "input": CLEAN,
                         "foreach": {"layer": "all"}},
                        {"id": "steps", "kind": "step", "parent": "inv", "steps": 3}],
             "nodes": [{"id": "h", "op": "read", "site": "layer_output", "layer": "{layer}",
                        "position": "last", "scope": "steps"}, {"id": "out", "op": "save"}],
             "edges": [{"src": "h", "dst": "out"}]}
    got = run_nnrun({**experiment(graph), "model": {"name": model, "path": f"builtin:{model}"}})
    hf, tok = hf_model(model)
    gen, n = _greedy(hf, tok, CLEAN, 3)
    cache = _block_outputs(hf, model, gen)
    want = torch.stack([torch.stack([cache[k][:, n - 1 + s] for s in range(3)])
                        for k in sorted(cache)])  # (layer, step, example, hidden)
    assert got["h"].shape == want.shape
    assert (got["h"] - want).abs().max().item() <= 1e-5
    assert (want[0, 0] - want[1, 0]).abs().max() > 1e-3  # a scrambled order would show


def test_invoke_scope_node_in_a_generation_runs_once_at_the_first_step():
    """A read in the invoke's own scope (not the step's) reads the prompt once."""
    graph = {"scopes": [{"id": "gen", "kind": "generate", "max_new_tokens": 3},
                        {"id": "inv", "kind": "invoke", "parent": "gen", "input": CLEAN},
                        {"id": "steps", "kind": "step", "parent": "inv", "steps": 3}],
             "nodes": [{"id": "prompt_resid", "op": "read", "site": "layer_output", "layer": 0,
                        "scope": "inv"},
                       {"id": "logits", "op": "read", "site": "logits", "position": "last",
                        "scope": "steps"},
                       {"id": "s1", "op": "save"}, {"id": "s2", "op": "save"}],
             "edges": [{"src": "prompt_resid", "dst": "s1"}, {"src": "logits", "dst": "s2"}]}
    got = run_nnrun({**experiment(graph), "model": {"name": "m", "path": "builtin:tiny-gpt2"}})
    hf, tok = hf_model("tiny-gpt2")
    ids = tok(CLEAN, return_tensors="pt")["input_ids"]
    want = _block_outputs(hf, "tiny-gpt2", ids)[0]
    assert got["prompt_resid"].shape == want.shape
    assert (got["prompt_resid"] - want).abs().max().item() <= 1e-5
    gen = hf.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                      output_logits=True, return_dict_in_generate=True,
                      pad_token_id=tok.pad_token_id)
    assert (got["logits"] - torch.stack(gen.logits)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_write_in_a_layer_foreach_takes_each_layers_slice_of_a_computed_value(mode):
    """`mean` over positions of the clean residual (layer, example, hidden), written at every
    position of layer {layer}: each point writes its own layer's mean."""
    graph = {"scopes": [{"id": "c", "kind": "trace", "input": CLEAN},
                        {"id": "p", "kind": "trace"},
                        {"id": "pt", "kind": "invoke", "parent": "p", "input": CORRUPT,
                         "foreach": {"layer": "all"}}],
             "nodes": [{"id": "r", "op": "read", "site": "layer_output", "layer": "all",
                        "scope": "c"},
                       {"id": "m", "op": "mean", "axis": "position", "scope": "c"},
                       {"id": "w", "op": "write", "site": "layer_output", "layer": "{layer}",
                        "mode": mode, "coefficient": 0.5, "scope": "pt"},
                       {"id": "l", "op": "read", "site": "logits", "position": "last",
                        "scope": "pt"},
                       {"id": "o", "op": "save"}],
             "edges": [{"src": "r", "dst": "m"}, {"src": "m", "dst": "w.value"},
                       {"src": "l", "dst": "o"}]}
    got = run_nnrun({**experiment(graph), "model": {"name": "m", "path": "builtin:tiny-gpt2"}})
    hf, tok = hf_model("tiny-gpt2")
    ids = lambda s: tok(s, return_tensors="pt")["input_ids"]  # noqa: E731
    means = {k: v.mean(dim=1) for k, v in _block_outputs(hf, "tiny-gpt2", ids(CLEAN)).items()}
    want = []
    for layer, block in enumerate(blocks(hf, "tiny-gpt2")):
        def hook(m, i, o, layer=layer):
            x = o[0] if isinstance(o, tuple) else o
            new = means[layer].unsqueeze(1).expand_as(x) if mode == "replace" else \
                x + 0.5 * means[layer].unsqueeze(1)
            return (new,) + tuple(o[1:]) if isinstance(o, tuple) else new
        h = block.register_forward_hook(hook)
        with torch.no_grad():
            want.append(hf(ids(CORRUPT)).logits[:, -1])
        h.remove()
    want = torch.stack(want)
    assert got["l"].shape == want.shape
    assert (got["l"] - want).abs().max().item() <= 1e-5
    assert (want[0] - want[1]).abs().max() > 1e-3  # each layer got its own slice
