"""Crash-safe file writing for run directories.

Responsibility: put bytes on disk so that a reader never sees a half-written file.

Invariant: at every instant the final path either does not exist, holds its previous
complete content, or holds the new complete content. New content is written to a
temporary file in the *same* directory (so ``os.replace`` is an atomic rename on one
filesystem), fsynced, renamed over the target, and the parent directory is fsynced so
the rename itself survives a crash. On any error the temporary file is removed and the
target is left untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_TMP_PREFIX = ".tmp-"
_HASH_CHUNK = 1 << 20


def _default_file_mode() -> int:
    """Permissions an ordinary ``open(path, "w")`` would give a new file."""
    umask = os.umask(0)  # the only portable way to read the umask is to set it
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp creates files as 0600; without this, every artefact of a run would be
# unreadable to collaborators. Read once, at import, before any threads exist.
_FILE_MODE = _default_file_mode()


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry so a completed rename survives power loss.

    Args:
        directory: The directory whose entries changed.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open directories; the rename is still atomic there.
    try:
        os.fsync(fd)
    except OSError:
        pass  # Some filesystems (and platforms) refuse fsync on directories.
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    """Flush a file written by a third-party library that never fsyncs it.

    Args:
        path: The file to flush.
    """
    with open(path, "r+b") as handle:  # writable, because Windows refuses fsync otherwise
        os.fsync(handle.fileno())


def _remove_quietly(path: Path) -> None:
    """Delete a temporary file, tolerating it never having been created.

    Args:
        path: The file to remove.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _make_temp(target: Path, suffix: str = "") -> tuple[int, Path]:
    """Create a uniquely named temporary file next to ``target``.

    Args:
        target: The final destination; its parent directories are created.
        suffix: Extension for the temporary name.

    Returns:
        An open OS-level file descriptor and the temporary path.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=_TMP_PREFIX, suffix=suffix)
    return fd, Path(name)


def _commit(tmp: Path, target: Path) -> None:
    """Rename a fully flushed temporary file onto its target and persist the rename.

    Args:
        tmp: The temporary file, already fsynced.
        target: The final destination.
    """
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: Destination file; parent directories are created as needed.
        data: The complete new content.
    """
    target = Path(path)
    fd, tmp = _make_temp(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _commit(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically.

    Args:
        path: Destination file; parent directories are created as needed.
        text: The complete new content.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` when the block succeeds.

    For libraries that insist on writing to a filename themselves (safetensors'
    ``save_file``, matplotlib's ``savefig``).

    Args:
        path: Destination file; parent directories are created as needed.
        suffix: Extension for the temporary file. Defaults to the target's own
            suffix, because some writers (matplotlib) choose the format from it.

    Yields:
        A path in the target's directory for the caller to write.
    """
    target = Path(path)
    fd, tmp = _make_temp(target, suffix or target.suffix)
    os.close(fd)  # The caller's library opens the file by name itself.
    try:
        yield tmp
        _fsync_file(tmp)
        _commit(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hash a file without loading it into memory.

    Args:
        path: The file to hash.

    Returns:
        The lowercase hexadecimal SHA-256 digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_metadata(metadata: dict[str, str]) -> None:
    """Reject metadata that safetensors would refuse with an unhelpful message.

    Args:
        metadata: The header metadata to validate.

    Raises:
        TypeError: If a key or value is not a ``str``; the message names the key.
    """
    for key, value in metadata.items():
        if not isinstance(key, str):
            kind = type(key).__name__
            raise TypeError(f"safetensors metadata key {key!r} must be str, not {kind}")
        if not isinstance(value, str):
            kind = type(value).__name__
            raise TypeError(f"safetensors metadata value for key {key!r} must be str, not {kind}")


def write_tensors(
    path: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
) -> None:
    """Save tensors and string metadata to a safetensors file atomically.

    Args:
        path: Destination ``.safetensors`` file.
        tensors: Named tensors; any device, layout or storage sharing is accepted.
        metadata: Header metadata; keys and values must all be ``str``.

    Raises:
        TypeError: If metadata contains a non-``str`` key or value.
    """
    # Imported here so that importing this module (and torch) stays cheap for text-only callers.
    from nnrun.sinks import write_safetensors

    _check_metadata(metadata)
    # An independent contiguous CPU copy of each tensor (views, shared storage and strides
    # are all fine to pass in); the bytes are the same whenever the contents are, so the
    # manifest's sha256 shows that two runs agree.
    owned = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_writer(path) as tmp, open(tmp, "wb") as handle:
        write_safetensors(handle, owned, dict(metadata))
