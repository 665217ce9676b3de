"""Per-head activation patching equals plain torch hooks on the input of the attention output
projection (tiny GPT-2 and tiny Llama, denoising and noising, per head and per head × position),
and on the demo model the IOI task shows its name mover: one head at the final position."""

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
         "corrupt": "the kremlin tower was in the city of"}]


def head_config(model: str) -> dict:
    def patched(point_id, into, source, foreach, position="all"):
        return ([{"id": point_id, "kind": "trace"},
                 {"id": f"{point_id}_p", "kind": "invoke", "parent": point_id,
                  "input": {"column": into}, "foreach": foreach}],
                [{"id": f"{point_id}_w", "op": "write", "site": "attention_heads",
                  "layer": "{layer}", "head": "{head}", "position": position, "mode": "patch",
                  "scope": f"{point_id}_p"},
                 {"id": point_id + "_logits", "op": "read", "site": "logits",
                  "position": "last", "scope": f"{point_id}_p"}],
                [{"src": source, "dst": f"{point_id}_w.value"}])
    parts = [patched("denoise", "corrupt", "clean_heads", {"layer": "all", "head": "all"}),
             patched("noise", "clean", "corrupt_heads", {"layer": "all", "head": "all"}),
             patched("by_pos", "corrupt", "clean_heads",
                     {"layer": "all", "head": "all", "position": "all"}, "{position}")]
    scopes = [{"id": "c", "kind": "trace", "input": {"column": "clean"}},
              {"id": "k", "kind": "trace", "input": {"column": "corrupt"}}]
    nodes = [{"id": "clean_heads", "op": "read", "site": "attention_heads", "layer": "all",
              "scope": "c"},
             {"id": "corrupt_heads", "op": "read", "site": "attention_heads", "layer": "all",
              "scope": "k"}]
    edges = []
    for s, n, e in parts:
        scopes, nodes, edges = scopes + s, nodes + n, edges + e
    nodes += [{"id": f"save_{s[0]['id']}", "op": "save"} for s, _, _ in parts]
    edges += [{"src": f"{s[0]['id']}_logits", "dst": f"save_{s[0]['id']}"} for s, _, _ in parts]
    return {"format": 1, "name": "t", "data": {"rows": ROWS},
            "graph": {"scopes": scopes, "nodes": nodes, "edges": edges},
            "model": {"name": model, "path": f"builtin:{model}"}}


def reference(model: str):
    """Plain hooks: cache each layer's projection input per prompt, then one forward per patch."""
    hf, tok = reference_model(model)
    blocks_path, proj = PROJ[model]
    projections = [b.get_submodule(proj) for b in hf.get_submodule(blocks_path)]

    def heads_of(prompt):
        cache = {}
        hooks = [m.register_forward_pre_hook(lambda m, a, k=k: cache.__setitem__(k, a[0]))
                 for k, m in enumerate(projections)]
        with torch.no_grad():
            hf(tok(prompt, return_tensors="pt")["input_ids"])
        for h in hooks:
            h.remove()
        return {k: v.unflatten(-1, (N_HEADS, HEAD_DIM)) for k, v in cache.items()}

    def patched_logits(prompt, source, layer, head, pos=slice(None)):
        def hook(m, args):
            x = args[0].unflatten(-1, (N_HEADS, HEAD_DIM)).clone()
            x[:, pos, head] = source[layer][:, pos, head]
            return (x.flatten(-2),)
        h = projections[layer].register_forward_pre_hook(hook)
        with torch.no_grad():
            out = hf(tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1]
        h.remove()
        return out
    return heads_of, patched_logits, len(projections)


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def patched(request):
    compiled = compile_program(head_config(request.param))
    return request.param, execute(compiled, load_model(compiled.model))


def test_head_patching_equals_plain_hooks(patched):
    model, got = patched
    heads_of, patched_logits, n_layers = reference(model)
    assert got["denoise_logits"].shape == (n_layers, N_HEADS, 2, 67)   # (layer, head, ex, vocab)
    assert got["by_pos_logits"].shape == (n_layers, N_HEADS, 8, 2, 67)
    worst = 0.0
    for row in ROWS:
        i = ROWS.index(row)
        clean, corrupt = heads_of(row["clean"]), heads_of(row["corrupt"])
        for layer in range(n_layers):
            for head in range(N_HEADS):
                want = patched_logits(row["corrupt"], clean, layer, head)
                worst = max(worst, (got["denoise_logits"][layer, head, i] - want).abs().max())
                want = patched_logits(row["clean"], corrupt, layer, head)
                worst = max(worst, (got["noise_logits"][layer, head, i] - want).abs().max())
                for pos in (2, 7):
                    want = patched_logits(row["corrupt"], clean, layer, head, pos)
                    worst = max(worst, (got["by_pos_logits"][layer, head, pos, i] -
                                        want).abs().max())
    assert worst <= 1e-5
    # The patches change something: not a comparison of identical runs.
    assert (got["denoise_logits"] - got["denoise_logits"][:1, :1]).abs().max() > 1e-3


