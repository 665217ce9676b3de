"""Split a bound experiment's examples into chunks and build each chunk's `data` argument.

Invariant: `chunk_data` is the only bridge from a `Binding` to the program: plain tensors,
strings, ints and slices (picklable, remote-safe), sliced to the chunk's examples, so every chunk
runs through the same compiled program and yields exactly what a run of those rows alone would.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nnrun.bind import Binding

ROW_BUDGET_BYTES = 1 << 30  # activations of one chunk's forward pass (a rough, documented bound)
MAX_AUTO_BATCH = 256


def dtype_bytes(dtype: str) -> int:
    """Bytes per value of a model dtype name (`float32`, `bfloat16`, ...)."""
    return {"float64": 8, "float32": 4}.get(dtype, 2)


def chunk_ranges(n_examples: int, batch_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + batch_size, n_examples))
            for start in range(0, n_examples, batch_size)]


def auto_batch_size(binding: Binding, info, itemsize: int,
                    budget: int = ROW_BUDGET_BYTES, rows: int | None = None) -> int:
    """Examples per chunk so that one forward pass stays near `budget` bytes of activations.

    Each example costs one row per foreach point of every invoke; a row holds about
    `tokens × (layers × hidden × 16 + vocab)` values at its peak (residual stream, attention and
    MLP intermediates, logits). The estimate is deliberately rough and errs on the small side.
    """
    per_example = forward_bytes_per_example(binding, info, itemsize, rows)
    return max(1, min(binding.n_examples, MAX_AUTO_BATCH, budget // max(per_example, 1)))


def forward_bytes_per_example(binding: Binding, info, itemsize: int,
                              rows: int | None = None) -> int:
    """Activation bytes one example adds to a chunk's largest forward pass (see
    `auto_batch_size`); `rows`: its batch rows per example (`forward_rows`), else every
    invoke's points counted as one forward pass."""
    rows = rows or sum(len(b.points) for b in binding.invokes.values()) or 1
    tokens = max((max(b.lengths) for b in binding.invokes.values()), default=1)
    width = (info.n_layers * info.hidden_size * 16 + info.vocab_size) if info else 1 << 16
    return rows * tokens * width * itemsize


def encoded(ids, pad_id: int, device: Any = "cpu") -> dict[str, Any]:
    """An invoke's input, tokenized once at bind time: `input_ids` and `attention_mask`,
    left-padded as the tokenizer would (nnsight re-pads invokes of other lengths alike)."""
    import torch

    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)    # (example, position)
    mask = torch.zeros((len(ids), width), dtype=torch.long)               # (example, position)
    for i, row in enumerate(ids):
        if row:
            input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def forward_rows(schedule, max_points: int | None = None) -> int:
    """Batch rows one example adds to the program's largest forward pass: the traces run one
    after another, each with a row per invoke and foreach point; a prefix reuse (nnrun.fastpath)
    runs one layer's points at a time (plus its prefix run: one row); a folded invoke at most
    `max_points` points at a time."""
    def rows(trace) -> int:
        if trace.prefix is not None:   # the points of one layer at a time
            n = max(Counter(point[0] for point in trace.invokes[0].binding.points).values())
        else:
            n = sum(len(p.binding.points) for p in trace.invokes)
        return min(n, max_points) if trace.fold is not None and max_points else n
    return max((rows(t) for t in schedule.traces), default=1)


def max_points_per_forward(schedule, binding: Binding, info, itemsize: int, batch_size: int,
                           budget: int = ROW_BUDGET_BYTES) -> int | None:
    """How many points of a folded invoke (nnrun.fastpath) one forward pass takes, when all of
    them at once would exceed the activation `budget` even for a chunk of `batch_size`
    examples (a huge grid: chunks cannot shrink below one example); None when they fit."""
    if not any(t.fold is not None for t in schedule.traces):
        return None
    per_row = forward_bytes_per_example(binding, info, itemsize, rows=1)
    cap = max(1, budget // (per_row * max(batch_size, 1)))
    return cap if cap < forward_rows(schedule) else None


def chunk_data(binding: Binding, start: int, stop: int, device: Any = "cpu",
               backend: dict[str, Any] | None = None,
               max_points: int | None = None) -> dict[str, Any]:
    """The `data` argument of `run(model, data)` for examples `start:stop`, with its tensors on
    the model's `device` (index and token tensors meet activations there). `backend` holds the
    keyword arguments of the outermost nnsight context (`remote=...`; empty for a local run);
    `max_points` the points of a folded invoke per forward pass (`max_points_per_forward`)."""
    import torch

    data: dict[str, Any] = {"rows": torch.arange(stop - start), "prompts": {}, "points": {},
                            "index": {}, "mask": {}, "tokens": {}, "backend": backend or {},
                            "max_points": max_points}
    for scope, b in binding.invokes.items():
        data["prompts"][scope] = encoded(b.ids[start:stop], binding.pad_id,
                                         "cpu" if str(device) == "meta" else device)
        if b.loop_vars:
            data["points"][scope] = [tuple(p) for p in b.points]
    for nid, where in binding.positions.items():
        if where.kind == "slice":
            data["index"][nid] = slice(where.values[0], None)
        elif where.kind == "row":
            data["index"][nid] = torch.tensor(where.values[start:stop], dtype=torch.long)
        elif where.kind == "ragged":
            lengths = torch.tensor(where.values[start:stop], dtype=torch.long)[:, None]
            cells = torch.arange(max(where.values))[None, :]     # (1, position)
            present = cells < lengths                             # (example, position)
            # token j of a prompt of n tokens sits n - j places from the end
            data["index"][nid] = torch.where(present, cells - lengths, -1)
            data["mask"][nid] = present
    for key, ids in binding.token_ids.items():
        data["tokens"][key] = torch.tensor(ids[start:stop], dtype=torch.long)
    data["rows"] = data["rows"].to(device)
    for part in ("index", "mask", "tokens"):
        data[part] = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                      for k, v in data[part].items()}
    return data
