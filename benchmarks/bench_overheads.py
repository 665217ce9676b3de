"""What a run spends outside the experiment's own compute, and the settings that change it.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_overheads.py attention
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_overheads.py threads
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_overheads.py picture
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_overheads.py plots

attention: one forward pass, eager vs SDPA, same weights, on the demo model and on a model of
GPT-2 small's shape (built from `GPT2Config()`, random weights: nothing downloaded).
threads: the same forward passes with torch threads 1 vs 2, alternated, with each pass's size
(rows x tokens x hidden x layers, what `threads=auto` looks at) and the load average.
picture: the demo patching graph picture drawn from scratch vs copied from the picture cache,
PNG only vs PNG + SVG. plots: a patching heatmap and an attention grid saved as PNG vs SVG.
Whole-run figures come from run manifests (`timings_s`), see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _median_time(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _models(which: str, impls=("eager", "sdpa")):
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config
    from transformers.utils import logging

    from nnrun.models import demo_dir

    logging.disable_progress_bar()
    built = {}
    for impl in impls:
        if which == "demo":
            built[impl] = AutoModelForCausalLM.from_pretrained(demo_dir(),
                                                               attn_implementation=impl)
        else:
            torch.manual_seed(0)
            built[impl] = AutoModelForCausalLM.from_config(GPT2Config(), attn_implementation=impl)
    first = next(iter(built.values()))
    for model in built.values():
        model.load_state_dict(first.state_dict())
        model.eval()
    return built


SHAPES = {"demo": [(1, 12), (56, 14), (512, 14)], "gpt2-small": [(1, 12), (4, 128), (1, 1024)]}


def _batch(model, rows: int, tokens: int, padded: bool):
    import torch

    ids = torch.randint(0, model.config.vocab_size, (rows, tokens))
    mask = torch.ones_like(ids)
    if padded:  # left padding, as nnrun pads: the SDPA path then needs an explicit mask
        mask[: max(1, rows // 2), :3] = 0
    return ids, mask


def _forward(model, ids, mask):
    import torch

    def call():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    return call


def bench_attention(rounds: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    print(f"torch threads {threads}, load {os.getloadavg()[0]:.1f}")
    print("| model | rows x tokens | padded | eager ms | sdpa ms | eager / sdpa |")
    print("|---|---|---|---:|---:|---:|")
    for which, shapes in SHAPES.items():
        models = _models(which)
        for rows, tokens in shapes:
            for padded in (False, True):
                ids, mask = _batch(models["eager"], rows, tokens, padded)
                n = max(3, rounds if rows * tokens < 1000 else rounds // 3)
                best = {impl: [] for impl in models}
                for _ in range(2):  # alternate, keep the better median of each
                    for impl, model in models.items():
                        best[impl].append(_median_time(_forward(model, ids, mask), n))
                e, s = min(best["eager"]) * 1e3, min(best["sdpa"]) * 1e3
                print(f"| {which} | {rows} x {tokens} | {padded} | {e:.1f} | {s:.1f} | "
                      f"{e / s:.2f} |", flush=True)


def bench_threads(rounds: int) -> None:
    import torch

    print(f"load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    print("| model | rows x tokens | work | 1 thread ms | 2 threads ms | 1 / 2 |")
    print("|---|---|---:|---:|---:|---:|")
    for which, shapes in {"demo": SHAPES["demo"] + [(2184, 14)],
                          "gpt2-small": SHAPES["gpt2-small"][:2]}.items():
        model = _models(which, ("sdpa",))["sdpa"]
        cfg = model.config
        for rows, tokens in shapes:
            ids, mask = _batch(model, rows, tokens, True)
            n = max(3, rounds if rows * tokens < 1000 else rounds // 3)
            runs = {1: [], 2: []}
            for _ in range(2):
                for k in runs:
                    torch.set_num_threads(k)
                    runs[k].append(_median_time(_forward(model, ids, mask), n))
            one, two = min(runs[1]) * 1e3, min(runs[2]) * 1e3
            work = rows * tokens * cfg.n_embd * cfg.n_layer
            print(f"| {which} | {rows} x {tokens} | {work:,} | {one:.1f} | {two:.1f} | "
                  f"{one / two:.2f} |", flush=True)


def _patching_graph():
    import hydra  # noqa: F401  (composition below)
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from nnrun import cli
    from nnrun.pipeline import compile_program

    cli._register_resolvers()
    cli._register_experiments()
    with initialize_config_module("nnrun.configs", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=patching"])
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return compile_program(config, cli.experiment_source("patching"))


def bench_picture(rounds: int) -> None:
    from nnrun.plots import using_formats
    from nnrun.writer import draw

    compiled = _patching_graph()
    print(f"load {os.getloadavg()[0]:.1f}; demo patching graph "
          f"({len(compiled.graph.nodes)} nodes)")
    print("| formats | drawn (no cache) ms | copied from the cache ms |")
    print("|---|---:|---:|")
    for formats in (("png",), ("png", "svg")):
        with tempfile.TemporaryDirectory() as tmp, using_formats(formats):
            os.environ["NNRUN_CACHE"] = tmp
            stem = Path(tmp) / "run" / "graph"
            stem.parent.mkdir()

            def cold():
                for f in Path(tmp, "graphs").glob("*"):
                    f.unlink()
                draw(compiled.graph, stem, compiled.binding)
            drawn = _median_time(cold, rounds)
            copied = _median_time(lambda: draw(compiled.graph, stem, compiled.binding), rounds)
        print(f"| {' + '.join(formats)} | {drawn * 1e3:.0f} | {copied * 1e3:.1f} |", flush=True)


def bench_plots(rounds: int) -> None:
    import torch

    from nnrun.plots import attention_grid, heatmap, using_formats

    torch.manual_seed(0)
    cases = {
        "heatmap 4 x 14 (patching)": lambda stem: heatmap(
            torch.randn(4, 14), row_label="layer", col_label="position", row_ticks=None,
            col_ticks=[f"{i}: tok" for i in range(14)], title="t", colorbar_label="c",
            out_stem=stem),
        "attention grid 4 x 4 heads, 12 tokens": lambda stem: attention_grid(
            torch.rand(4, 4, 12, 12), row_ticks=[f"layer {i}" for i in range(4)],
            col_ticks=[f"head {i}" for i in range(4)], tokens=[f"t{i}" for i in range(12)],
            title="t", out_stem=stem),
    }
    print(f"load {os.getloadavg()[0]:.1f}")
    print("| figure | PNG only ms | PNG + SVG ms | SVG share |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, draw in cases.items():
            stem = Path(tmp) / "fig"
            times = {}
            for formats in (("png",), ("png", "svg")):
                with using_formats(formats):
                    times[formats] = _median_time(lambda d=draw: d(stem), rounds)
            png, both = times[("png",)], times[("png", "svg")]
            print(f"| {name} | {png * 1e3:.0f} | {both * 1e3:.0f} | "
                  f"{(both - png) / both:.0%} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["attention", "threads", "picture", "plots"])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="attention: torch threads")
    args = parser.parse_args()
    if args.what == "attention":
        bench_attention(args.rounds, args.threads)
    elif args.what == "threads":
        bench_threads(args.rounds)
    elif args.what == "picture":
        bench_picture(args.rounds)
    else:
        bench_plots(args.rounds)


if __name__ == "__main__":
    main()
