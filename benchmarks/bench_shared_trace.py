"""Attention- and MLP-output patching at every layer as two foreach invokes of one trace (as in
experiments/head_patching.yaml): nnrun against the raw-forward floor and plain torch hooks, all
measured in one process on the same seeded model.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_shared_trace.py [--shapes tiny small gpt2]
                                                  [--positions 16] [--examples 1] [--rounds 5]

`--examples N` runs N copies of the prompt pair as the examples of one chunk (the compute of N
different pairs of the same length).

Cases (round-robin; median wall and CPU seconds; ratios of CPU time against `floor`):
* floor          one SDPA forward of the 2·L·N-row corrupt batch (full logits) + the clean pass
* hooks_batched  plain torch forward hooks patching the rows of that batch
* nnrun_plain    nnrun's program with `fast_paths: false` (one trace of 2·L invokes)
* nnrun_shared   the fast form as compiled before foreach invokes could leave a shared trace:
                 one trace of 2·L invokes, last-position logits only
* nnrun_fast     nnrun's program as compiled by default: each foreach invoke in a trace of its
                 own, folded into one invoke, or with prefix reuse where the cost rule
                 (nnrun.fastpath.prefix_pays) expects it to pay
* nnrun_fold     each foreach invoke in a trace of its own, folded (never prefix reuse)
* nnrun_prefix   each foreach invoke in a trace of its own, with prefix reuse (a trace per layer)

Every case's last-position logits are compared with hooks_batched (max |diff| in the table).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from bench_floor import SHAPES, build_model, prompts
from measure import cpu_table, print_each_shape, round_robin, sweep_arguments

SITES = ("attention", "mlp")


def config(path: Path, clean: list[str], corrupt: list[str], fast: bool) -> dict:
    """Patch the clean run's attention and MLP outputs into the corrupt run, each at every
    layer (all positions): two foreach invokes of the trace `sites`."""
    scopes = [{"id": "clean_run", "kind": "trace", "input": clean},
              {"id": "sites", "kind": "trace"}]
    nodes, edges = [], []
    for site in SITES:
        scopes.append({"id": f"{site}_point", "kind": "invoke", "parent": "sites",
                       "input": corrupt, "foreach": {"layer": "all"}})
        nodes += [{"id": f"clean_{site}", "op": "read", "site": f"{site}_output", "layer": "all",
                   "scope": "clean_run"},
                  {"id": f"{site}_patch", "op": "write", "site": f"{site}_output",
                   "layer": "{layer}", "mode": "patch", "scope": f"{site}_point"},
                  {"id": f"{site}_logits", "op": "read", "site": "logits", "position": "last",
                   "scope": f"{site}_point"}, {"id": f"save_{site}", "op": "save"}]
        edges += [{"src": f"clean_{site}", "dst": f"{site}_patch.value"},
                  {"src": f"{site}_logits", "dst": f"save_{site}"}]
    return {"format": 1, "name": "shared", "fast_paths": fast, "memory_budget": None,
            "graph": {"scopes": scopes, "nodes": nodes, "edges": edges},
            "model": {"name": "bench", "path": str(path)}}


@contextlib.contextmanager
def shared_traces_kept():
    """Compile as before foreach invokes could leave a shared trace (nnrun.fastpath.fast_traces
    without the split)."""
    from nnrun import fastpath, schedule

    def unsplit(traces, graph, emit, foldable, prefix=True):
        for trace in traces:
            fastpath.take_fast_paths(trace, graph, emit, foldable, prefix)
        return traces
    saved, schedule.fast_traces = schedule.fast_traces, unsplit
    try:
        yield
    finally:
        schedule.fast_traces = saved


@contextlib.contextmanager
def costs(trace: float, weight: float, invoke: float):
    """Compile with other costs in nnrun.fastpath's rules (to force one form)."""
    from nnrun import fastpath

    names = ("TRACE_COST_FLOPS", "WEIGHT_READ_FLOPS", "INVOKE_COST_FLOPS")
    saved = [getattr(fastpath, name) for name in names]
    for name, value in zip(names, (trace, weight, invoke)):
        setattr(fastpath, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved):
            setattr(fastpath, name, value)


