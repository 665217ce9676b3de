"""One model revision per sweep: the launching machine resolves each hub model's revision (a
branch or tag) to a commit once, writes it to `<sweep>/models.lock.json`, and every job loads
that commit, so a sweep never straddles two revisions of a model (nor does a resumed one).

Invariant: only hub ids are pinned (built-in models and local directories are not); an entry,
once written, is never changed by a later resume; resolution never fails a sweep: a model that
cannot be resolved is left as the command line says, and the job reports it if it is missing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

LOCK = "models.lock.json"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def is_hub_id(path: str) -> bool:
    from nnrun.models import BUILTIN_PREFIX

    if path.startswith((BUILTIN_PREFIX, ".", "/", "~")):
        return False
    return not Path(path).expanduser().exists()


def entry(path: str, revision: str | None) -> str:
    return f"{path}@{revision or 'main'}"


def resolve_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit `revision` names now: asked of the hub when online, else read from the cache."""
    from nnrun.provenance import hub_commit

    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes"):
        try:
            from huggingface_hub import HfApi

            return HfApi().model_info(repo_id, revision=revision, timeout=20).sha
        except Exception:  # offline in fact, or no access: the cache may still know
            pass
    return hub_commit(repo_id, revision)


def pin_models(sweep_dir: Path, models: list[tuple[str, str | None]]) -> dict[str, str]:
    """Resolve every hub model of the sweep not pinned yet; returns the lock's entries."""
    from nnrun.atomic import atomic_write_text

    lock = read_lock(sweep_dir)
    changed = False
    for path, revision in dict.fromkeys(models):
        key = entry(path, revision)
        if key in lock or not is_hub_id(path) or (revision and _COMMIT.match(revision)):
            continue
        commit = resolve_commit(path, revision)
        if commit:
            lock[key] = commit
            changed = True
    if changed:
        atomic_write_text(sweep_dir / LOCK, json.dumps(lock, indent=1, sort_keys=True) + "\n")
    return lock


def read_lock(sweep_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((sweep_dir / LOCK).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def pinned(sweep_dir: Path, path: str, revision: str | None) -> str | None:
    if revision and _COMMIT.match(str(revision)):
        return None
    return read_lock(sweep_dir).get(entry(path, revision))
