"""Functions for experiments/custom_function.yaml (the `function` node: trusted code, run only
with `allow_functions=true`). Each takes tensors whose last axis is `hidden` and returns one
tensor without it."""

import torch


def resid_norm(resid: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each residual-stream vector: (..., hidden) -> (...)."""
    return resid.float().norm(dim=-1)


def relative_distance(clean: torch.Tensor, corrupt: torch.Tensor) -> torch.Tensor:
    """How far the corrupted run's residual stream is from the clean one's, relative to the
    clean one's norm: |corrupt - clean| / |clean|, (..., hidden) -> (...)."""
    clean, corrupt = clean.float(), corrupt.float()
    return (corrupt - clean).norm(dim=-1) / clean.norm(dim=-1)
