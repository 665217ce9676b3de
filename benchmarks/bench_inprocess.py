"""What an `nnrun` command costs once its imports are paid: the same command line run again and
again inside one process through `nnrun.cli.main` (Hydra composing, the job, the report), as the
test suite's in-process runs and a sweep's jobs pay it.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_inprocess.py [--runs 9] [ARGS ...]
(default ARGS: the two cases of RESULTS.md, `stage=validate` and `stage=plan` of
experiment=patching). To time another checkout: PYTHONPATH=DIR python benchmarks/....
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

CASES = [["experiment=patching", "stage=validate"], ["experiment=patching", "stage=plan"]]


def call(argv: list[str], run_dir: str) -> float:
    from nnrun import cli

    sys.argv = ["nnrun", *argv, f"hydra.run.dir={run_dir}"]
    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main()
        except SystemExit as done:
            if done.code:
                raise RuntimeError(f"nnrun {' '.join(argv)} exited {done.code}") from None
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="timed calls per case (median)")
    parser.add_argument("args", nargs="*", help="one command line (default: the two cases)")
    args = parser.parse_args()
    import nnrun

    print(f"nnrun from {os.path.dirname(nnrun.__file__)}; load average {os.getloadavg()[0]:.2f}")
    print("| command | first call s | median of later calls s | min–max s |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        for argv in [args.args] if args.args else CASES:
            first = call(argv, os.path.join(work, "first"))
            times = [call(argv, os.path.join(work, f"r{i}")) for i in range(args.runs)]
            print(f"| `{' '.join(argv)}` | {first:.2f} | {statistics.median(times):.3f} | "
                  f"{min(times):.3f}–{max(times):.3f} |")


if __name__ == "__main__":
    main()
