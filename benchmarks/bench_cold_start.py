"""How fast the command line answers: `nnrun --help` (with the packaged experiments, and with 16
extra large experiment files), `stage=validate experiment=patching` with the model-facts cache
cold and warm, and a tab-completion query. Each case runs as a fresh process, N times; the median
is reported as a markdown table (wall time, and the process's CPU time, which other processes on
a shared machine do not stretch).

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_cold_start.py [--runs 5] [--pythonpath DIR]
     [--only CASE ...] [--once CASE ...]   (cases: help help_large cold warm complete)

`--pythonpath DIR` puts DIR first on the children's PYTHONPATH, to time another checkout of the
same repository (e.g. `git worktree add --detach /tmp/before COMMIT`); configs and experiments
still come from this one. Cold cache: every run gets an empty $NNRUN_CACHE, so the demo model's
structure is probed (torch, transformers) and cached; warm: the cache is filled once first.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
N_LARGE, LARGE_BYTES = 16, 90_000
CASES = ("help", "help_large", "cold", "warm", "complete")
TIMEOUT = 600  # seconds one command may take


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case (median reported)")
    parser.add_argument("--pythonpath", type=Path, default=None,
                        help="time the nnrun found in this directory instead")
    parser.add_argument("--only", nargs="+", choices=CASES, help="run these cases only")
    parser.add_argument("--once", nargs="+", choices=CASES, default=[],
                        help="run these cases once (an old version's help with large files "
                             "takes minutes)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = base_env(work, args.pythonpath)
        large = {**env, "NNRUN_EXPERIMENTS": str(large_experiments(work / "large"))}
        cases = {
            "help": ("`nnrun --help`", ["--help"], env, {}),
            "help_large": (f"`nnrun --help`, {N_LARGE} extra ~{LARGE_BYTES // 1000} KB "
                           "experiments", ["--help"], large, {}),
            "cold": ("`stage=validate experiment=patching`, cold model-facts cache", VALIDATE,
                     env, {"fresh_cache": True}),
            "warm": ("`stage=validate experiment=patching`, warm model-facts cache", VALIDATE,
                     env, {"warm": True}),
            "complete": ("completion query `COMP_LINE='nnrun experiment='`",
                         ["-sc", "query=bash"], {**env, "COMP_LINE": "nnrun experiment="}, {}),
        }
        rows = []
        for key in args.only or list(cases):
            name, argv, case_env, how = cases[key]
            runs = args.runs if key not in args.once else 1
            rows.append((name, time_case(argv, case_env, runs, work, **how)))
    print(f"load average (1 min) before: {load:.2f}, after: {os.getloadavg()[0]:.2f}\n")
    print("| case | runs | median wall s | min–max wall s | median CPU s |\n"
          "|---|---:|---:|---:|---:|")
    for name, times in rows:
        wall, cpu = [t for t, _ in times], [c for _, c in times]
        print(f"| {name} | {len(times)} | {seconds(statistics.median(wall))} | "
              f"{seconds(min(wall))}–{seconds(max(wall))} | {seconds(statistics.median(cpu))} |")


def seconds(value: float) -> str:
    return f"> {TIMEOUT}" if math.isinf(value) else "?" if math.isnan(value) else f"{value:.2f}"


VALIDATE = ["experiment=patching", "stage=validate"]


def base_env(work: Path, pythonpath: Path | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NNRUN_CACHE": str(work / "cache")}
    for name in ("NNRUN_EXPERIMENTS", "NNRUN_FULL_ERROR", "HYDRA_FULL_ERROR", "COMP_LINE"):
        env.pop(name, None)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return env


def large_experiments(folder: Path) -> Path:
    """16 valid experiments of ~90 KB each: patching.yaml with its dataset inlined as rows."""
    folder.mkdir(parents=True)
    text = (REPO / "experiments" / "patching.yaml").read_text()
    rows = (REPO / "experiments" / "data" / "facts_pairs.jsonl").read_text().splitlines()
    inline: list[str] = []
    for row in itertools.cycle(rows):  # the experiment's own text is ~3 KB of the total
        if sum(map(len, inline)) >= LARGE_BYTES - 3000:
            break
        inline.append(f"    - {row}")
    data = "data:\n  rows:\n" + "\n".join(inline) + "\n"
    head, _, tail = text.partition("data:\n  file:")
    tail = tail.partition("\n")[2]
    for i in range(N_LARGE):
        body = head + data + tail
        (folder / f"large_{i:02d}.yaml").write_text(body.replace("name: patching",
                                                                 f"name: large_{i:02d}"))
    return folder


def time_case(args: list[str], env: dict[str, str], runs: int, work: Path,
              fresh_cache: bool = False, warm: bool = False) -> list[tuple[float, float]]:
    if warm:
        run(args, env, work)  # fills the cache
    times = []
    for i in range(runs):
        case_env = {**env, "NNRUN_CACHE": str(work / f"cold{i}")} if fresh_cache else env
        times.append(run(args, case_env, work))
    return times


def run(args: list[str], env: dict[str, str], work: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one `nnrun ARGS` process. CPU time is the figure
    to compare on a shared machine: other processes stretch the wall time, not the CPU time."""
    extra = ["hydra.run.dir=" + str(work / "run")] if "stage=validate" in args else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "nnrun", *args, *extra], cwd=work,
                              env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:  # reported as "> TIMEOUT" (CPU time unknown)
        return math.inf, math.nan
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"nnrun {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


if __name__ == "__main__":
    main()
