"""Residual-stream patching sweep (every layer x position of one prompt pair): nnrun against the
raw-forward floor and hand-written references, all measured in one process on the same seeded model.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_floor.py [--shapes tiny small gpt2] [--positions 16]
                                                       [--sites layer_input attention_output
                                                        mlp_output heads]
                                                       [--rounds 3] [--out FILE.md]
                                                       [--cases floor hooks_batched nnrun_fast]
                                                       [--row-chunk 64] [--no-warmup]

Cases (round-robin; median wall and process CPU seconds; ratios against `floor`; `--cases`
picks some, `--row-chunk N` runs floor and hooks_batched N rows at a time so that large grids
fit in memory — the same compute):
* floor           one forward of the L*P-row corrupt batch + one clean forward, SDPA attention,
                  full logits: what any implementation that runs every point needs
* hooks_batched   plain torch forward-pre-hooks patching the rows of that batch
* nnsight_batched hand-written nnsight: one invoke of the L*P rows, one indexed write per layer
* nnsight_naive   one nnsight trace per point (how tutorials write it)
* nnrun_plain     nnrun's program with `fast_paths: false` (one invoke per point, one trace)
* nnrun_fast      nnrun's program as compiled by default (last-position logits, the points folded
                  into one invoke, prefix reuse where it saves more than a trace per layer costs)
* nnrun_fold      the fast form without prefix reuse: one trace, one invoke of all points' rows
* nnrun_prefix    the fast form with prefix reuse: a prefix run, then one trace per layer

`--memory` instead measures peak RSS of nnrun_plain and nnrun_fast, each in a fresh process
(`ru_maxrss`), against the process's RSS with the model loaded, for the layer x position grid
or (`--grid head_position`) every head x position of one layer.

Every case's last-position logits are compared with hooks_batched (max |diff| in the table).
Shapes: `tiny` the demo model's 4 layers x 128 (vocab 512), `small` 6 layers x 384 (vocab 8192), `gpt2` GPT-2 small's 12 x 768 (vocab 50257); random
weights from a fixed seed (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
from measure import round_robin

SHAPES = {"tiny": dict(n_layer=4, n_embd=128, n_head=4, vocab_size=512),   # the demo model's
          "small": dict(n_layer=6, n_embd=384, n_head=6, vocab_size=8192),
          "gpt2": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)}


def build_model(shape: str, folder: Path) -> Path:
    """A seeded GPT-2-architecture model of `shape`, saved with nnrun's tiny word tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from nnrun.tiny import build_tokenizer

    torch.manual_seed(0)
    config = GPT2Config(n_positions=256, bos_token_id=2, eos_token_id=2, pad_token_id=1,
                        **SHAPES[shape])
    out = folder / shape
    GPT2LMHeadModel(config).save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    return out


def prompts(n_tokens: int) -> tuple[str, str]:
    """A clean and a corrupt prompt of `n_tokens` words that differ in one word."""
    words = ("the eiffel tower is in the city of paris and the language is french " * 20).split()
    clean = words[:n_tokens]
    corrupt = list(clean)
    corrupt[1] = "colosseum"
    return " ".join(clean), " ".join(corrupt)


SITES = ("layer_input", "attention_output", "mlp_output", "heads")
CASES = ("floor", "hooks_batched", "nnsight_batched", "nnsight_naive", "nnrun_plain",
         "nnrun_fast", "nnrun_fold", "nnrun_prefix")


def nnrun_config(path: Path, clean: str, corrupt: str, fast: bool,
                 site: str = "layer_input") -> dict:
    """Patch the clean run's `site` into the corrupt run at every layer x position (`heads`:
    every layer x head, at all positions)."""
    heads = site == "heads"
    where = {"site": "attention_heads", "position": "all", "head": "{head}"} if heads else \
        {"site": site, "position": "{position}"}
    graph = {
        "scopes": [{"id": "clean_run", "kind": "trace", "input": clean},
                   {"id": "patched", "kind": "trace"},
                   {"id": "point", "kind": "invoke", "parent": "patched", "input": corrupt,
                    "foreach": {"layer": "all", "head" if heads else "position": "all"}}],
        "nodes": [{"id": "clean", "op": "read", "site": where["site"], "layer": "all",
                   "scope": "clean_run"},
                  {"id": "patch", "op": "write", "layer": "{layer}", "mode": "patch",
                   "scope": "point", **where},
                  {"id": "logits", "op": "read", "site": "logits", "position": "last",
                   "scope": "point"},
                  {"id": "out", "op": "save"}],
        "edges": [{"src": "clean", "dst": "patch.value"}, {"src": "logits", "dst": "out"}]}
    return {"format": 1, "name": "bench", "graph": graph, "fast_paths": fast,
            "model": {"name": "bench", "path": str(path)}, "memory_budget": None}


