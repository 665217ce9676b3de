"""The end of a sweep: the table of every job, `sweep_summary.json` and `.csv`, the aggregated
tensors and plots, the command that resumes the sweep, and the exit code.

Invariant: built from the sweep directory alone (nnrun.sweeps.state), so the multirun's end on
the launching machine and `nnrun summarize SWEEP_DIR` later give the same files; the exit code is
the highest of the jobs' codes (0 only when no job failed or died).
"""

from __future__ import annotations

import csv
import io
import json
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnrun.sweeps.keys import Axis, split, swept_axes, value_label
from nnrun.sweeps.state import UNFINISHED, Job, read_jobs, read_plan

SUMMARY_JSON = "sweep_summary.json"
SUMMARY_CSV = "sweep_summary.csv"


@dataclass
class Summary:
    sweep_dir: Path
    jobs: list[Job]
    axes: list[Axis]
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resume: str | None = None

    @property
    def exit_code(self) -> int:
        return max((j.exit_code for j in self.jobs), default=0)

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.status in UNFINISHED]


def summarize(sweep_dir: Path, final: bool = False) -> Summary:
    """Read every job, write the summary files and the aggregates, and return the summary."""
    from nnrun.rundir import remove_stale_temporaries
    from nnrun.sweeps.aggregate import aggregate, metrics

    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir, final)
    axes = swept_axes([j.overrides for j in jobs])
    for job in jobs:
        values = dict(split(o) for o in job.overrides)
        job.params = {a.key: values[a.key] for a in axes if a.key in values}
        if job.status == "dead" and job.run_dir is not None and "process" in (job.reason or ""):
            remove_stale_temporaries(job.run_dir)  # its process is gone: nothing is in flight
    summary = Summary(sweep_dir, jobs, axes, resume=resume_command(sweep_dir))
    summary.metrics = {i: metrics(j) for i, j in enumerate(jobs) if j.status == "completed"}
    summary.files, summary.notes = aggregate(sweep_dir, jobs, axes)
    _write(summary)
    return summary


def resume_command(sweep_dir: Path) -> str | None:
    """The command that finishes this sweep: the same overrides, the same sweep directory, and
    `resume=true` (completed jobs with the same config are skipped)."""
    plan = read_plan(sweep_dir)
    if plan is None or not isinstance(plan.get("command"), dict):
        return None
    command = plan["command"]
    hydra = [o for o in command.get("hydra", [])
             if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    task = [o for o in command.get("task", []) if split(o)[0] != "resume"]
    args = ["nnrun", "-m", *hydra, *task, f"hydra.sweep.dir={sweep_dir.absolute()}",
            "resume=true"]
    return " ".join(shlex.quote(a) for a in args)


def job_record(summary: Summary, i: int, job: Job) -> dict[str, Any]:
    error = job.error
    return {"num": job.num, "status": job.status, "exit_code": job.exit_code,
            "overrides": job.overrides,
            "params": {a.label: value_label(job.params[a.key]) for a in summary.axes
                       if a.key in job.params},
            "error": None if error is None else {k: error.get(k) for k in
                                                 ("type", "exit_code", "message", "node")},
            "run_dir": str(job.run_dir) if job.run_dir else None,
            "log": str(job.run_dir / "cli.log") if job.run_dir else None,
            "duration_s": job.duration_s, "metrics": summary.metrics.get(i, {})}


def _write(summary: Summary) -> None:
    from nnrun.atomic import atomic_write_text

    records = [job_record(summary, i, j) for i, j in enumerate(summary.jobs)]
    counts = Counter(j.status for j in summary.jobs)
    data = {"sweep_dir": str(summary.sweep_dir.absolute()), "jobs_total": len(summary.jobs),
            "counts": dict(sorted(counts.items())), "failed": len(summary.failed),
            "exit_code": summary.exit_code,
            "swept": [{"key": a.key, "label": a.label, "values": a.values}
                      for a in summary.axes],
            "aggregates": [str(p.relative_to(summary.sweep_dir)) for p in summary.files],
            "notes": summary.notes, "resume": summary.resume, "jobs": records}
    atomic_write_text(summary.sweep_dir / SUMMARY_JSON, json.dumps(data, indent=2) + "\n")
    atomic_write_text(summary.sweep_dir / SUMMARY_CSV, _csv(summary, records))


def _csv(summary: Summary, records: list[dict[str, Any]]) -> str:
    metric_names = list(dict.fromkeys(k for r in records for k in r["metrics"]))
    labels = [a.label for a in summary.axes]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["num", "status", "exit_code", *labels, *metric_names, "error_type",
                     "error_node", "error_message", "duration_s", "run_dir"])
    for r in records:
        error = r["error"] or {}
        writer.writerow([r["num"], r["status"], r["exit_code"],
                         *(r["params"].get(label, "") for label in labels),
                         *(r["metrics"].get(m, "") for m in metric_names),
                         error.get("type") or "", error.get("node") or "",
                         (error.get("message") or "").strip().replace("\n", " | "),
                         r["duration_s"] if r["duration_s"] is not None else "",
                         r["run_dir"] or ""])
    return out.getvalue()


