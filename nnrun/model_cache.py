"""A model's structure facts (`ModelInfo`) kept on disk, so that validating an experiment needs
the model's config.json only: no torch, no transformers modeling code, no nnsight.

Invariant: an entry is keyed by the bytes of the model's config.json, the probe's own source
(model_info.py and sites.py) and the installed transformers version, so a change to any of them
misses the cache; it is written atomically, and read back only when it matches `ModelInfo` field
by field and names its own key (a corrupt, truncated, renamed or stale entry is ignored and
rebuilt, never trusted). A config with `auto_map` (the model's own code) is never cached: its
structure comes from code outside config.json. An unpinned hub model is looked up only offline
(HF_HUB_OFFLINE=1): online, transformers may fetch a newer config than the local cache holds.
Where: $NNRUN_CACHE/model_info/ (default ~/.cache/nnrun/model_info/); deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import types
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from nnrun.model_info import ModelInfo
    from nnrun.models import ModelSpec

FORMAT = 1  # the entry's layout; bump when to_json changes
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SPECIAL = ("order", "tuple_outputs")  # the fields that are not JSON scalars
_READ: dict[str, ModelInfo] = {}  # per process: key → facts already read (a sweep reads once)


def folder() -> Path:
    from nnrun.tiny import cache_root

    return cache_root() / "model_info"


def key_for(spec: ModelSpec) -> str | None:
    """The cache key of a model's facts, or None when they must be probed (no config.json found
    without transformers, a config with its own code, an unpinned hub model online)."""
    path = _config_file(spec)
    if path is None:
        return None
    try:
        data = path.read_bytes()
        if "auto_map" in json.loads(data):
            return None
    except (OSError, ValueError, TypeError):  # unreadable or not a JSON object: the probe says why
        return None
    digest = hashlib.sha256(f"nnrun-model-info/{FORMAT}\0{_probe_version()}\0".encode())
    digest.update(data)
    return digest.hexdigest()


def read(key: str) -> ModelInfo | None:
    """The cached facts, or None when there is no usable entry."""
    if key in _READ:
        return _READ[key]
    try:
        entry = json.loads((folder() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
        return None
    info = from_json(entry.get("info"))
    if info is not None:
        _READ[key] = info
    return info


def write(key: str, info: ModelInfo) -> None:
    """Keep the facts for next time (best effort: a read-only cache only costs a probe)."""
    from nnrun.atomic import atomic_write_text

    data = to_json(info)
    if from_json(data) != info:  # a field this module cannot store: never write what misreads
        return
    try:
        atomic_write_text(folder() / f"{key}.json",
                          json.dumps({"format": FORMAT, "key": key, "info": data}))
    except OSError:
        pass


def to_json(info: ModelInfo) -> dict[str, Any]:
    data = {f.name: getattr(info, f.name) for f in fields(info)}
    data["order"] = [[path, event, rank] for (path, event), rank in info.order.items()]
    data["tuple_outputs"] = sorted(info.tuple_outputs)
    return data


def from_json(data: Any) -> ModelInfo | None:
    """A ModelInfo from its JSON form, or None unless every field is there with its type."""
    from nnrun.model_info import ModelInfo

    hints = _hints()
    if not isinstance(data, dict) or set(data) != set(hints):
        return None
    order, tuples = data["order"], data["tuple_outputs"]
    if not (isinstance(order, list) and all(_is_rank(row) for row in order)
            and isinstance(tuples, list) and all(isinstance(p, str) for p in tuples)):
        return None
    if not all(_fits(data[name], hint) for name, hint in hints.items() if name not in _SPECIAL):
        return None
    return ModelInfo(**{**data, "order": {(p, e): r for p, e, r in order},
                        "tuple_outputs": frozenset(tuples)})


def _is_rank(row: Any) -> bool:
    return (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
            and isinstance(row[1], str) and _fits(row[2], int))


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has a scalar field's type (bool is not an int here)."""
    if get_origin(hint) in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) \
            and not isinstance(value, bool)
    return hint in (str, bool) and isinstance(value, hint)


@lru_cache(maxsize=1)
def _hints() -> dict[str, Any]:
    from nnrun.model_info import ModelInfo

    return get_type_hints(ModelInfo)


@lru_cache(maxsize=1)
def _probe_version() -> str:
    """What the facts depend on besides the config: nnrun's probe and site code, and the
    transformers that builds the module tree (read from its metadata: importing it is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("model_info.py", "sites.py"):
        digest.update((here / name).read_bytes())
    try:
        transformers = version("transformers")
    except PackageNotFoundError:  # pragma: no cover (a dependency)
        transformers = "?"
    return f"{digest.hexdigest()}/transformers-{transformers}"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: only the local cache is read."""
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _config_file(spec: ModelSpec) -> Path | None:
    """The config.json transformers would read for this model, found without transformers."""
    from nnrun.models import BUILTIN_PREFIX, resolve_path

    if spec.path.startswith(BUILTIN_PREFIX):
        candidate = Path(resolve_path(spec)) / "config.json"
    elif Path(spec.path).expanduser().is_dir():
        candidate = Path(spec.path).expanduser() / "config.json"
    elif _COMMIT.match(spec.revision or "") or hub_offline():
        from nnrun.provenance import hub_snapshot

        snapshot = hub_snapshot(spec.path, spec.revision)
        candidate = snapshot / "config.json" if snapshot is not None else None
    else:
        return None
    return candidate if candidate is not None and candidate.is_file() else None