def head_grid_config(path: Path, clean: str, corrupt: str, fast: bool, layer: int) -> dict:
    """Patch every head x position at one layer: a grid whose outer loop is not `layer`."""
    config = nnrun_config(path, clean, corrupt, fast, "heads")
    graph = config["graph"]
    graph["scopes"][2]["foreach"] = {"head": "all", "position": "all"}
    graph["nodes"][1].update(layer=layer, position="{position}")
    return config


def site_hooks(block, site: str, n_heads: int):
    """Plain-hook access to `site` in one block: (module, is a forward-pre hook, get the
    tensor from the hook's args/output, put a tensor back)."""
    if site == "layer_input":
        return block, True, lambda a: a[0], lambda a, x: (x, *a[1:])
    if site == "heads":
        return block.attn.c_proj, True, lambda a: a[0], lambda a, x: (x, *a[1:])
    if site == "attention_output":
        return block.attn, False, lambda o: o[0], lambda o, x: (x, *o[1:])
    return block.mlp, False, lambda o: o, lambda o, x: x


def references(hf, floor_hf, tok, clean: str, corrupt: str, lm, site: str = "layer_input",
               row_chunk: int | None = None):
    """The reference cases as functions returning (points, vocab) last-position logits;
    `floor` and `hooks_batched` run the batch `row_chunk` rows at a time (None: all at once),
    the same compute in bounded memory."""
    blocks = hf.transformer.h
    n_heads = hf.config.n_head
    c_ids, x_ids = tok(clean, return_tensors="pt")["input_ids"], \
        tok(corrupt, return_tensors="pt")["input_ids"]
    n_layers, n_pos = len(blocks), x_ids.shape[1]
    per_layer = n_heads if site == "heads" else n_pos
    batch = x_ids.repeat(n_layers * per_layer, 1)    # (points, P) row = layer*per_layer + point
    at = torch.arange(per_layer)
    chunk = row_chunk or len(batch)
    access = [site_hooks(b, site, n_heads) for b in blocks]

    def hook(k, fn):
        module, pre, _, _ = access[k]
        return module.register_forward_pre_hook(fn) if pre else \
            module.register_forward_hook(lambda m, a, o: fn(m, o))

    def clean_inputs():
        cache = {}
        hooks = [hook(k, lambda m, io, k=k: cache.__setitem__(k, access[k][2](io).clone()))
                 for k in range(n_layers)]
        hf(c_ids)
        for h in hooks:
            h.remove()
        return cache

    @torch.no_grad()
    def floor():
        floor_hf(c_ids)
        if chunk == len(batch):
            return floor_hf(batch).logits[:, -1]                    # (points, vocab)
        # a copy of each chunk's last position, so that its full logits are freed
        return torch.cat([floor_hf(rows).logits[:, -1].clone()      # (chunk, vocab)
                          for rows in batch.split(chunk)])          # (points, vocab)

    @torch.no_grad()
    def hooks_batched():
        cache = clean_inputs()
        start = [0]   # the batch row the running chunk starts at

        def patch(io, layer):
            x = access[layer][2](io).clone()                        # (chunk, P, d)
            rows = layer * per_layer + at - start[0]                # (per_layer,) in the chunk
            inside = (rows >= 0) & (rows < len(x))
            rows, points = rows[inside], at[inside]                 # this layer's, this chunk's
            if site == "heads":                                     # row l*H + h: head h
                heads = x.unflatten(-1, (n_heads, -1))              # (chunk, P, H, dh)
                value = cache[layer][0].unflatten(-1, (n_heads, -1))  # (P, H, dh)
                heads[rows, :, points] = value[:, points].movedim(1, 0)
            else:
                x[rows, points] = cache[layer][0, points]
            return access[layer][3](io, x)
        hooks = [hook(k, lambda m, io, k=k: patch(io, k)) for k in range(n_layers)]
        outs = []
        for start[0] in range(0, len(batch), chunk):
            logits = hf(batch[start[0]:start[0] + chunk]).logits    # (chunk, P, vocab)
            outs.append(logits[:, -1].clone())                      # (chunk, vocab)
            del logits
        for h in hooks:
            h.remove()
        return torch.cat(outs)                                      # (points, vocab)

    @torch.no_grad()
    def nnsight_batched():
        with lm.session():
            with lm.trace(c_ids):
                cache = [lm.transformer.h[k].input.clone() for k in range(n_layers)]
            with lm.trace(batch):
                for k in range(n_layers):
                    lm.transformer.h[k].input[k * n_pos + at, at] = cache[k][0, at]
                out = lm.lm_head.output[:, -1].save()
        return out

    @torch.no_grad()
    def nnsight_naive():
        outs = []
        with lm.trace(c_ids):
            cache = list().save()   # nnsight 0.8: save the container, not its items
            for k in range(n_layers):
                cache.append(lm.transformer.h[k].input.clone())
        for k in range(n_layers):
            for p in range(n_pos):
                with lm.trace(x_ids):
                    lm.transformer.h[k].input[:, p] = cache[k][:, p]
                    outs.append(lm.lm_head.output[:, -1].save())
        return torch.cat(outs)

    if site != "layer_input":   # the hand-written nnsight references patch the residual
        return {"floor": floor, "hooks_batched": hooks_batched}
    return {"floor": floor, "hooks_batched": hooks_batched, "nnsight_batched": nnsight_batched,
            "nnsight_naive": nnsight_naive}


