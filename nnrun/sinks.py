"""Sinks consume values computed chunk by chunk: they stream tensors to disk, keep running
statistics for plots, or collect small values, and write their artifacts when the run ends.

Invariant: memory held by a sink does not grow with the dataset except for `collect` sinks (small
values such as token strings); a streamed tensor file is written atomically and only appears
complete once every example is in it.
"""

from __future__ import annotations

import json
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nnrun.atomic import atomic_writer
from nnrun.outputs import ArtifactContext
from nnrun.redact import redact
from nnrun.reduce import Moments

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
                      torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
                      torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


@dataclass
class SinkContext(ArtifactContext):
    """An ArtifactContext that also carries the spread of a mean over examples, if any."""

    spread: Any = None           # s.e.m. per cell, same shape as the value
    n_examples: int | None = None


def example_first(axes: tuple[str, ...]) -> tuple[str, ...]:
    return ("example",) + tuple(a for a in axes if a != "example")


def concat_examples(parts: list[Any], dim: int) -> Any:
    """Join per-chunk values along the example dimension (tensors or nested lists)."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, dim=dim)
    if dim == 0:
        return [item for part in parts for item in part]
    return [concat_examples([p[i] for p in parts], dim - 1) for i in range(len(parts[0]))]


class Sink:
    """One sink node: `update` per chunk (or once for a dataset-level value), then `close`."""

    def __init__(self, node, ctx: SinkContext, n_examples: int) -> None:
        self.node, self.ctx, self.n_examples = node, ctx, n_examples
        self.dim = ctx.axes.index("example") if "example" in ctx.axes else None

    def update(self, value: Any) -> None:
        raise NotImplementedError

    def close(self) -> list[Path]:
        raise NotImplementedError

    def abort(self) -> None:
        """The run failed: release anything half-written."""

    def write(self, value: Any) -> list[Path]:
        return self.node.type.write_artifacts(self.node.params, value, self.ctx)


class CollectSink(Sink):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.parts: list[Any] = []

    def update(self, value: Any) -> None:
        self.parts.append(value)

    def close(self) -> list[Path]:
        if self.dim is None:
            return self.write(self.parts[-1])
        return self.write(concat_examples(self.parts, self.dim))


class MeanSink(Sink):
    """Plots of a per-example value show its mean; the s.e.m. goes to `ctx.spread`."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.moments = Moments(self.dim) if self.dim is not None else None
        self.value = None

    def update(self, value: Any) -> None:
        if self.moments is None:
            self.value = value
        else:
            self.moments.update(value)

    def close(self) -> list[Path]:
        if self.moments is None:
            return self.write(self.value)
        self.ctx.axes = tuple(a for a in self.ctx.axes if a != "example")
        self.ctx.spread = self.moments.result("sem")
        self.ctx.n_examples = int(self.moments.n.max().item())
        return self.write(self.moments.result("mean"))


class StreamSink(Sink):
    """`save`: per-example tensors go straight to disk, example axis first, chunk by chunk."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.writer: SafetensorsStream | None = None
        self.fallback = CollectSink(*args)

    def update(self, value: Any) -> None:
        if self.dim is None or not isinstance(value, torch.Tensor):
            self.fallback.update(value)
            return
        chunk = value.detach().to("cpu").movedim(self.dim, 0).contiguous()
        if self.writer is None:
            self.writer = self._open(chunk)
        self.writer.append(chunk)

    def _open(self, chunk: torch.Tensor) -> SafetensorsStream:
        name = self.node.id
        folder = self.ctx.run.path / "tensors"
        folder.mkdir(exist_ok=True)
        axes = example_first(self.ctx.axes)
        meta = {**self.ctx.metadata, "axes": ",".join(axes), "coords": json.dumps(
            {a: self.ctx.coords.get(a) for a in axes if a in self.ctx.coords}, sort_keys=True)}
        shape = (self.n_examples,) + tuple(chunk.shape[1:])
        return SafetensorsStream(folder / f"{name}.safetensors", name, chunk.dtype, shape,
                                 redact(meta))

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    def close(self) -> list[Path]:
        if self.writer is None:
            return self.fallback.close()
        path = self.writer.close()
        w = self.writer
        self.ctx.run.record(path, "tensor", self.node.id, shape=list(w.shape),
                            dtype=str(w.dtype).replace("torch.", ""),
                            axes=list(example_first(self.ctx.axes)))
        return [path]


def safetensors_header(metadata: dict[str, str],
                       tensors: list[tuple[str, torch.dtype, tuple[int, ...]]]) -> bytes:
    """The 8-byte length and JSON header of a .safetensors file, byte-for-byte the same for the
    same contents: metadata keys sorted, tensors in name order, compact JSON padded to 8 bytes
    (safetensors' own writer orders the metadata by a hash map, so equal runs differed)."""
    entries: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name, dtype, shape in sorted(tensors, key=lambda t: t[0]):
        if dtype not in SAFETENSORS_DTYPES:
            raise TypeError(f"cannot write {dtype} to safetensors")
        nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        entries[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                         "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """Raw little-endian C-order bytes of a CPU tensor (bfloat16 through an int16 view)."""
    raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
    return raw.contiguous().numpy().tobytes()


def write_safetensors(handle, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a whole .safetensors file to an open binary file, deterministically."""
    handle.write(safetensors_header(metadata, [(n, t.dtype, tuple(t.shape))
                                               for n, t in tensors.items()]))
    for name in sorted(tensors):
        handle.write(tensor_bytes(tensors[name]))


class SafetensorsStream:
    """A .safetensors file with one tensor, written front to back as chunks arrive.

    safetensors' own writer needs the whole tensor in memory; the format (8-byte header length,
    JSON header, raw little-endian C-order bytes) lets the header be written first when the
    final shape is known, which it is: examples × the per-example shape of the first chunk.
    """

    def __init__(self, path: Path, name: str, dtype: torch.dtype, shape: tuple[int, ...],
                 metadata: dict[str, str]) -> None:
        if dtype not in SAFETENSORS_DTYPES:
            raise TypeError(f"cannot stream {dtype} to safetensors")
        self.path, self.dtype, self.shape = path, dtype, shape
        self.nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        header = safetensors_header(metadata, [(name, dtype, shape)])
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_writer(path))
        self._file = self._stack.enter_context(open(tmp, "wb"))
        self._file.write(header)
        self.written = 0

    def append(self, chunk: torch.Tensor) -> None:
        if chunk.dtype != self.dtype or tuple(chunk.shape[1:]) != self.shape[1:]:
            raise ValueError(f"chunk {tuple(chunk.shape)} {chunk.dtype} does not continue "
                             f"{self.shape} {self.dtype}")
        data = tensor_bytes(chunk)
        self.written += len(data)
        if self.written > self.nbytes:
            raise ValueError("more examples than the file was sized for")
        self._file.write(data)

    def close(self) -> Path:
        if self.written != self.nbytes:
            self.abort()
            raise ValueError(f"{self.path.name}: {self.written} of {self.nbytes} bytes written")
        self._file.flush()
        self._stack.close()   # closes the file, then fsyncs and renames it into place
        return self.path

    def abort(self) -> None:
        """Drop the temporary file: an incomplete tensor never lands under its real name."""
        err = RuntimeError("aborted")
        try:
            self._stack.__exit__(RuntimeError, err, None)
        except RuntimeError:
            pass


MODES = {"collect": CollectSink, "stream": StreamSink, "mean": MeanSink}
