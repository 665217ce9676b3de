"""How a generate scope chooses its tokens: greedy unless it asks to sample, with every sampling
setting passed explicitly, seeded per chunk from the run's seed, and recorded in the manifest.

Invariant: the arguments given to `model.generate` are the whole decoding rule (a model's own
`generation_config`, e.g. top_k=50 from transformers' defaults, never fills a gap), and the
same seed and batch size give the same tokens however the run was split into jobs or resumed.
"""

from __future__ import annotations

import hashlib
from typing import Any

# What sampling uses when the scope does not say: plain sampling from the softmax.
DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}   # top_k 0 = no top-k filter


def settings(scope) -> dict[str, Any]:
    """The decoding rule of a generate scope: {do_sample: False} or every sampling setting."""
    if not scope.do_sample:
        return {"do_sample": False}
    return {"do_sample": True, **{key: getattr(scope, key) if getattr(scope, key) is not None
                                  else default for key, default in DEFAULTS.items()}}


def generate_kwargs(scope) -> str:
    """The decoding arguments of `model.generate(...)` as source, e.g. `do_sample=False`."""
    return ", ".join(f"{key}={value!r}" for key, value in settings(scope).items())


def chunk_seed(seed: int, pass_index: int, start: int) -> int:
    """The torch seed of one chunk (pass, first example), derived from the run's seed: chunks
    draw independent streams, and a chunk's draws do not depend on the chunks before it."""
    digest = hashlib.sha256(f"{seed}:{pass_index}:{start}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1   # torch takes up to 2**63 - 1


def generation_record(spec, seed: int) -> dict[str, Any]:
    """The manifest's `generation`: per generate scope, its length, decoding rule and seed."""
    out = {}
    for scope in spec.graph.scopes:
        if scope.kind == "generate":
            out[scope.id] = {"max_new_tokens": scope.max_new_tokens, **settings(scope)}
            if scope.do_sample:
                out[scope.id]["seed"] = {"run": seed, "per_chunk": "nnrun.sampling.chunk_seed"
                                         "(seed, pass, first example)"}
    return {"generation": out} if out else {}
