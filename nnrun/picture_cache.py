"""Draw a graph picture once per graph, then copy it: a cache of the rendered files on disk
(`$NNRUN_CACHE/graphs/`, default `~/.cache/nnrun/graphs/`), shared by every run and process.

Invariant: a cached file reaches a run directory only if its bytes still have the size and
sha256 recorded when it was drawn (a truncated or corrupted cache file is drawn again, never
copied); the key covers what the picture shows, nnrun's and matplotlib's versions, the formats
and the picture options, so a change to any of them draws anew. Cache files are written
atomically; a cache that cannot be written only costs the next run a drawing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from nnrun.atomic import atomic_write_bytes, atomic_write_text


def cache_dir() -> Path:
    from nnrun.tiny import cache_root

    return cache_root() / "graphs"


def picture_key(content: str, formats: tuple[str, ...]) -> str:
    """sha256 of what the picture shows and everything else that changes its bytes."""
    from importlib.metadata import PackageNotFoundError, version

    from nnrun import __version__
    from nnrun.plots import PNG_DPI

    try:
        mpl = version("matplotlib")
    except PackageNotFoundError:  # drawing will fail anyway; the key only needs to be stable
        mpl = "none"
    parts = [content, __version__, mpl, ",".join(formats), f"dpi={PNG_DPI}"]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cached_picture(content: str, stem: Path, render: Callable[[], list[Path]]) -> list[Path]:
    """Write the picture of `content` to `<stem>.<ext>` for the run's formats: copied from the
    cache when a verified copy is there, else `render()`ed and stored for the next run."""
    from nnrun.plots import FORMATS

    formats = FORMATS.get()
    key = picture_key(content, formats)
    files = _lookup(key, formats)
    if files is not None:
        paths = []
        for ext, data in files.items():
            path = stem.with_name(f"{stem.name}.{ext}")
            atomic_write_bytes(path, data)
            paths.append(path)
        return paths
    paths = render()
    _store(key, paths)
    return paths


def _lookup(key: str, formats: tuple[str, ...]) -> dict[str, bytes] | None:
    """The cached files of `key`, each checked against its recorded size and sha256."""
    folder = cache_dir()
    try:
        record = json.loads((folder / f"{key}.json").read_text())
        files = {}
        for ext in formats:
            data = (folder / f"{key}.{ext}").read_bytes()
            expected = record[ext]
            if len(data) != expected["bytes"] or _sha(data) != expected["sha256"]:
                return None
            files[ext] = data
        return files
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable or corrupt
        return None


def _store(key: str, paths: list[Path]) -> None:
    """Keep the drawn files; the record is written last, so a half-stored entry is a miss."""
    folder = cache_dir()
    try:
        record = {}
        for path in paths:
            data = path.read_bytes()
            ext = path.suffix[1:]
            atomic_write_bytes(folder / f"{key}.{ext}", data)
            record[ext] = {"bytes": len(data), "sha256": _sha(data)}
        atomic_write_text(folder / f"{key}.json", json.dumps(record, sort_keys=True))
    except OSError:  # a read-only or full cache: the picture is in the run directory anyway
        pass


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
