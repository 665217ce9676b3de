"""Speed of nnrun's compiled patching program against plain-torch-hooks references, same run.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_patching.py [--rounds 15] [--model tiny-gpt2-4l]

Cases (round-robin, median ms; ratios are against the batched hooks reference):
* hooks_batched   one forward pass, every (layer, position) point as a batch row (best plain torch)
* hooks_loop      one forward pass per point (how notebook code usually does it)
* nnrun_program   the generated nnsight program (session: clean trace + one trace of N invokes)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute

CLEAN = "the eiffel tower is in the city of paris and the"
CORRUPT = "the colosseum tower is in the city of rome and the"


def config(model: str) -> dict:
    return {"format": 1, "name": "bench", "model": {"name": model, "path": f"builtin:{model}"},
            "graph": {
                "scopes": [{"id": "c", "kind": "trace", "input": CLEAN},
                           {"id": "p", "kind": "trace"},
                           {"id": "pt", "kind": "invoke", "parent": "p", "input": CORRUPT,
                            "foreach": {"layer": "all", "position": "all"}}],
                "nodes": [{"id": "clean", "op": "read", "site": "layer_output", "layer": "all",
                           "scope": "c"},
                          {"id": "patch", "op": "write", "site": "layer_output", "layer": "{layer}",
                           "position": "{position}", "mode": "patch", "scope": "pt"},
                          {"id": "logits", "op": "read", "site": "logits", "position": "last",
                           "scope": "pt"},
                          {"id": "out", "op": "save"}],
                "edges": [{"src": "clean", "dst": "patch.value"},
                          {"src": "logits", "dst": "out"}]}}


def hooks_cases(model):
    hf, tok = model._module, model.tokenizer
    blocks = hf.transformer.h
    clean = tok(CLEAN, return_tensors="pt")["input_ids"]
    corrupt = tok(CORRUPT, return_tensors="pt")["input_ids"]
    n_layers, n_tokens = len(blocks), corrupt.shape[1]
    points = [(layer, p) for layer in range(n_layers) for p in range(n_tokens)]

    def cache_clean():
        cache = {}
        hs = [b.register_forward_hook(lambda m, i, o, k=k: cache.__setitem__(k, o))
              for k, b in enumerate(blocks)]
        hf(clean)
        for h in hs:
            h.remove()
        return cache

    @torch.no_grad()
    def batched():
        cache = cache_clean()
        def patch(m, i, o, layer):
            o = o.clone()
            for row, (at, p) in enumerate(points):
                if at == layer:
                    o[row, p] = cache[layer][0, p]
            return o
        hs = [b.register_forward_hook(lambda m, i, o, k=k: patch(m, i, o, k))
              for k, b in enumerate(blocks)]
        out = hf(corrupt.repeat(len(points), 1)).logits[:, -1]
        for h in hs:
            h.remove()
        return out

    @torch.no_grad()
    def loop():
        cache = cache_clean()
        outs = []
        for layer, pos in points:
            def patch(m, i, o, layer=layer, pos=pos):
                o = o.clone()
                o[:, pos] = cache[layer][:, pos]
                return o
            h = blocks[layer].register_forward_hook(patch)
            outs.append(hf(corrupt).logits[:, -1])
            h.remove()
        return torch.cat(outs)

    return batched, loop, len(points)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--model", default="tiny-gpt2-4l")
    args = ap.parse_args()
    torch.set_num_threads(1)
    compiled = compile_program(config(args.model))
    model = load_model(compiled.model)
    batched, loop, n_points = hooks_cases(model)
    cases = {"hooks_batched": batched, "hooks_loop": loop,
             "nnrun_program": lambda: execute(compiled, model)["logits"]}
    ref = batched()
    got = cases["nnrun_program"]().reshape(ref.shape)
    print(f"max |nnrun - hooks| = {(got - ref).abs().max().item():.2e}")
    times = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    base = statistics.median(times["hooks_batched"])
    print(f"model {args.model}, {n_points} patch points, {args.rounds} rounds, 1 thread")
    print("| case | median ms | ratio to hooks_batched |")
    print("|---|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
