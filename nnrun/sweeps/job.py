"""What runs around every job: control keys, resume, the facts the manifest records about the job,
failure isolation in a multirun, and messages that reach the job's log as well as the terminal.

Invariant: in a multirun, whatever a job raises (an nnrun error, a bug, an unavailable device) is
contained to that job and recorded in its own `manifest.json` (status, exit code, message, node)
and in its log (`<run>/cli.log`); the job then fails towards the launcher (an exception Hydra
records as a failed job, which a submitit job re-raises), while Ctrl-C, SIGTERM and SIGUSR2 stop
the whole sweep. A job skipped by `resume` touches nothing in its directory.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("nnrun")
RESUME_MODES = {False: None, "false": None, True: "all", "true": "all", "failed": "failed"}
DEVICE_ENV = "NNRUN_LAUNCHER_DEVICE"  # set by a launcher that requested GPUs for the job


class JobFailed(Exception):
    """A sweep job ended with a non-zero exit code (already reported and recorded)."""

    def __init__(self, exit_code: int, run_dir: str = "") -> None:
        super().__init__(exit_code, run_dir)
        self.exit_code, self.run_dir = exit_code, run_dir

    def __str__(self) -> str:
        return f"nnrun job failed with exit code {self.exit_code} ({self.run_dir})"


def say(text: str, error: bool = False) -> None:
    """Print for the researcher and log for the job's log file (Hydra's `<run>/cli.log`)."""
    print(text, file=sys.stderr if error else sys.stdout, flush=True)
    (log.error if error else log.info)(text)


def run(cfg: DictConfig, job: Callable[[DictConfig], int]) -> int:
    """Run `job` (cli._job) for Hydra's task function, with everything a sweep needs around it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    resume = _pop_resume(cfg)
    _apply_launcher_device(cfg, list(hc.overrides.task))
    if multirun:
        _pin_model_revision(cfg, Path(str(hc.sweep.dir)))
    _record_facts(hc, multirun)
    digest = _config_hash(cfg)
    if multirun and resume:
        why = skip_reason(run_dir, resume, digest)
        if why:
            say(f"nnrun: skipped ({why}): {run_dir}")
            return 0
    try:
        code = job(cfg)
    except Exception as err:  # a bug or an unexpected failure: contained to this job
        if not multirun:
            raise
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        say(f"nnrun: internal error in this job (exit 1):\n{text}", error=True)
        record_failure(run_dir, {"type": type(err).__name__, "exit_code": 1,
                                 "message": f"{type(err).__name__}: {err}", "node": None,
                                 "traceback": text}, _raw_stage(cfg))
        code = 1
    if multirun:
        _stop_or_fail(code, run_dir, _raw_stage(cfg))
    return code


def _stop_or_fail(code: int, run_dir: Path, stage: str) -> None:
    """Ctrl-C and the signals stop the sweep; any other failure fails only this job."""
    from nnrun.rundir import Preempted, Terminated

    if code == 130:
        raise KeyboardInterrupt
    if code == Terminated.exit_code:
        raise Terminated("terminated by SIGTERM")
    if code == Preempted.exit_code:
        raise Preempted("preempted by SIGUSR2")
    if code == 0:
        record_success(run_dir, stage)
        return
    raise JobFailed(code, str(run_dir))


def record_failure(run_dir: Path, error: dict[str, Any], stage: str) -> None:
    """Give a job that failed before it wrote a manifest (a config error, a missing model, ...)
    one that says why, so the sweep summary (and the researcher) can read it from disk. A job
    that has its own manifest keeps it. Outside a sweep, only the writing stages do this."""
    from nnrun.outputs import JOB_FACTS
    from nnrun.rundir import WRITING_STAGES
    from nnrun.sweeps.state import is_dead, read_manifest

    if "job" not in JOB_FACTS and stage not in WRITING_STAGES:
        return
    if error.get("code") == "run_dir_locked":  # the directory is another live run's
        return
    current = read_manifest(run_dir)
    if current is not None and current.get("status") != "running":
        return
    owner = (current or {}).get("process") or {}
    if current is not None and owner.get("pid") != os.getpid() and not is_dead(current):
        return  # a running manifest of another process (found without holding the lock)
    _write_small_manifest(run_dir, stage, "failed", {k: error.get(k) for k in (
        "type", "exit_code", "message", "node")} | ({"traceback": error["traceback"]}
                                                    if error.get("traceback") else {}))


def record_success(run_dir: Path, stage: str) -> None:
    """Stages that write no run directory (validate, plan, modules, export) still leave a
    manifest in a sweep, so that the summary knows they completed."""
    from nnrun.rundir import WRITING_STAGES

    if stage in WRITING_STAGES and stage != "export":
        return
    _write_small_manifest(run_dir, stage, "completed", None)


