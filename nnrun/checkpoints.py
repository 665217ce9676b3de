"""Finished chunks of a job's examples, kept on disk until the job completes, so that a job that
was killed, preempted and requeued, or resumed does not compute them again.

Invariant: a stored chunk holds exactly the values the program returned for it (tensors bit for
bit; other values as JSON, and only when JSON gives them back unchanged), is written atomically,
and is used again only by a job with the same config hash and program; the folder is removed when
the job completes, so a completed run directory holds only its results. A job of one chunk (or
NNRUN_CHUNK_CACHE=0) stores nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

FOLDER = ".chunks"
_KEY = "KEY"


class ChunkStore:
    """`<run>/.chunks/`: one `.safetensors` file per finished chunk of each pass."""

    def __init__(self, run_dir: Path, key: str) -> None:
        self.folder, self.key = run_dir / FOLDER, key
        self.reused = 0
        self.enabled = True

    @classmethod
    def open(cls, run_dir: Path, key: str, n_chunks: int) -> ChunkStore | None:
        """The store of this job (None: nothing worth storing); chunks of another config or
        program are discarded first."""
        if n_chunks < 2 or os.environ.get("NNRUN_CHUNK_CACHE", "1") == "0":
            shutil.rmtree(run_dir / FOLDER, ignore_errors=True)
            return None
        store = cls(run_dir, key)
        try:
            found = (store.folder / _KEY).read_text()
        except OSError:
            found = None
        if found != key:
            from nnrun.atomic import atomic_write_text

            shutil.rmtree(store.folder, ignore_errors=True)
            atomic_write_text(store.folder / _KEY, key)
        return store

    def _path(self, pass_no: int, start: int, stop: int) -> Path:
        return self.folder / f"pass{pass_no}_{start}_{stop}.safetensors"

    def get(self, pass_no: int, start: int, stop: int, device: Any) -> dict[str, Any] | None:
        """The values of a chunk stored by an earlier attempt of this job, on `device`."""
        from safetensors import safe_open

        path = self._path(pass_no, start, stop)
        if not path.is_file():
            return None
        try:
            with safe_open(path, "pt") as handle:
                values = {name: handle.get_tensor(name).to(device) for name in handle.keys()}
                values.update(json.loads((handle.metadata() or {}).get("values", "{}")))
        except (OSError, ValueError, RuntimeError):  # unreadable: compute it again
            return None
        self.reused += 1
        return values

    def put(self, pass_no: int, start: int, stop: int, values: dict[str, Any]) -> None:
        import torch

        from nnrun.atomic import write_tensors
        from nnrun.rundir import checkpoint

        if not self.enabled:
            return
        tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
        others = {k: v for k, v in values.items() if k not in tensors}
        try:
            text = json.dumps(others)
            exact = json.loads(text) == others
        except (TypeError, ValueError):
            exact = False
        if not exact:  # a value JSON would change: this job keeps no chunks
            self.enabled = False
            return
        write_tensors(self._path(pass_no, start, stop), tensors, {"values": text})
        checkpoint("chunk_stored")

    def finish(self, manifest: dict[str, Any]) -> None:
        """The job completed: record how many chunks came from earlier attempts, drop them."""
        manifest["chunks_reused"] = self.reused
        shutil.rmtree(self.folder, ignore_errors=True)
