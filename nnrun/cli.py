"""The `nnrun` command: a Hydra app whose job runs one stage and reports errors compactly.

Invariant: a user mistake prints a located message (no traceback) and exits with the error class's
code; NNRUN_FULL_ERROR=1 re-raises instead. In a multirun, one failing job does not stop the others;
the process exits with the highest code seen and prints a table of the jobs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from nnrun.errors import ConfigError, Issue, NnrunError

_STATE: dict[str, Any] = {"exit": 0, "jobs": []}


def _register_experiments() -> None:
    """Make the packaged experiments and `./experiments/*.yaml` (or $NNRUN_EXPERIMENTS) selectable
    as `experiment=<name>`. Registered through Hydra's ConfigStore because the group directory is
    called `experiments/`, not `experiment/`, and so that editable and wheel installs behave alike.
    A packaged experiment wins over a user file of the same name (use `-cd DIR` to shadow it).
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    seen: set[str] = set()
    for path in _packaged_files() + _user_files():
        if path.stem in seen:
            continue
        seen.add(path.stem)
        node = OmegaConf.load(path)
        store.store(group="experiment", name=path.stem, node=node, package="_global_",
                    provider=str(path))


def _packaged_files() -> list[Path]:
    from importlib.resources import as_file, files

    folder = files("nnrun.configs.experiment")
    with as_file(folder) as real:
        return sorted(Path(real).glob("*.yaml"))


def _user_files() -> list[Path]:
    folder = Path(os.environ.get("NNRUN_EXPERIMENTS", "experiments"))
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.json"))


def experiment_source(name: str | None) -> Path | None:
    """The YAML file an experiment came from, for line numbers in errors."""
    if not name:
        return None
    return next((p for p in _packaged_files() + _user_files() if p.stem == name), None)


def _job(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    from nnrun.pipeline import STAGES, run_stage

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    source = experiment_source(hc.runtime.choices.get("experiment"))
    overrides = list(hc.overrides.task)
    try:
        config = _to_container(cfg, source)
        stage = config.get("stage", "run")
        if stage not in STAGES:
            raise ConfigError("unknown stage:", [Issue("unknown_stage", f"stage `{stage}`",
                                                       "stage", hint="one of " + ", ".join(STAGES))])
        print(run_stage(stage, config, run_dir, source, overrides), flush=True)
        return 0
    except NnrunError as err:
        if os.environ.get("NNRUN_FULL_ERROR") == "1":
            raise
        print(f"nnrun: {err}", file=sys.stderr, flush=True)
        if (run_dir / "manifest.json").exists():
            print(f"  (run directory, incomplete: {run_dir})", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("nnrun: interrupted", file=sys.stderr)
        return 130


def _to_container(cfg: DictConfig, source: Path | None) -> dict[str, Any]:
    from omegaconf.errors import OmegaConfBaseException

    from nnrun.load import locate

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", "") or "")
        issue = Issue("unresolved_interpolation", str(err).splitlines()[0], key,
                      hint="check the ${...} reference (e.g. ${params.x} needs params.x)")
        raw = OmegaConf.to_container(cfg, resolve=False)
        raise ConfigError("the config could not be resolved:",
                          [locate(issue, source, raw)]) from None


@hydra.main(version_base="1.3", config_path="pkg://nnrun.configs", config_name="config")
def _hydra_entry(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    code = _job(cfg)
    from hydra.types import RunMode

    hc = HydraConfig.get()
    _STATE["exit"] = max(_STATE["exit"], code)
    if hc.mode == RunMode.MULTIRUN:  # job.num and sweep.dir exist only in a multirun
        _STATE["sweep_dir"] = hc.sweep.dir
        _STATE["jobs"].append({"job": hc.job.num, "overrides": list(hc.overrides.task),
                               "exit_code": code, "run_dir": hc.runtime.output_dir})
    return code


def _sweep_summary() -> None:
    """Table of every job (status, exit code, overrides) on stderr and in sweep_summary.json."""
    import json

    from nnrun.atomic import atomic_write_text

    jobs = _STATE["jobs"]
    for job in jobs:
        manifest = Path(job["run_dir"]) / "manifest.json"
        job["status"] = json.loads(manifest.read_text())["status"] if manifest.exists() else (
            "ok" if job["exit_code"] == 0 else "failed")
    failed = sum(1 for j in jobs if j["exit_code"])
    print(f"nnrun: {len(jobs)} jobs, {failed} failed", file=sys.stderr)
    for j in jobs:
        print(f"  {j['job']:>4}  {j['status']:<10} exit {j['exit_code']:<4} "
              f"{' '.join(j['overrides'])}", file=sys.stderr)
    if _STATE.get("sweep_dir"):
        atomic_write_text(Path(_STATE["sweep_dir"]) / "sweep_summary.json",
                          json.dumps({"jobs": jobs, "failed": failed}, indent=2) + "\n")


def main() -> None:
    """Console-script entry point (`nnrun ...`, `python -m nnrun ...`)."""
    _register_experiments()
    _hydra_entry()
    if _STATE.get("sweep_dir"):
        _sweep_summary()
    sys.exit(_STATE["exit"])
