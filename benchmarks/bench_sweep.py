"""Per-job overhead of a sweep: a 12-point layer × position sweep of `experiments/patch_layer.yaml`
on the demo model, with Hydra's basic (in-process) launcher, run as the real command.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_sweep.py [--examples 8] [--out DIR]

What it reports (from the job manifests, not from the process's memory):
* the model is loaded once: every job after the first reuses it (`model.reused_in_process`) and
  all jobs ran in one process (asserted, not timed);
* the first job (imports, model load) and the steady-state job (jobs 1-10): its wall time from
  one job's start to the next one's, split into compute (the program over the examples:
  `timings_s.execute`) and overhead (everything else: Hydra composing the next job, compile, the
  run directory, the graph picture, saving);
* the end of the sweep: summary, aggregated tensor and plot.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYERS, POSITIONS = "0,1,2,3", "2,-2,-1"


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8, help="data.limit of each job")
    parser.add_argument("--out", type=Path, default=None, help="sweep directory (default: tmp)")
    args = parser.parse_args()
    sweep = args.out or Path(tempfile.mkdtemp(prefix="bench_sweep_")) / "sweep"
    command = [sys.executable, "-m", "nnrun", "-m", "experiment=patch_layer",
               f"data.limit={args.examples}", f"params.layer={LAYERS}",
               f"params.position={POSITIONS}", f"hydra.sweep.dir={sweep}"]
    t0 = time.time()
    proc = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    total = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    jobs = [json.loads((Path(j["run_dir"]) / "COMPLETED").read_text()) for j in summary["jobs"]]
    assert len(jobs) == 12 and summary["counts"] == {"completed": 12}
    reused = [m["model"]["reused_in_process"] for m in jobs]
    assert reused == [False] + [True] * 11, f"the model was loaded more than once: {reused}"
    assert len({m["process"]["pid"] for m in jobs}) == 1

    starts = [stamp(m["job"]["started_at"]) for m in jobs]
    ends = [stamp(m["finished_at"]) for m in jobs]
    walls = [b - a for a, b in zip(starts, starts[1:])] + [ends[-1] - starts[-1]]
    compute = [m["timings_s"]["execute"] for m in jobs]
    overhead = [w - c for w, c in zip(walls, compute)]
    steady = slice(1, -1)  # after the first job, each followed by Hydra composing the next
    part = {k: statistics.mean(m["timings_s"][k] for m in jobs[steady])
            for k in ("compile", "load_model", "write")}
    setup = statistics.mean(stamp(m["started_at"]) - stamp(m["job"]["started_at"])
                              - m["timings_s"]["compile"] for m in jobs[steady])
    between = statistics.mean(b - a for a, b in zip(ends, starts[1:]))
    static = statistics.mean(stamp(m["finished_at"]) - stamp(m["started_at"])
                               - sum(m["timings_s"][k] for k in ("load_model", "execute", "write"))
                               for m in jobs[steady])
    print(f"command: {' '.join(command[1:])}")
    print(f"sweep: {sweep}  ({args.examples} examples per job, 12 jobs, basic launcher)")
    print(f"model loads: 1 (jobs 1-11 reused it: {all(reused[1:])}; one process)")
    print(f"total wall: {total:.1f} s   first job: {walls[0]:.2f} s "
          f"(compile incl. imports {jobs[0]['timings_s']['compile']:.2f} s, "
          f"load {jobs[0]['timings_s']['load_model']:.2f} s)")
    print(f"steady job (mean of jobs 1-10): wall {statistics.mean(walls[steady]):.3f} s = "
          f"compute {statistics.mean(compute[steady]):.3f} s + overhead "
          f"{statistics.mean(overhead[steady]):.3f} s (overhead min "
          f"{min(overhead[steady]):.3f}, max {max(overhead[steady]):.3f})")
    print(f"  overhead parts (mean): compile {part['compile']:.3f} s, model from cache "
          f"{part['load_model']:.4f} s, job setup (resolve, git, hash) {setup:.3f} s, "
          f"write {part['write']:.3f} s,\n  run directory (config, program, graph picture, "
          f"manifests) {static:.3f} s, Hydra composing the next job {between:.3f} s")
    print(f"end of sweep (summary, aggregate, plot, exit): {t0 + total - ends[-1]:.2f} s")


if __name__ == "__main__":
    main()
