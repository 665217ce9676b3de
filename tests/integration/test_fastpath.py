"""The compiler's fast paths (nnrun.fastpath) give the same numbers as the plain program, and are
not taken where they could change them.

The plain form (`fast_paths: false`) is itself checked against plain torch hooks in
test_numerics.py and the method tests; here both forms run on the same model and must agree.
"""

from __future__ import annotations

import copy

import pytest
import torch

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute

CLEAN = "the eiffel tower is in the city of"
CORRUPT = "the colosseum tower is in the city of"


def sweep(model: str, site: str = "layer_output", foreach=None, extra_nodes=(),
          logits_position="last") -> dict:
    """Patch the clean run's `site` into the corrupt run at every point of `foreach`."""
    foreach = foreach or {"layer": "all", "position": "all"}
    head = {"head": "{head}"} if "head" in foreach else {}
    graph = {
        "scopes": [{"id": "clean_run", "kind": "trace", "input": CLEAN},
                   {"id": "patched", "kind": "trace"},
                   {"id": "point", "kind": "invoke", "parent": "patched", "input": CORRUPT,
                    "foreach": foreach}],
        "nodes": [{"id": "clean", "op": "read", "site": site, "layer": "all",
                   "scope": "clean_run"},
                  {"id": "patch", "op": "write", "site": site, "layer": "{layer}",
                   "position": "{position}", "mode": "patch", "scope": "point", **head},
                  *extra_nodes,
                  {"id": "logits", "op": "read", "site": "logits", "position": logits_position,
                   "scope": "point"},
                  {"id": "out", "op": "save"}],
        "edges": [{"src": "clean", "dst": "patch.value"}, {"src": "logits", "dst": "out"}]}
    return {"format": 1, "name": "fast", "graph": graph,
            "model": {"name": model, "path": f"builtin:{model}"}}


def both(config: dict):
    """The experiment compiled with and without the fast paths."""
    fast = compile_program(copy.deepcopy(config))
    plain = compile_program({**copy.deepcopy(config), "fast_paths": False})
    return fast, plain


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama", "tiny-neox"])
@pytest.mark.parametrize("site", ["layer_output", "layer_input", "attention_output",
                                  "mlp_output"])
def test_prefix_reuse_equals_the_plain_program(model, site):
    fast, plain = both(sweep(model, site))
    trace = fast.program.schedule.traces[-1]
    assert trace.prefix is not None and trace.last_logits
    assert "skip(" in fast.program.source and "skip(" not in plain.program.source
    lm = load_model(fast.model)
    got, want = execute(fast, lm)["logits"], execute(plain, lm)["logits"]
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_prefix_reuse_of_heads_equals_the_plain_program():
    fast, plain = both(sweep("tiny-gpt2", "attention_heads",
                             {"layer": "all", "head": "all", "position": "all"}))
    assert fast.program.schedule.traces[-1].prefix is not None
    lm = load_model(fast.model)
    torch.testing.assert_close(execute(fast, lm)["logits"], execute(plain, lm)["logits"],
                               rtol=0, atol=1e-5)


def test_last_logits_only_changes_nothing_for_a_single_run():
    config = {"format": 1, "name": "one", "model": {"name": "tiny-gpt2",
                                                     "path": "builtin:tiny-gpt2"},
              "graph": {"scopes": [{"id": "run", "kind": "trace", "input": CORRUPT}],
                        "nodes": [{"id": "logits", "op": "read", "site": "logits",
                                   "position": "last", "scope": "run"},
                                  {"id": "out", "op": "save"}],
                        "edges": [{"src": "logits", "dst": "out"}]}}
    fast, plain = both(config)
    assert "logits_to_keep=1" in fast.program.source
    assert "logits_to_keep" not in plain.program.source
    lm = load_model(fast.model)
    # the same unembedding of the same vector; a one-row matmul may round differently
    torch.testing.assert_close(execute(fast, lm)["logits"], execute(plain, lm)["logits"],
                               rtol=0, atol=1e-6)


def _fast_flags(config: dict) -> tuple[bool, bool]:
    trace = compile_program(config).program.schedule.traces[-1]
    return trace.prefix is not None, trace.last_logits


def test_no_prefix_reuse_when_the_point_edits_an_earlier_block():
    ablate = {"id": "ablate", "op": "write", "site": "mlp_output", "layer": 0, "constant": 0.0,
              "scope": "point"}
    assert _fast_flags(sweep("tiny-gpt2", extra_nodes=[ablate])) == (False, True)


def test_no_prefix_reuse_when_layer_is_not_the_outer_loop():
    config = sweep("tiny-gpt2", foreach={"position": "all", "layer": "all"})
    assert _fast_flags(config) == (False, True)


def test_all_logits_are_computed_when_a_read_needs_every_position():
    assert _fast_flags(sweep("tiny-gpt2", logits_position="all")) == (True, False)


def test_no_prefix_reuse_when_the_sweep_skips_too_little():
    # one position at layer 1 of 2: the prefix run would cost more than the blocks it skips
    config = sweep("tiny-gpt2", foreach={"layer": [1], "position": [-1]})
    assert _fast_flags(config) == (False, True)


def test_fast_paths_false_compiles_the_plain_form():
    config = {**sweep("tiny-gpt2"), "fast_paths": False}
    assert _fast_flags(config) == (False, False)
