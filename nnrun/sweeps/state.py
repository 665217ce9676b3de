"""The state of every job of a sweep, read from the sweep directory alone.

Invariant: a job's state comes from its own directory: `COMPLETED` (the final manifest) or
`manifest.json`, and Hydra's `.hydra/overrides.yaml`; the plan written at launch
(`sweep_plan.json`) only adds the jobs that never started. A manifest that says `running` whose
process is gone (or whose heartbeat stopped) is reported `dead`, never `running`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnrun.sweeps.keys import job_overrides

PLAN_FILE = "sweep_plan.json"
# How each way of ending maps to the sweep's exit code (a failed job carries its own code).
STATUS_CODES = {"completed": 0, "running": 0, "pending": 0, "terminated": 143, "preempted": 140,
                "interrupted": 130, "dead": 137, "failed": 1}
UNFINISHED = ("failed", "terminated", "preempted", "interrupted", "dead")
_SKIP_DIRS = (".submitit", "aggregate", ".hydra")


@dataclass
class Job:
    """One job of a sweep as its directory shows it."""

    num: int | None
    overrides: list[str]
    run_dir: Path | None = None
    status: str = "pending"
    manifest: dict[str, Any] | None = None
    reason: str | None = None      # why a job is dead, or what failed
    params: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> dict[str, Any] | None:
        error = (self.manifest or {}).get("error")
        if error is None and self.reason:
            return {"type": self.status, "exit_code": self.exit_code, "message": self.reason,
                    "node": None}
        return error

    @property
    def exit_code(self) -> int:
        if self.status == "failed":
            return int(((self.manifest or {}).get("error") or {}).get("exit_code") or 1)
        return STATUS_CODES.get(self.status, 1)

    @property
    def duration_s(self) -> float | None:
        import datetime as dt

        m = self.manifest or {}
        try:
            start = dt.datetime.fromisoformat(m["started_at"])
            end = dt.datetime.fromisoformat(m["finished_at"])
        except (KeyError, TypeError, ValueError):
            return None
        return round((end - start).total_seconds(), 3)


def write_plan(sweep_dir: Path, jobs: list[list[str]], command: dict[str, Any]) -> None:
    """What the sweep will run (each job's overrides in launch order) and how it was asked for."""
    from nnrun.atomic import atomic_write_text

    plan = {"jobs": [{"num": i, "overrides": list(o)} for i, o in enumerate(jobs)],
            "command": command}
    atomic_write_text(sweep_dir / PLAN_FILE, json.dumps(plan, indent=1) + "\n")


def read_plan(sweep_dir: Path) -> dict[str, Any] | None:
    try:
        plan = json.loads((sweep_dir / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and isinstance(plan.get("jobs"), list) else None


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The job's manifest: `COMPLETED` when present (it is the final manifest, even if the
    process died before renaming it over `manifest.json`), else `manifest.json`."""
    for name in ("COMPLETED", "manifest.json"):
        try:
            data = json.loads((run_dir / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def job_dirs(sweep_dir: Path) -> dict[tuple[str, ...], Path]:
    """Every job directory of the sweep, by its (sorted) overrides."""
    import yaml

    found = {}
    for path in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if path.name in _SKIP_DIRS or path.name.startswith("."):
            continue
        try:
            overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            continue
        found[tuple(job_overrides([str(o) for o in overrides]))] = path
    return found


def read_jobs(sweep_dir: Path, final: bool = False) -> list[Job]:
    """Every job of the sweep with its state. `final`: the launcher has returned every job, so a
    job still `running` (or started without a manifest) is dead whatever its heartbeat says."""
    dirs = job_dirs(sweep_dir)
    plan = read_plan(sweep_dir)
    if plan is not None:
        jobs = [Job(j.get("num"), list(j["overrides"])) for j in plan["jobs"]]
    else:
        jobs = [Job(None, list(key)) for key in dirs]
    for job in jobs:
        job.run_dir = dirs.get(tuple(job_overrides(job.overrides)))
        _read_state(job, final)
    if plan is None:
        jobs.sort(key=lambda j: (j.num is None, j.num if j.num is not None else 0,
                                 str(j.run_dir)))
    return jobs


def _read_state(job: Job, final: bool) -> None:
    if job.run_dir is None:
        job.status = "pending"
        return
    job.manifest = read_manifest(job.run_dir)
    if job.manifest is None:
        job.status = "dead" if final else "running"
        job.reason = "the job started but wrote no manifest" if final else None
        return
    if job.num is None:
        job.num = (job.manifest.get("job") or {}).get("num")
    job.status = str(job.manifest.get("status") or "failed")
    if job.status == "running":
        why = "the launcher returned while its manifest said running" if final else None
        why = is_dead(job.manifest) or why
        if why:
            job.status, job.reason = "dead", why


def is_dead(manifest: dict[str, Any], now: float | None = None) -> str | None:
    """Why a manifest that says `running` belongs to a job that is no longer running (its
    process is gone from this host, or its heartbeat stopped), or None if it may be alive."""
    import datetime as dt
    import time

    from nnrun.provenance import host
    from nnrun.rundir import HEARTBEAT_S

    proc = manifest.get("process") or {}
    pid = proc.get("pid")
    if proc.get("host") == host() and isinstance(pid, int) and not _pid_alive(pid):
        return f"process {pid} is gone"
    beat = manifest.get("heartbeat_at") or manifest.get("started_at")
    if not beat:
        return None
    try:
        age = (now or time.time()) - dt.datetime.fromisoformat(beat).timestamp()
    except ValueError:
        return None
    interval = float(proc.get("heartbeat_s") or HEARTBEAT_S)
    if age > 3 * interval + 60:
        return f"no heartbeat for {age:.0f} s"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