def table(summary: Summary) -> str:
    """What the researcher reads at the end of a sweep (printed on stderr)."""
    jobs = summary.jobs
    counts = Counter(j.status for j in jobs)
    lines = [f"nnrun: {len(jobs)} jobs, {len(summary.failed)} failed  ("
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"]
    metric_names = list(dict.fromkeys(k for m in summary.metrics.values() for k in m))[:3]
    head = f"  {'num':>4}  {'status':<11} {'exit':>4}  " + "  ".join(
        f"{a.label[:16]:<16}" for a in summary.axes)
    lines.append(head + "".join(f"  {m[:16]:>16}" for m in metric_names))
    for i, job in enumerate(jobs):
        row = f"  {job.num if job.num is not None else '-':>4}  {job.status:<11} " \
              f"{job.exit_code:>4}  " + "  ".join(
                  f"{value_label(job.params.get(a.key, ''))[:16]:<16}" for a in summary.axes)
        metrics = summary.metrics.get(i, {})
        row += "".join(f"  {metrics[m]:>16.4g}" if m in metrics else f"  {'':>16}"
                       for m in metric_names)
        if not summary.axes:
            row += " " + " ".join(job.overrides)
        lines.append(row.rstrip())
    if summary.failed:
        lines.append("failures:")
        for job in summary.failed:
            lines += _failure_lines(job)
    lines.append(f"summary: {summary.sweep_dir / SUMMARY_JSON} (and .csv)")
    plots = [p for p in summary.files if p.suffix == ".png"]
    if plots:
        lines.append("aggregated: " + ", ".join(str(p) for p in plots))
    lines += [f"note: {n}" for n in summary.notes]
    if summary.failed and summary.resume:
        lines.append(f"resume (reruns every job that did not complete): {summary.resume}")
    return "\n".join(lines)


def _failure_lines(job: Job) -> list[str]:
    error = job.error or {}
    first = (error.get("message") or job.status).strip().splitlines()
    node = f" (node {error['node']})" if error.get("node") else ""
    text = f"  #{job.num} {' '.join(job.overrides)}: exit {job.exit_code} " \
           f"{error.get('type') or job.status}{node}: {first[0] if first else ''}"
    detail = [f"      {line.strip()}" for line in first[1:3]]
    where = [f"      log: {job.run_dir / 'cli.log'}"] if job.run_dir else []
    return [text, *detail, *where]


USAGE = """usage: nnrun summarize SWEEP_DIR

Rebuild SWEEP_DIR/sweep_summary.json and .csv and the aggregated tensors and plots from the job
directories, and print the table of jobs (e.g. after SLURM jobs finished without the launching
process). Exit code: the highest of the jobs' (0: nothing failed or died; jobs still running or
pending count as 0), 2: usage, 22: not a sweep directory."""


def main(argv: list[str]) -> int:
    import sys

    if len(argv) != 1 or argv[0].startswith("-"):
        print(USAGE, file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    sweep_dir = Path(argv[0])
    markers = ("multirun.yaml", "sweep_plan.json")
    if not sweep_dir.is_dir() or not any((sweep_dir / m).exists() for m in markers):
        print(f"nnrun: {sweep_dir} is not a sweep directory (no multirun.yaml)", file=sys.stderr)
        return 22
    summary = summarize(sweep_dir)
    print(table(summary))
    return summary.exit_code
