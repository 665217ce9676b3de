"""The memory a run will need, estimated before any weights load, and the budget it must fit.

Invariant: `run` refuses an experiment whose estimate exceeds the budget before it loads the model,
so a grid or a dataset too large for the machine is an error with the numbers and a fix, never an
out-of-memory crash an hour in. The estimate is deliberately simple (documented terms, no
allocator model): weights + one chunk's forward pass + every value kept in memory until the end.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from nnrun.errors import ConfigError, Issue

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
AUTO_FRACTION = 0.9   # `auto`: this share of the device's total memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs at its peak, by cause."""

    weights: int       # the model's parameters in its dtype
    forward: int       # activations of one chunk's batched forward pass (rough upper bound)
    kept: int          # per-example values held until the run ends (collected sinks)
    running: int       # running statistics (mean/std/sem over examples, mean-mode plots)
    streamed: int      # values written to disk chunk by chunk (not held; for the record)

    @property
    def total(self) -> int:
        return self.weights + self.forward + self.kept + self.running

    def lines(self) -> list[str]:
        return [f"  memory estimate: {human(self.total)} = weights {human(self.weights)} + "
                f"one chunk's forward pass {human(self.forward)} + kept values "
                f"{human(self.kept)} + running statistics {human(self.running)} "
                f"(streamed to disk: {human(self.streamed)})"]


def human(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def parse_budget(value: Any) -> int | str | None:
    """`memory_budget`: null (no check), `auto`, a byte count, or text like `16GB` / `12 GiB`."""
    if value is None or value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if match and match.group(2).lower() in _UNITS and float(match.group(1)) > 0:
        return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    raise ConfigError("the run settings have problems:", [Issue(
        "invalid_memory_budget", f"memory_budget must be auto, null or a size, found `{value}`",
        "memory_budget", hint="e.g. memory_budget=16GB, memory_budget=auto (90% of the device), "
                              "memory_budget=null (no check)")])


def device_memory(device: str) -> int | None:
    """Total memory of the device the model runs on (None: unknown)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def estimate(compiled) -> MemoryEstimate:
    """The estimate for a compiled experiment (no weights, no forward pass)."""
    from nnrun.chunks import dtype_bytes, forward_bytes_per_example, forward_rows
    from nnrun.plan import derived_shape

    graph, binding = compiled.graph, compiled.binding
    itemsize = dtype_bytes(compiled.model.dtype)
    schedule = compiled.program.schedule
    kept = running = streamed = 0
    for nid in schedule.returns + schedule.final_returns:
        shape, axes = derived_shape(compiled, nid), graph.axes[nid]
        size = _count(shape) * itemsize
        per_example = _count(s for s, a in zip(shape, axes) if a != "example")
        sinks = [n for n in graph.consumers(nid) if n.type.is_sink]
        modes = {n.type.sink_mode for n in sinks}
        if "collect" in modes:
            kept += size
        if "stream" in modes:
            streamed += size
        if "mean" in modes or any(n.id in schedule.reducers for n in graph.consumers(nid)):
            running += 3 * 8 * per_example  # float64 count, mean and sum of squares
    return MemoryEstimate(
        weights=graph.info.n_params * itemsize,
        forward=compiled.batch_size * forward_bytes_per_example(
            binding, graph.info, itemsize, forward_rows(schedule, compiled.max_points)),
        kept=kept, running=running, streamed=streamed)


def _count(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def resolve_budget(config: dict[str, Any], device: str) -> int | None:
    budget = parse_budget(config.get("memory_budget", "auto"))
    if budget == "auto":
        total = device_memory(device)
        return int(total * AUTO_FRACTION) if total else None
    return budget


def fit_budget(compiled, config: dict[str, Any]) -> None:
    """Estimate the run's memory into `compiled.memory` (and the budget into
    `compiled.memory_budget`); with `batch_size: auto`, shrink the chunks until it fits."""
    need = estimate(compiled)
    budget = resolve_budget(config, compiled.model.device)
    if budget is not None and need.total > budget and compiled.spec.batch_size == "auto":
        per_example = need.forward // max(compiled.batch_size, 1)
        room = budget - (need.total - need.forward)
        if per_example and room >= per_example:
            compiled.batch_size = max(1, min(compiled.batch_size, room // per_example))
            need = estimate(compiled)
    compiled.memory, compiled.memory_budget = need, budget


def check_budget(compiled) -> None:
    """Raise a ConfigError when the estimate exceeds the budget (called before weights load)."""
    need, budget = compiled.memory, compiled.memory_budget
    if budget is None or need.total <= budget:
        return
    raise ConfigError("the experiment would not fit in memory:", [Issue(
        "over_memory_budget", f"it needs about {human(need.total)} (weights "
        f"{human(need.weights)}, one chunk's forward pass {human(need.forward)}, kept values "
        f"{human(need.kept)}) and the budget is {human(budget)}", "memory_budget",
        hint=_fix(compiled, need))])


def _fix(compiled, need: MemoryEstimate) -> str:
    if need.forward > need.kept and compiled.batch_size > 1:
        return (f"lower batch_size (now {compiled.batch_size}; `auto` fits it to the budget), "
                "or raise the budget: memory_budget=... (null: no check)")
    if need.kept > need.forward:
        return ("save the large values with `save` (streamed to disk) or reduce them (mean over "
                "example) instead of collecting them; or raise memory_budget")
    return ("a smaller foreach grid or shorter prompts, a smaller dtype (model.dtype=bfloat16), "
            "or raise memory_budget")