def run_shape(shape: str, n_pos: int, rounds: int, folder: Path, naive: bool,
              site: str = "layer_input", only: list[str] | None = None,
              row_chunk: int | None = None, warmup: bool = True) -> list[str]:
    """Time the cases (`only`: these; None: all) round-robin, wall and process CPU seconds."""
    from transformers import AutoModelForCausalLM

    from nnrun.models import load_model
    from nnrun.pipeline import compile_program
    from nnrun.run import execute

    def wanted(name: str) -> bool:
        return only is None or name in only

    path = build_model(shape, folder)
    clean, corrupt = prompts(n_pos)
    fast = compile_program(nnrun_config(path, clean, corrupt, True, site))
    compiled = {"nnrun_fast": fast}
    if wanted("nnrun_plain"):
        compiled["nnrun_plain"] = compile_program(nnrun_config(path, clean, corrupt, False, site))
    # the two fast forms, whichever the cost rule picks (fastpath.TRACE_COST_FLOPS)
    for name, cost in (("nnrun_fold", float("inf")), ("nnrun_prefix", 0.0)):
        if wanted(name):
            with _trace_cost(cost):
                compiled[name] = compile_program(nnrun_config(path, clean, corrupt, True, site))
    lm = load_model(fast.model)
    hf, tok = lm._module, lm.tokenizer
    floor_hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    cases = references(hf, floor_hf, tok, clean, corrupt, lm, site, row_chunk)
    if not naive:
        cases.pop("nnsight_naive", None)
    for name in ("nnrun_plain", "nnrun_fast", "nnrun_fold", "nnrun_prefix"):
        if name in compiled:
            cases[name] = lambda c=compiled[name]: execute(c, lm)["logits"].flatten(0, 2)
    cases = {name: fn for name, fn in cases.items() if wanted(name)}
    t = round_robin(cases, rounds, warmup=warmup) if "hooks_batched" in cases else \
        round_robin(cases, rounds, reference=next(iter(cases)), unchecked=tuple(cases),
                    warmup=warmup)
    base = statistics.median(t.wall["floor"]) if "floor" in t.wall else float("nan")
    cpu_base = t.median_cpu("floor") if "floor" in t.cpu else float("nan")
    attn = getattr(hf.config, "_attn_implementation", "?")
    prefix = any(t.prefix is not None for t in fast.program.schedule.traces)
    chunked = f"; floor and hooks_batched {row_chunk} rows at a time" if row_chunk else ""
    lines = [f"\n**{shape}** ({SHAPES[shape]['n_layer']} x {SHAPES[shape]['n_embd']}, vocab "
             f"{SHAPES[shape]['vocab_size']}), site `{site}`, {n_pos} positions = "
             f"{SHAPES[shape]['n_layer'] * (SHAPES[shape]['n_head'] if site == 'heads' else n_pos)}"
             f" points; nnrun's model attention: {attn}; {rounds} rounds"
             f"{'' if warmup else ' (no warm-up)'}{chunked}; nnrun_fast: prefix reuse "
             f"{'on' if prefix else 'off'}, {fast.max_points or 'all'} points per forward pass; "
             f"{torch.get_num_threads()} torch threads\n",
             "| case | median s | ratio to floor | median CPU s | CPU ratio to floor "
             "| max abs diff to hooks_batched |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, values in t.wall.items():
        med, med_cpu = statistics.median(values), t.median_cpu(name)
        diff = f"{t.error[name]:.1e}" if name in t.error else "—"
        lines.append(f"| {name} | {med:.3f} | {med / base:.2f} | {med_cpu:.3f} | "
                     f"{med_cpu / cpu_base:.2f} | {diff} |")
    return lines


@contextlib.contextmanager
def _trace_cost(flops: float):
    """Compile with another cost of a trace: inf never takes prefix reuse (the points fold
    into one invoke), 0 always does (a trace per layer: the weights it reads again are free
    too, see fastpath.prefix_pays)."""
    from nnrun import fastpath

    saved = fastpath.TRACE_COST_FLOPS, fastpath.WEIGHT_READ_FLOPS
    fastpath.TRACE_COST_FLOPS = flops
    fastpath.WEIGHT_READ_FLOPS = 0.0 if flops == 0 else saved[1]
    try:
        yield
    finally:
        fastpath.TRACE_COST_FLOPS, fastpath.WEIGHT_READ_FLOPS = saved


def memory_child(path: Path, n_pos: int, fast: bool, grid: str) -> None:
    """One peak-RSS measurement, in this (fresh) process: prints JSON."""
    import json
    import resource

    from nnrun.models import load_model
    from nnrun.pipeline import compile_program
    from nnrun.run import execute

    clean, corrupt = prompts(n_pos)
    config = nnrun_config(path, clean, corrupt, fast) if grid == "layer_position" else \
        head_grid_config(path, clean, corrupt, fast, layer=1)
    compiled = compile_program(config)
    lm = load_model(compiled.model)
    loaded = _rss_mb()
    t0 = time.perf_counter()
    execute(compiled, lm)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"loaded_mb": loaded, "peak_mb": peak, "seconds": seconds,
                      "max_points": compiled.max_points}))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_table(shape: str, n_pos: int, folder: Path, grid: str) -> list[str]:
    import json
    import subprocess
    import sys

    path = build_model(shape, folder)
    per_point = SHAPES[shape]["n_layer"] if grid == "layer_position" else SHAPES[shape]["n_head"]
    lines = [f"\n**peak RSS, {shape}, grid {grid}, {n_pos} positions = {per_point * n_pos} "
             "points** (fresh process per case)\n",
             "| case | RSS with model loaded (MB) | peak RSS (MB) | peak − loaded (MB) | s | "
             "points per forward pass |",
             "|---|---:|---:|---:|---:|---:|"]
    for fast in (False, True):
        out = subprocess.run([sys.executable, __file__, "--child", str(path), str(n_pos),
                              str(int(fast)), grid], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        name = "nnrun_fast" if fast else "nnrun_plain"
        lines.append(f"| {name} | {r['loaded_mb']:.0f} | {r['peak_mb']:.0f} | "
                     f"{r['peak_mb'] - r['loaded_mb']:.0f} | {r['seconds']:.1f} | "
                     f"{r['max_points'] or 'all'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["small", "gpt2"], choices=list(SHAPES))
    ap.add_argument("--positions", nargs="+", type=int, default=[16])
    ap.add_argument("--sites", nargs="+", default=["layer_input"], choices=SITES,
                    help="what the sweep patches (heads: every layer x head, all positions)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-naive", action="store_true", help="skip the one-trace-per-point case")
    ap.add_argument("--cases", nargs="+", choices=CASES,
                    help="time only these cases (default: all)")
    ap.add_argument("--row-chunk", type=int,
                    help="floor and hooks_batched: this many batch rows per forward pass "
                         "(default: all at once)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="no untimed first call of each case (for runs of minutes per case)")
    ap.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    ap.add_argument("--memory", action="store_true", help="peak RSS instead of speed")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--grid", default="layer_position", choices=["layer_position", "head_position"],
                    help="--memory: the grid swept (head_position: every head x position at "
                         "layer 1, an outer loop that is not `layer`)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        memory_child(Path(args.child[0]), int(args.child[1]), args.child[2] == "1",
                     args.child[3])
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads"]
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            for n_pos in args.positions:
                for site in args.sites:
                    table = memory_table(shape, n_pos, Path(tmp), args.grid) if args.memory else \
                        run_shape(shape, n_pos, args.rounds, Path(tmp), not args.no_naive, site,
                                  args.cases, args.row_chunk, not args.no_warmup)
                    print("\n".join(table), flush=True)
                    lines += table
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
