"""Tests for nnrun.atomic: crash-safe writes, hashing and safetensors output."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nnrun import atomic
from nnrun.atomic import (
    atomic_write_bytes,
    atomic_write_text,
    atomic_writer,
    sha256_file,
    write_tensors,
)


def _leftovers(directory: Path) -> list[str]:
    """Names of temporary files left in ``directory``."""
    return [p.name for p in directory.iterdir() if p.name.startswith(".tmp-")]


def test_bytes_round_trip_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "data.bin"
    atomic_write_bytes(target, b"\x00\x01hello")
    assert target.read_bytes() == b"\x00\x01hello"
    assert _leftovers(target.parent) == []


def test_text_round_trip_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "note.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second — ünïcode")
    assert target.read_text(encoding="utf-8") == "second — ünïcode"
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_permissions_match_an_ordinary_write(tmp_path: Path) -> None:
    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    with atomic_writer(tmp_path / "writer.bin") as tmp:
        tmp.write_bytes(b"x")
    expected = ordinary.stat().st_mode
    assert (tmp_path / "atomic.txt").stat().st_mode == expected
    assert (tmp_path / "writer.bin").stat().st_mode == expected


def test_failed_replace_leaves_original_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("original")

    def boom(src: object, dst: object) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk vanished"):
        atomic_write_text(target, "new")
    assert target.read_text() == "original"
    assert _leftovers(tmp_path) == []


def test_writer_success_replaces_and_keeps_suffix(tmp_path: Path) -> None:
    target = tmp_path / "figure.png"
    with atomic_writer(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.suffix == ".png"
        assert tmp != target
        tmp.write_bytes(b"payload")
    assert target.read_bytes() == b"payload"
    assert _leftovers(tmp_path) == []


def test_writer_explicit_suffix(tmp_path: Path) -> None:
    with atomic_writer(tmp_path / "out", suffix=".svg") as tmp:
        assert tmp.suffix == ".svg"
        tmp.write_text("<svg/>")
    assert (tmp_path / "out").read_text() == "<svg/>"


def test_writer_failure_midway_leaves_original(tmp_path: Path) -> None:
    target = tmp_path / "keep.bin"
    target.write_bytes(b"original")
    with pytest.raises(RuntimeError, match="midway"), atomic_writer(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("midway")
    assert target.read_bytes() == b"original"
    assert _leftovers(tmp_path) == []


def test_writer_failure_without_original(tmp_path: Path) -> None:
    target = tmp_path / "never.bin"
    with pytest.raises(ValueError), atomic_writer(target):
        raise ValueError
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    target = tmp_path / "blob"
    target.write_bytes(data)
    assert sha256_file(target) == hashlib.sha256(data).hexdigest()


def test_write_tensors_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "acts.safetensors"
    tensors = {"resid": torch.randn(3, 4), "ids": torch.arange(5)}
    metadata = {"model": "gpt2", "layer": "5"}
    write_tensors(target, tensors, metadata)
    with safe_open(str(target), framework="pt") as handle:
        assert handle.metadata() == metadata
        assert set(handle.keys()) == {"resid", "ids"}
        for name, expected in tensors.items():
            assert torch.equal(handle.get_tensor(name), expected)
    assert _leftovers(tmp_path) == []


def test_write_tensors_non_contiguous_and_shared(tmp_path: Path) -> None:
    base = torch.randn(4, 6, requires_grad=True)
    tensors = {
        "transposed": base.t(),  # non-contiguous view
        "row": base[1],  # shares storage with "transposed"
        "strided": base[:, ::2],
    }
    target = tmp_path / "views.safetensors"
    write_tensors(target, tensors, {})
    with safe_open(str(target), framework="pt") as handle:
        for name, expected in tensors.items():
            assert torch.equal(handle.get_tensor(name), expected.detach())


@pytest.mark.parametrize(
    ("metadata", "key"),
    [({"layer": 5}, "layer"), ({"ok": "yes", "scale": None}, "scale"), ({3: "x"}, "3")],
)
def test_write_tensors_bad_metadata(tmp_path: Path, metadata: dict, key: str) -> None:
    target = tmp_path / "bad.safetensors"
    with pytest.raises(TypeError, match=key):
        write_tensors(target, {"x": torch.zeros(2)}, metadata)
    assert not target.exists()
    assert _leftovers(tmp_path) == []
