"""How many CPU threads torch uses for a run: the `threads` setting, `auto` by default.

Invariant: `auto` depends only on the compiled plan's size, the cores this process may use and
how busy they are: one thread when a forward pass is too small for parallel work to pay for
waking a second thread (tiny tensors: the overhead dominates); for a big one, every usable core
that other processes leave free (a thread on a core another process holds makes every parallel
region wait for it: 2 threads on a busy 2-core machine ran the demo patching 2-4x slower than 1).
A model on a GPU gets torch's default (its CPU work is only bookkeeping). The number used is
recorded in the manifest.
"""

from __future__ import annotations

import os
from typing import Any

from nnrun.errors import ConfigError, Issue

# Forward-pass size (rows x tokens x hidden x layers) from which a second thread paid off in
# benchmarks/bench_overheads.py threads (benchmarks/RESULTS.md, "Overheads").
PARALLEL_WORK = 8_000_000


def parse_threads(value: Any) -> int | None:
    """`auto` → None; a positive int → itself.

    Raises:
        ConfigError: anything else.
    """
    if value == "auto" or value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ConfigError("the run settings have problems:", [Issue(
        "invalid_threads", f"threads must be `auto` or a positive integer, found `{value}`",
        "threads", hint="e.g. threads=1 (small models), threads=auto (default)")])


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def forward_work(compiled) -> int:
    """rows x tokens x hidden x layers of the biggest forward pass of one chunk."""
    binding, info = compiled.binding, compiled.graph.info
    invokes = list(binding.invokes.values())
    rows = max((len(b.points) or 1 for b in invokes), default=1) * compiled.batch_size
    tokens = max((max(b.lengths) for b in invokes if b.lengths), default=1)
    width = (info.hidden_size or 1) * max(info.n_layers, 1) if info else 1
    return rows * tokens * width


def choose_threads(setting: Any, compiled) -> int:
    """The thread count for this run (auto: see the module invariant)."""
    chosen = parse_threads(setting)
    if chosen is not None:
        return chosen
    if not str(compiled.model.device).startswith("cpu"):
        import torch

        return torch.get_num_threads()
    if forward_work(compiled) < PARALLEL_WORK:
        return 1
    return free_cores(usable_cores())


def free_cores(cores: int) -> int:
    """Cores not held by other processes: the 1-minute load average counts this process too
    (it is running now), so what exceeds one runnable task is someone else's."""
    try:
        others = max(0.0, os.getloadavg()[0] - 1.0)
    except OSError:  # no load average on this platform
        return cores
    return max(1, min(cores, round(cores - others)))


def apply_threads(setting: Any, compiled) -> int:
    """Set torch's intra-op threads for this run; return the number set."""
    import torch

    n = choose_threads(setting, compiled)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