def test_patching_a_head_from_the_same_prompt_is_an_identity():
    """Clean head into the clean run: exactly the unpatched logits (torch.equal)."""
    config = head_config("tiny-gpt2")
    config["data"] = {"rows": [{"clean": r["clean"], "corrupt": r["clean"]} for r in ROWS]}
    got = execute(compiled := compile_program(config), load_model(compiled.model))
    hf, tok = reference_model("tiny-gpt2")
    for i, row in enumerate(ROWS):
        with torch.no_grad():
            want = hf(tok(row["clean"], return_tensors="pt")["input_ids"]).logits[0, -1]
        assert torch.equal(got["denoise_logits"][:, :, i], want.expand(2, 4, -1))


def test_ioi_name_mover_head_on_the_demo_model():
    """One head at the final position carries IO − S: patching it alone restores the clean run
    (denoising) and destroys it (noising); every other head, and that head elsewhere, ~0."""
    got = experiment_on_demo("head_patching", limit=16)
    denoising, noising = got["denoising"], got["noising"]              # (layer, head)
    layer, head = divmod(int(denoising.argmax()), denoising.shape[1])
    assert denoising[layer, head] > 0.9 and noising[layer, head] > 0.9
    others = torch.ones_like(denoising, dtype=torch.bool)
    others[layer, head] = False
    assert denoising[others].abs().max() < 0.1 and noising[others].abs().max() < 0.1
    by_position = got["denoising_by_position"][layer, head]            # positions S2, END
    assert by_position[-1] > 0.9 and by_position[0].abs() < 0.05


SUBMODULE = {"tiny-gpt2": {"attention_output": "attn", "mlp_output": "mlp"},
             "tiny-llama": {"attention_output": "self_attn", "mlp_output": "mlp"}}


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("site", ["attention_output", "mlp_output"])
def test_attention_and_mlp_output_patching_equals_plain_hooks(model, site):
    """Each layer's whole attention (a tuple output: element 0) or MLP output, every position."""
    graph = {"scopes": [{"id": "c", "kind": "trace", "input": {"column": "clean"}},
                        {"id": "t", "kind": "trace"},
                        {"id": "p", "kind": "invoke", "parent": "t", "input": {"column": "corrupt"},
                         "foreach": {"layer": "all"}}],
             "nodes": [{"id": "clean", "op": "read", "site": site, "layer": "all", "scope": "c"},
                       {"id": "w", "op": "write", "site": site, "layer": "{layer}",
                        "mode": "patch", "scope": "p"},
                       {"id": "logits", "op": "read", "site": "logits", "position": "last",
                        "scope": "p"}, {"id": "s", "op": "save"}],
             "edges": [{"src": "clean", "dst": "w.value"}, {"src": "logits", "dst": "s"}]}
    compiled = compile_program({"format": 1, "name": "t", "data": {"rows": ROWS}, "graph": graph,
                                "model": {"name": model, "path": f"builtin:{model}"}})
    got = execute(compiled, load_model(compiled.model))["logits"]     # (layer, example, vocab)
    hf, tok = reference_model(model)
    blocks = hf.get_submodule(PROJ[model][0])
    modules = [b.get_submodule(SUBMODULE[model][site]) for b in blocks]

    def first(o):
        return o[0] if isinstance(o, tuple) else o
    for i, row in enumerate(ROWS):
        cache = {}
        hooks = [m.register_forward_hook(lambda m, a, o, k=k: cache.__setitem__(k, first(o)))
                 for k, m in enumerate(modules)]
        with torch.no_grad():
            hf(tok(row["clean"], return_tensors="pt")["input_ids"])
        for h in hooks:
            h.remove()
        for layer, module in enumerate(modules):
            h = module.register_forward_hook(
                lambda m, a, o, k=layer: (cache[k],) + o[1:] if isinstance(o, tuple) else cache[k])
            with torch.no_grad():
                want = hf(tok(row["corrupt"], return_tensors="pt")["input_ids"]).logits[0, -1]
            h.remove()
            assert (got[layer, i] - want).abs().max() <= 1e-5
    assert (got[0] - got[-1]).abs().max() > 1e-3
