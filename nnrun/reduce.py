"""Reductions over the `example` axis that run across chunks: init → update per chunk → finalize.

Invariant: a reducer sees every example exactly once and its result does not depend on how the
examples were split into chunks (up to float rounding: moments are merged in float64 with Chan's
parallel formula). Cells that are NaN (positions past the end of a shorter prompt) are skipped,
so every cell is a statistic over the examples that have it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

Statistic = Literal["mean", "std", "sem", "count"]


class Reducer(Protocol):
    """What the runner needs from a cross-chunk reduction."""

    def update(self, chunk: torch.Tensor) -> None: ...

    def finalize(self) -> torch.Tensor: ...


@dataclass
class Moments:
    """Running count, mean and sum of squared deviations per cell over the `example` dim."""

    dim: int                          # where the example axis is in each chunk
    statistic: Statistic = "mean"
    n: torch.Tensor | None = field(default=None, repr=False)
    mean: torch.Tensor | None = field(default=None, repr=False)
    m2: torch.Tensor | None = field(default=None, repr=False)

    def update(self, chunk: torch.Tensor) -> None:
        x = torch.as_tensor(chunk).detach().to("cpu", torch.float64).movedim(self.dim, 0)
        present = ~x.isnan()
        n_b = present.sum(0).to(torch.float64)                          # (cells...)
        mean_b = torch.where(n_b > 0, x.nan_to_num().sum(0) / n_b.clamp(min=1), 0.0)
        m2_b = torch.where(present, (x - mean_b) ** 2, 0.0).sum(0)
        if self.n is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        total = self.n + n_b
        delta = mean_b - self.mean
        weight = torch.where(total > 0, n_b / total.clamp(min=1), 0.0)
        self.mean = self.mean + delta * weight
        self.m2 = self.m2 + m2_b + delta ** 2 * self.n * weight
        self.n = total

    def finalize(self) -> torch.Tensor:
        if self.n is None:
            raise ValueError("no examples were reduced")
        return self.result(self.statistic)

    def result(self, statistic: Statistic) -> torch.Tensor:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        if statistic == "count":
            return self.n.to(torch.float32)
        if statistic == "mean":
            return torch.where(self.n > 0, self.mean, nan).to(torch.float32)
        std = torch.where(self.n > 1, (self.m2 / (self.n - 1).clamp(min=1)).sqrt(), nan)
        if statistic == "sem":
            std = std / self.n.clamp(min=1).sqrt()
        return std.to(torch.float32)
