"""Facts that let two runs be compared: the model's weights fingerprint and resolved hub commit,
the git state of the experiment's repository, and the one line that re-runs a run directory.

Invariant: every fact is computed from what is on disk (weights files, the hub cache, git) and
never reaches the network; a fact that cannot be established is `None`, never a guess, and never
fails a run. Hashing a large checkpoint happens once per machine (cached by path, size and mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_WEIGHTS = ("*.safetensors",)
_PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
_FINGERPRINTS: dict[str, str] = {}  # per process: (path, size, mtime) → sha256


def hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The hub cache's snapshot folder of `repo_id` at `revision` (its name is the commit), or
    None when the model is not in the local cache (offline-safe: only the cache is read)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover (transformers depends on huggingface_hub)
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # a malformed id or cache: the fact is unknown, the run goes on
        return None
    return Path(found).parent if isinstance(found, str) else None


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit `revision` (a branch, tag or commit; default `main`) resolves to in the cache."""
    snapshot = hub_snapshot(repo_id, revision)
    return snapshot.name if snapshot is not None else None


def weights_fingerprint(folder: Path | None, allow_pickle: bool = False) -> str | None:
    """One sha256 over the weight files of a model folder: each file's name and content hash.

    Hub snapshots link each file to a blob named by its sha256, which is used as is; other files
    are hashed once per machine (cached in NNRUN_CACHE by path, size and modification time).
    """
    if folder is None or not folder.is_dir():
        return None
    patterns = _WEIGHTS + (_PICKLE_WEIGHTS if allow_pickle else ())
    files = sorted({p for pattern in patterns for p in folder.glob(pattern)})
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    target = path.resolve()
    if path.is_symlink() and _HEX64.match(target.name):  # a hub blob: named by its own sha256
        return target.name
    stat = target.stat()
    key = f"{target}|{stat.st_size}|{stat.st_mtime_ns}"
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    disk = _disk_cache()
    known = disk.get(key)
    if known is None:
        from nnrun.atomic import sha256_file

        known = sha256_file(target)
        disk[key] = known
        _save_disk_cache(disk)
    _FINGERPRINTS[key] = known
    return known


def _cache_file() -> Path:
    from nnrun.tiny import cache_root

    return cache_root() / "weights_sha256.json"


def _disk_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_disk_cache(data: dict[str, str]) -> None:
    from nnrun.atomic import atomic_write_text

    try:
        atomic_write_text(_cache_file(), json.dumps(data, indent=0, sort_keys=True))
    except OSError:  # a read-only cache only costs hashing again next time
        pass


def git_state(path: Path | None) -> dict[str, Any] | None:
    """The git commit of the repository holding `path` (the experiment file), whether the
    repository has uncommitted changes, and whether the file itself differs from the commit.
    None outside a repository (or without git)."""
    if path is None:
        return None
    folder = Path(path).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no") or ""
    file_status = git("status", "--porcelain", "--", str(Path(path).resolve()))
    return {"commit": commit, "dirty": bool(status), "file_dirty": bool(file_status),
            "root": git("rev-parse", "--show-toplevel")}


def rerun_command(manifest: dict[str, Any], run_dir: Path) -> str:
    """The one line that runs `run_dir` again, exactly, into a new directory: Hydra's record of
    the composed config (`.hydra/config.yaml`) becomes the primary config, so neither a changed
    experiment file nor changed defaults can alter it; a hub model is pinned to the commit the
    run used; NNRUN_EXPERIMENT_FILE says where relative data paths start."""
    args = ["nnrun", "-cp", str(run_dir.absolute() / ".hydra"), "-cn", "config"]
    model = manifest.get("model") or {}
    if model.get("commit") and model.get("revision") != model["commit"]:
        args.append(f"model.revision={model['commit']}")
    args.append(f"hydra.run.dir={run_dir.absolute()}-rerun")
    line = " ".join(map(shlex.quote, args))
    source = (manifest.get("experiment") or {}).get("file")
    if source:  # relative data paths start from the experiment file's folder
        line = f"NNRUN_EXPERIMENT_FILE={shlex.quote(str(Path(source).absolute()))} {line}"
    return line


def host() -> str:
    import socket

    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()
