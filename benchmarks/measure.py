"""Round-robin timing of benchmark cases in one process, and their markdown table: each case's
median wall and CPU seconds, its CPU time as a ratio to the floor, and its largest difference
from the reference's values. CPU time (`time.process_time`, with one torch thread) holds up
better than wall time when other work shares the machine."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Timings:
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    error: dict[str, float] = field(default_factory=dict)   # max |case - reference|

    def median_cpu(self, name: str) -> float:
        return statistics.median(self.cpu[name])


def round_robin(cases: dict[str, Callable[[], torch.Tensor]], rounds: int,
                reference: str = "hooks_batched", unchecked: tuple[str, ...] = ("floor",),
                warmup: bool = True) -> Timings:
    """Every case once to warm up (lazy imports, allocation; `warmup=False` skips it for cases
    that take minutes), then `rounds` rounds of every case in turn; each result is compared
    with the reference's (not the `unchecked` ones: the floor edits nothing, its values differ
    by design). Without the warm-up the reference's first timed result is the one compared
    with, so it must come before the cases checked against it."""
    want = cases[reference]() if warmup else None
    out = Timings({n: [] for n in cases}, {n: [] for n in cases})
    if warmup:
        for fn in cases.values():
            fn()
    for _ in range(rounds):
        for name, fn in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            got = fn()
            out.wall[name].append(time.perf_counter() - t0)
            out.cpu[name].append(time.process_time() - c0)
            if want is None and name == reference:
                want = got
            if name not in unchecked and want is not None and got is not want:
                out.error[name] = float((got.reshape(want.shape) - want).abs().max())
            del got   # a large case's output is not kept past its check
    return out


def cpu_table(t: Timings, title: str, forms: dict[str, str] | None = None,
              base: str = "floor") -> list[str]:
    """The markdown table of `round_robin`'s timings (a `form` column when `forms` is given)."""
    form = " form |" if forms is not None else ""
    lines = [title, f"| case |{form} median wall s | median CPU s | CPU ratio to {base} | "
                    "max abs diff |",
             "|---|" + ("---|" if forms is not None else "") + "---:|---:|---:|---:|"]
    for name in t.cpu:
        diff = f"{t.error[name]:.1e}" if name in t.error else "—"
        cell = f" {forms.get(name, '—')} |" if forms is not None else ""
        lines.append(f"| {name} |{cell} {statistics.median(t.wall[name]):.3f} | "
                     f"{t.median_cpu(name):.3f} | {t.median_cpu(name) / t.median_cpu(base):.2f} "
                     f"| {diff} |")
    return lines


def sweep_arguments(shapes: dict) -> argparse.ArgumentParser:
    """The options of every sweep benchmark: --shapes, --positions, --rounds, --threads."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["tiny", "small"], choices=list(shapes))
    ap.add_argument("--positions", type=int, default=16, help="prompt tokens")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    return ap


def print_each_shape(args, run_shape: Callable[[str, Path], list[str]]) -> None:
    """`run_shape(shape, folder)` for every shape asked for, with the models in a temporary
    folder and torch on `--threads` threads; each table printed as it is done."""
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            print("\n".join(run_shape(shape, Path(tmp))), flush=True)
