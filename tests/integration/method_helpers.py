"""Shared by the method tests: the built-in experiments on the demo model, in process, and where
the tiny models keep the input of their attention output projections."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute

REPO = Path(__file__).resolve().parents[2]
# tiny model -> (its blocks, the output projection inside a block): heads are its input
PROJ = {"tiny-gpt2": ("transformer.h", "attn.c_proj"),
        "tiny-llama": ("model.layers", "self_attn.o_proj")}
N_HEADS, HEAD_DIM = 4, 8   # both tiny models


def experiment_on_demo(name: str, limit: int | None = None, **data) -> dict:
    """experiments/<name>.yaml on the demo model, in process (optionally its first `limit` rows):
    every node's value by id."""
    path = REPO / "experiments" / f"{name}.yaml"
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    config["model"] = {"name": "demo", "path": "builtin:demo"}
    if limit or data:
        config["data"] = {**config["data"], **data, **({"limit": limit} if limit else {})}
    compiled = compile_program(config, path)
    return execute(compiled, load_model(compiled.model))
