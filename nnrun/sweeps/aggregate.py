"""Per-job tensors assembled along the swept axes: one tensor file (and a plot, where the shape
allows one) per saved value, named after the swept parameters.

Invariant: an aggregate is built only from the tensor files the completed jobs recorded in their
manifests; a point that failed (or has another shape) is NaN, never a value from elsewhere;
per-example values enter as their mean over the examples; the files are written atomically and
are byte-identical whenever their contents are.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnrun.sweeps.keys import Axis, value_label
from nnrun.sweeps.state import Job

FOLDER = "aggregate"
MAX_ELEMENTS = 1_000_000   # per job and value, after the mean over examples: larger is not loaded
MAX_SERIES = 8             # a swept axis with more values than this is a heatmap, not lines
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Value:
    """One saved value of one job, its `example` axis averaged away."""

    tensor: Any                 # torch.float64
    axes: list[str]
    coords: dict[str, list[str]]
    examples: int | None        # how many examples were averaged (None: no example axis)


def read_value(run_dir: Path, artifact: dict[str, Any]) -> Value | None:
    """The value of a recorded tensor artifact, or None if it is too large or unreadable."""
    import torch
    from safetensors import safe_open

    try:
        with safe_open(run_dir / artifact["path"], "pt") as handle:
            name = next(iter(handle.keys()))
            shape = list(handle.get_slice(name).get_shape())
            axes = list(artifact.get("axes") or [])
            per_example = "example" in axes and len(axes) == len(shape)
            kept = math.prod(s for a, s in zip(axes, shape) if a != "example") if per_example \
                else math.prod(shape)
            if kept > MAX_ELEMENTS:
                return None
            tensor = handle.get_tensor(name).double()
            coords = json.loads((handle.metadata() or {}).get("coords") or "{}")
    except (OSError, ValueError, StopIteration, RuntimeError):
        return None
    if len(axes) != tensor.dim():
        axes = [f"dim{i}" for i in range(tensor.dim())]
    examples = None
    if "example" in axes:
        dim = axes.index("example")
        examples = tensor.shape[dim]
        tensor = torch.nanmean(tensor, dim=dim)
        axes = axes[:dim] + axes[dim + 1:]
    return Value(tensor, axes, coords or {}, examples)


def metrics(job: Job) -> dict[str, float]:
    """The job's scalar results: every saved tensor that is one number (per-example values: the
    mean over the examples)."""
    out = {}
    for artifact in _tensors(job):
        if math.prod(_kept_shape(artifact)) != 1:
            continue
        value = read_value(job.run_dir, artifact)
        if value is not None and value.tensor.numel() == 1:
            out[_name(artifact)] = float(value.tensor.reshape(()))
    return out


def aggregate(sweep_dir: Path, jobs: list[Job], axes: list[Axis]) -> tuple[list[Path], list[str]]:
    """Write `aggregate/<value>_by_<axes>.safetensors` (+ `.png`/`.svg`) for every value the
    completed jobs saved. Returns the files written and notes on values left out."""
    if not axes:
        return [], []
    done = [j for j in jobs if j.status == "completed" and j.run_dir is not None]
    names: dict[str, None] = {}
    for job in done:
        for artifact in _tensors(job):
            names.setdefault(_name(artifact))
    written: list[Path] = []
    notes: list[str] = []
    for name in names:
        paths, note = _one(sweep_dir, name, done, axes)
        written += paths
        if note:
            notes.append(note)
    return written, notes


def _one(sweep_dir: Path, name: str, jobs: list[Job], axes: list[Axis]):
    import torch

    values: dict[int, tuple[Job, Value]] = {}
    for i, job in enumerate(jobs):
        artifact = next((a for a in _tensors(job) if _name(a) == name), None)
        value = read_value(job.run_dir, artifact) if artifact else None
        if value is not None:
            values[i] = (job, value)
    if not values:
        return [], f"{name}: not aggregated (too large or unreadable)"
    first = next(iter(values.values()))[1]
    shape = tuple(first.tensor.shape)
    grid = torch.full([len(a.values) for a in axes] + list(shape), float("nan"),
                      dtype=torch.float64)
    other = 0
    for job, value in values.values():
        if tuple(value.tensor.shape) != shape or value.axes != first.axes:
            other += 1
            continue
        try:
            index = tuple(a.index(job.params[a.key]) for a in axes)
        except (KeyError, ValueError):
            continue
        grid[index] = value.tensor
    labels = [a.label for a in axes]
    stem = _UNSAFE.sub("_", f"{name}_by_{'_'.join(labels)}")
    folder = sweep_dir / FOLDER
    coords = {a.label: [value_label(v) for v in a.values] for a in axes}
    coords.update({a: first.coords[a] for a in first.axes if a in first.coords})
    meta = {"value": name, "axes": ",".join(labels + first.axes),
            "coords": json.dumps(coords, sort_keys=True),
            "swept": json.dumps({a.label: a.key for a in axes}, sort_keys=True),
            "mean_over_examples": str(first.examples is not None).lower(),
            "missing": "NaN: a point that did not complete"}
    from nnrun.atomic import write_tensors

    path = folder / f"{stem}.safetensors"
    write_tensors(path, {name: grid}, meta)
    note = f"{name}: {other} job(s) with another shape left out (NaN)" if other else None
    try:
        plots = _plot(grid, axes, first, name, folder / stem)
    except (ValueError, RuntimeError) as err:  # a plot never costs the summary
        plots, note = [], f"{name}: no plot ({err})"
    return [path, *plots], note


def _plot(grid, axes: list[Axis], first: Value, name: str, stem: Path) -> list[Path]:
    """A line over one swept parameter, a heatmap over two, or one line per swept value over a
    value's own axis; other shapes are saved as tensors only."""
    from nnrun import plots

    own = [(a, n) for a, n in zip(first.axes, first.tensor.shape) if n > 1]
    data = grid.reshape([len(a.values) for a in axes] + [n for _, n in own])
    ticks = [[value_label(v) for v in a.values] for a in axes]
    averaged = f" (mean over {first.examples} examples)" if first.examples else ""
    title = f"{name} over {' × '.join(a.label for a in axes)}{averaged}"
    if len(axes) == 1 and not own:
        return plots.line(data, x_label=axes[0].label, y_label=name, x_ticks=ticks[0],
                          series_labels=None, title=title, out_stem=stem)
    if len(axes) == 2 and not own:
        return plots.heatmap(data, row_label=axes[0].label, col_label=axes[1].label,
                             row_ticks=ticks[0], col_ticks=ticks[1], title=title,
                             colorbar_label=name, out_stem=stem)
    if len(axes) == 1 and len(own) == 1:
        axis, _ = own[0]
        own_ticks = first.coords.get(axis)
        if len(axes[0].values) <= MAX_SERIES:
            series = [f"{axes[0].label}={t}" for t in ticks[0]]
            return plots.line(data, x_label=axis, y_label=name, x_ticks=own_ticks,
                              series_labels=series, title=title, out_stem=stem)
        return plots.heatmap(data, row_label=axes[0].label, col_label=axis, row_ticks=ticks[0],
                             col_ticks=own_ticks, title=title, colorbar_label=name,
                             out_stem=stem)
    return []


def _tensors(job: Job) -> list[dict[str, Any]]:
    return [a for a in (job.manifest or {}).get("artifacts") or []
            if a.get("kind") == "tensor" and a.get("path")]


def _name(artifact: dict[str, Any]) -> str:
    return Path(artifact["path"]).name.removesuffix(".safetensors")


def _kept_shape(artifact: dict[str, Any]) -> list[int]:
    shape, axes = artifact.get("shape") or [], artifact.get("axes") or []
    if len(axes) == len(shape):
        return [s for a, s in zip(axes, shape) if a != "example"]
    return list(shape)
