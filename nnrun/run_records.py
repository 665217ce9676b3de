"""What a run's manifest says about the experiment, the model and a failure, also for a run that
fails before it compiles (from the raw config: nothing compiled).

Invariant: every run that got as far as its run directory leaves a manifest saying what was
tried, and, when it failed, why (`error_record`, which the sweep summary reads from disk).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnrun.errors import NnrunError

if TYPE_CHECKING:
    from nnrun.pipeline import Compiled


def config_hash(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def experiment_record(compiled: Compiled, config: dict[str, Any], source: Path | None):
    return {"name": compiled.spec.name, "description": compiled.spec.description,
            "file": str(source) if source else None, "params": compiled.spec.params,
            "config_sha256": config_hash(config),
            "program_sha256": hashlib.sha256(compiled.program.source.encode()).hexdigest()}


@contextmanager
def failure_recorded(config: dict[str, Any], source: Path | None, run_dir: Path,
                      overrides: list[str]):
    """A run that fails before its directory is started still leaves a manifest saying what
    was tried and why it failed (from the raw config: nothing compiled)."""
    from nnrun.outputs import RunDir

    try:
        yield
    except NnrunError as err:
        failed = RunDir(run_dir)
        failed.start(_config_record(config, source), _model_record(config), "run", overrides)
        failed.finish(error_record(err))
        raise


def _config_record(config: dict[str, Any], source: Path | None) -> dict[str, Any]:
    """The experiment record of a run that failed before it compiled (from the raw config)."""
    return {"name": config.get("name"), "description": config.get("description"),
            "file": str(source) if source else None, "params": config.get("params"),
            "config_sha256": config_hash(config), "program_sha256": None}


def _model_record(config: dict[str, Any]) -> dict[str, Any]:
    from nnrun.models import name_from_path

    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    record = {key: model.get(key) for key in ("name", "path", "revision", "dtype", "device")}
    if not record["name"] and isinstance(record["path"], str):
        record["name"] = name_from_path(record["path"])
    return record


def error_record(err: BaseException) -> dict[str, Any]:
    if isinstance(err, NnrunError):
        return {"type": type(err).__name__, "exit_code": err.exit_code, "message": str(err),
                "node": next((i.node for i in err.issues if i.node), None)}
    return {"type": type(err).__name__, "exit_code": 130 if isinstance(err, KeyboardInterrupt)
            else 1, "message": str(err), "node": None}