def references(hf, floor_hf, tok, clean: list[str], corrupt: list[str]):
    """floor and hooks_batched, each returning (2·L·N, vocab) last-position logits: rows
    site-major, then layer, then example (attention at layers 0..L-1, then MLP)."""
    blocks = hf.transformer.h
    n_layers, n = len(blocks), len(clean)
    c_ids, x_ids = (tok(p, return_tensors="pt")["input_ids"] for p in (clean, corrupt))
    batch = x_ids.repeat(len(SITES) * n_layers, 1)              # (2·L·N, P)
    modules = {"attention": [b.attn for b in blocks], "mlp": [b.mlp for b in blocks]}

    def first(o):
        return o[0] if isinstance(o, tuple) else o

    @torch.no_grad()
    def floor():
        floor_hf(c_ids)
        return floor_hf(batch).logits[:, -1]                     # (2·L·N, vocab)

    @torch.no_grad()
    def hooks_batched():
        cache, hooks = {}, []
        for site, mods in modules.items():
            hooks += [m.register_forward_hook(
                lambda m, a, o, key=(site, k): cache.__setitem__(key, first(o).clone()))
                for k, m in enumerate(mods)]
        hf(c_ids)
        for h in hooks:
            h.remove()

        def patch(o, site, layer):
            x = first(o).clone()                                 # (2·L·N, P, d)
            at = (SITES.index(site) * n_layers + layer) * n
            x[at:at + n] = cache[site, layer]                    # (N, P, d)
            return (x, *o[1:]) if isinstance(o, tuple) else x
        hooks = [m.register_forward_hook(lambda m, a, o, key=(site, k): patch(o, *key))
                 for site, mods in modules.items() for k, m in enumerate(mods)]
        out = hf(batch).logits[:, -1]                            # (2·L·N, vocab)
        for h in hooks:
            h.remove()
        return out
    return {"floor": floor, "hooks_batched": hooks_batched}


def run_shape(shape: str, n_pos: int, rounds: int, folder: Path, examples: int) -> list[str]:
    from transformers import AutoModelForCausalLM

    from nnrun.models import load_model
    from nnrun.pipeline import compile_program
    from nnrun.run import execute

    path = build_model(shape, folder)
    clean, corrupt = ([p] * examples for p in prompts(n_pos))
    compiled = {"nnrun_plain": compile_program(config(path, clean, corrupt, False)),
                "nnrun_fast": compile_program(config(path, clean, corrupt, True))}
    with shared_traces_kept():
        compiled["nnrun_shared"] = compile_program(config(path, clean, corrupt, True))
    with costs(trace=float("inf"), weight=0.0, invoke=float("inf")):   # fold, own traces
        compiled["nnrun_fold"] = compile_program(config(path, clean, corrupt, True))
    with costs(trace=0.0, weight=0.0, invoke=float("inf")):            # prefix, own traces
        compiled["nnrun_prefix"] = compile_program(config(path, clean, corrupt, True))
    lm = load_model(compiled["nnrun_fast"].model)
    floor_hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    cases = references(lm._module, floor_hf, lm.tokenizer, clean, corrupt)

    def run(program):
        values = execute(program, lm)
        return torch.cat([values[f"{site}_logits"].flatten(0, 1) for site in SITES])  # (2·L·N, vocab)
    for name, program in compiled.items():
        cases[name] = lambda c=program: run(c)
    forms = {name: _form(c) for name, c in compiled.items()}
    title = (f"\n**{shape}** ({SHAPES[shape]['n_layer']} x {SHAPES[shape]['n_embd']}), "
             f"{n_pos} positions, {examples} example(s), {2 * SHAPES[shape]['n_layer']} points; "
             f"{rounds} rounds\n")
    return cpu_table(round_robin(cases, rounds), title, forms)


def _form(compiled) -> str:
    """The traces of the compiled sweep: invokes per trace and the fast paths taken."""
    parts = []
    for t in compiled.program.schedule.traces[1:]:
        how = "prefix" if t.prefix else "fold" if t.fold else f"{len(t.invokes)} invokes"
        parts.append(how)
    return " + ".join(parts)


def main() -> None:
    ap = sweep_arguments(SHAPES)
    ap.add_argument("--examples", type=int, default=1)
    args = ap.parse_args()
    print_each_shape(args, lambda shape, folder: run_shape(
        shape, args.positions, args.rounds, folder, args.examples))


if __name__ == "__main__":
    main()
