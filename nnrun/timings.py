"""Where a run's seconds go: named phases timed back to back, for the manifest's `timings_s`.

Invariant: phases do not overlap and leave no gap the run spends real time in, so the sum of
`timings_s` is the job's wall time from nnrun's `main` (or, in a sweep, from the end of the
previous job) to the manifest's last write; `startup` (interpreter and nnrun's own imports,
before `main`) is added for the first job of a process started as `nnrun` / `python -m nnrun`.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

_CLOCK: dict[str, float | None] = {"mark": None, "startup": None}


def main_started() -> None:
    """Called first thing in `nnrun.cli.main`: the end of `startup`, the start of `compose`."""
    now = time.perf_counter()
    if _CLOCK["mark"] is None and _started_as_nnrun():
        _CLOCK["startup"] = _process_age()
    _CLOCK["mark"] = now


def _started_as_nnrun() -> bool:
    """The process is the `nnrun` console script or `python -m nnrun` (not a test process that
    calls main, whose age says nothing about nnrun)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", "") or ""
    path = Path(main_file)
    return path.name == "nnrun" or (path.name == "__main__.py" and path.parent.name == "nnrun")


def _process_age() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class Phases:
    """The timings of one job: `with phases("execute"): ...`; a phase may be entered twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        if _CLOCK["startup"] is not None:  # only the process's first job paid it
            self.seconds["startup"] = _CLOCK["startup"]
            _CLOCK["startup"] = None
        if _CLOCK["mark"] is not None:  # Hydra composing this job's config, job setup
            self.seconds["compose"] = self.started - _CLOCK["mark"]

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        """For the manifest; also sets the mark the next job of a sweep counts `compose` from."""
        _CLOCK["mark"] = time.perf_counter()
        return {k: round(v, 4) for k, v in self.seconds.items()}