def _write_small_manifest(run_dir: Path, stage: str, status: str,
                          error: dict[str, Any] | None) -> None:
    from nnrun.atomic import atomic_write_text
    from nnrun.outputs import JOB_FACTS, MANIFEST_VERSION, now
    from nnrun.rundir import manifest_text, process_facts

    manifest = {"manifest_version": MANIFEST_VERSION, "status": status, "stage": stage,
                "started_at": JOB_FACTS.get("job", {}).get("started_at") or now(),
                "finished_at": now(), "process": process_facts(),
                "experiment": {"config_sha256": JOB_FACTS.get("config_sha256")},
                **{k: v for k, v in JOB_FACTS.items() if k != "config_sha256"},
                "artifacts": [], "error": error}
    try:
        atomic_write_text(run_dir / "manifest.json", manifest_text(manifest))
    except OSError as err:  # the disk is full: the terminal and the log still say it
        log.error("could not record the job's end in %s: %s", run_dir, err)


def skip_reason(run_dir: Path, mode: str, config_hash: str | None) -> str | None:
    """Why `resume` skips this job, or None to run it. `all`: skip a job that completed with the
    same config; `failed`: run only jobs that failed, were stopped or died."""
    from nnrun.sweeps.state import UNFINISHED, Job, _read_state

    job = Job(None, [], run_dir=run_dir if run_dir.is_dir() else None)
    _read_state(job, final=False)
    recorded = ((job.manifest or {}).get("experiment") or {}).get("config_sha256")
    if job.status == "completed" and recorded == config_hash:
        return "completed with the same config"
    if mode == "failed" and job.status not in UNFINISHED:
        return f"resume=failed and the job is {job.status}"
    return None


def _pop_resume(cfg: DictConfig) -> str | None:
    """`resume` changes how the sweep runs, not what the job computes: it is removed from the
    config before anything hashes or records it."""
    if "resume" not in cfg:
        return None
    with open_dict(cfg):
        value = cfg.pop("resume")
    if value not in RESUME_MODES:
        from nnrun.errors import ConfigError, Issue

        raise ConfigError("the run settings have problems:", [Issue(
            "invalid_resume", f"resume must be true, false or failed, found `{value}`", "resume",
            hint="resume=true skips completed jobs; resume=failed reruns only failed jobs")])
    return RESUME_MODES[value]


def _apply_launcher_device(cfg: DictConfig, overrides: list[str]) -> None:
    """A launcher that asked for GPUs puts the model on one, unless the command line chose a
    device (configs/hydra/launcher/slurm.yaml)."""
    device = os.environ.get(DEVICE_ENV)
    if not device or any(o.lstrip("+").startswith("model.device=") for o in overrides):
        return
    if OmegaConf.select(cfg, "model.device") == "cpu":
        with open_dict(cfg):
            cfg.model.device = device


def _pin_model_revision(cfg: DictConfig, sweep_dir: Path) -> None:
    """Use the commit the launching machine resolved the model's revision to (models.lock.json),
    so one sweep never straddles two revisions of a hub model."""
    from nnrun.sweeps.pins import pinned

    path = OmegaConf.select(cfg, "model.path")
    if not isinstance(path, str):
        return
    commit = pinned(sweep_dir, path, OmegaConf.select(cfg, "model.revision"))
    if commit:
        with open_dict(cfg):
            cfg.model.revision = commit


def _record_facts(hc, multirun: bool) -> None:
    from nnrun.outputs import JOB_FACTS, now
    from nnrun.provenance import git_state

    JOB_FACTS.clear()
    source = _experiment_file(hc)
    JOB_FACTS["git"] = git_state(source)
    if multirun:
        JOB_FACTS["job"] = {"num": hc.job.num, "id": str(hc.job.id),
                            "sweep_dir": str(Path(str(hc.sweep.dir)).absolute()),
                            "launcher": _launcher_name(hc), "started_at": now()}


def _launcher_name(hc) -> str:
    try:
        return str(hc.launcher["_target_"]).rsplit(".", 1)[-1]
    except Exception:  # an unusual launcher config: the name is only informative
        return ""


def _experiment_file(hc) -> Path | None:
    from nnrun.cli import experiment_source

    return experiment_source(hc.runtime.choices.get("experiment"))


def _config_hash(cfg: DictConfig) -> str | None:
    from nnrun.outputs import JOB_FACTS
    from nnrun.run_records import config_hash

    try:
        value = config_hash(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    except Exception:  # unresolvable: the job reports it; it is never skipped
        value = None
    JOB_FACTS["config_sha256"] = value
    return value


def _raw_stage(cfg: DictConfig) -> str:
    try:
        return str(OmegaConf.select(cfg, "stage", default="run"))
    except Exception:  # an unresolvable interpolation: a run (the safe choice)
        return "run"
