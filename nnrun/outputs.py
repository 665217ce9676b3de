"""The run directory: resolved config, program, tensors, plots, graph picture, manifest, COMPLETED.

Invariants:
* One run per directory: `job_guard` holds an exclusive `flock` on `<run>/.nnrun.lock` for the
  whole job; a second run into the same directory fails at once with an OutputError.
* Before anything else, a job removes a previous run's `COMPLETED` (so a re-run that then fails,
  even in validation, is never mistaken for the old result) and the `.tmp-*` files a killed run
  left behind.
* Every file is written atomically; `manifest.json` says `running` before the model is touched and
  `failed`/`terminated` (with the error) when a job ends early, SIGTERM included.
* Completion is one step: the final manifest is written to a temporary file, hard-linked as
  `COMPLETED` (so `COMPLETED` *is* the final manifest and appears only after every artifact it
  lists), then renamed over `manifest.json`. `manifest.json` therefore never says `completed`
  without `COMPLETED`; if the process dies between the link and the rename, `COMPLETED` still
  holds the completed manifest and `nnrun verify` checks the directory against it.
* Secrets from the environment (HF_TOKEN, NDIF_API_KEY, ...) never reach the manifest, the
  config or any text written here (nnrun.redact).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnrun.atomic import atomic_write_text, sha256_file, write_tensors
from nnrun.provenance import rerun_command
from nnrun.redact import redact
from nnrun.rundir import (
    Heartbeat,
    Terminated,
    checkpoint,
    clear_completed,
    complete,
    end_status,
    inside,
    manifest_text,
    process_facts,
)

MANIFEST_VERSION = 1
# Facts about the job that the command line knows and the pipeline does not (the sweep it belongs
# to, the git state of the experiment file, how to run it again): cli sets them, start() records.
JOB_FACTS: dict[str, Any] = {}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("nnrun", "nnsight", "torch", "transformers", "hydra-core", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            from nnrun import __version__

            out[pkg] = __version__ if pkg == "nnrun" else "not installed"
    return out


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class RunDir:
    """One run's directory and its manifest, kept up to date on disk."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    _lock: Any = field(default_factory=threading.RLock, repr=False)

    def start(self, experiment: dict[str, Any], model: dict[str, Any], stage: str,
              overrides: list[str]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        clear_completed(self.path)  # a re-run is incomplete until it ends (job_guard did it too)
        started = now()
        self.manifest = {"manifest_version": MANIFEST_VERSION, "status": "running",
                         "stage": stage, "started_at": started, "finished_at": None,
                         "heartbeat_at": started, "process": process_facts(),
                         "experiment": experiment, "model": model, "overrides": overrides,
                         **JOB_FACTS, "versions": versions(), "timings_s": {},
                         "artifacts": [], "error": None}
        self.manifest["rerun"] = rerun_command(self.manifest, self.path)
        self.save_manifest()
        Heartbeat.start(self.beat)
        checkpoint("started")

    def save_manifest(self) -> None:
        with self._lock:
            atomic_write_text(self.path / "manifest.json", manifest_text(self.manifest))

    def beat(self) -> None:
        """Renew the heartbeat (from the heartbeat thread; skipped while the job itself writes
        the manifest, and once it has ended)."""
        if not self._lock.acquire(timeout=1):
            return
        try:
            if self.manifest.get("status") == "running":
                self.manifest["heartbeat_at"] = now()
                self.save_manifest()
        finally:
            self._lock.release()

    def write_text(self, name: str, text: str, kind: str, node: str | None = None) -> Path:
        path = inside(self.path, name)
        atomic_write_text(path, redact(text))
        self.record(path, kind, node)
        return path

    def record(self, path: Path, kind: str, node: str | None = None, **extra: Any) -> None:
        self.manifest["artifacts"].append({
            "path": str(path.relative_to(self.path)), "kind": kind, "node": node,
            "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra})

    def finish(self, error: dict[str, Any] | None = None) -> None:
        Heartbeat.stop_current()  # nothing rewrites the manifest after this
        status = end_status(error)
        if error and status in ("terminated", "preempted"):
            from nnrun.rundir import Preempted

            code = Preempted.exit_code if status == "preempted" else Terminated.exit_code
            error = {**error, "exit_code": code}
        with self._lock:
            self.manifest["status"] = status
            self.manifest["error"] = error
            self.manifest["finished_at"] = now()
            if error is not None:
                self.save_manifest()
                return
            complete(self.path, manifest_text(self.manifest))


@dataclass
class ArtifactContext:
    """What a sink node's `write_artifacts` may use: axes, tick labels, writers."""

    run: RunDir
    node_id: str
    source_id: str
    axes: tuple[str, ...]
    coords: dict[str, list[str]]
    metadata: dict[str, str]

    def ticks(self, axis: str | None) -> list[str] | None:
        return self.coords.get(axis) if axis else None

    def default_title(self) -> str:
        return f"{self.run.manifest['experiment']['name']}: {self.source_id}"

    def source_label(self) -> str:
        return self.source_id

    def plot_stem(self, name: str) -> Path:
        (self.run.path / "plots").mkdir(exist_ok=True)
        return inside(self.run.path / "plots", name)

    def as_matrix(self, value, keep: tuple[str, ...]):
        """Permute `value` to the `keep` axes; every other axis must have size 1."""
        import torch

        tensor = torch.as_tensor(value).detach().float().cpu()
        others = [i for i, a in enumerate(self.axes) if a not in keep]
        for i in others:
            if tensor.shape[i] != 1:
                from nnrun.errors import Issue, RunError

                raise RunError(f"cannot plot node `{self.node_id}`:", [Issue(
                    "plot_shape", f"axis `{self.axes[i]}` has size {tensor.shape[i]}; a plot over "
                    f"({', '.join(keep)}) needs every other axis to have size 1", "",
                    self.node_id, f"reduce it first, e.g. a `mean` node with axis: {self.axes[i]}")])
        order = [self.axes.index(a) for a in keep] + others
        return tensor.permute(*order).reshape([tensor.shape[self.axes.index(a)] for a in keep])

    def write_value(self, name: str, value, axes: tuple[str, ...] | None = None) -> Path:
        """Tensors → tensors/<name>.safetensors with metadata; token strings → .json."""
        axes = tuple(axes or self.axes)
        folder = self.run.path / "tensors"
        folder.mkdir(exist_ok=True)
        meta = {**self.metadata, "axes": ",".join(axes),
                "coords": json.dumps({a: self.coords.get(a) for a in axes if a in self.coords})}
        if isinstance(value, (list, str)):
            path = folder / f"{name}.json"
            atomic_write_text(path, json.dumps({"value": value, "metadata": meta}, indent=1))
            self.run.record(path, "strings", self.node_id)
            return path
        path = inside(folder, f"{name}.safetensors")
        write_tensors(path, {name: value}, redact(meta))
        self.run.record(path, "tensor", self.node_id, shape=list(value.shape),
                        dtype=str(value.dtype).replace("torch.", ""), axes=list(axes))
        return path

