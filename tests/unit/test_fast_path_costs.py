"""The cost rules of the fast paths (nnrun.fastpath.prefix_pays, own_trace_pays) against the
cases measured on this project's CPU (benchmarks/RESULTS.md): each must pick the faster form."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nnrun.fastpath import own_trace_pays, prefix_pays

SHAPES = {"tiny": SimpleNamespace(n_layers=4, hidden_size=128, vocab_size=512),
          "small": SimpleNamespace(n_layers=6, hidden_size=384, vocab_size=8192),
          "gpt2": SimpleNamespace(n_layers=12, hidden_size=768, vocab_size=50257)}


def pays(shape: str, points_per_layer: int, tokens: int, examples: int) -> bool:
    info = SHAPES[shape]
    layers = [layer for layer in range(info.n_layers) for _ in range(points_per_layer)]
    return prefix_pays(info, layers, 24.0 * info.hidden_size ** 2 * tokens * examples)


@pytest.mark.parametrize("shape, points, tokens, examples, faster", [
    # residual patching, every layer x position of one prompt pair (bench_floor.py)
    ("gpt2", 16, 16, 1, "prefix"),     # 0.35x against the fold's 0.58x
    ("small", 16, 16, 1, "prefix"),    # 0.55x against 0.88x
    ("small", 128, 128, 1, "prefix"),  # 0.39x against 0.71x
    ("tiny", 16, 16, 1, "prefix"),     # 0.67x against 1.12x
    ("tiny", 8, 8, 1, "fold"),         # 1.81x against 1.34x
    # a whole site patched at every layer, one point per layer (bench_shared_trace.py)
    ("gpt2", 1, 16, 1, "fold"),        # a trace per layer: 2.9x against 1.4x
    ("small", 1, 16, 1, "fold"),       # 3.8x against 1.3x
    ("small", 1, 16, 16, "prefix"),    # 0.61x against the shared trace's 0.79x
])
def test_the_rule_picks_the_form_measured_faster(shape, points, tokens, examples, faster):
    assert pays(shape, points, tokens, examples) == (faster == "prefix")


def test_more_examples_per_chunk_only_make_prefix_reuse_pay_more():
    for shape in SHAPES:
        answers = [pays(shape, 1, 16, n) for n in (1, 2, 4, 8, 16, 64, 256)]
        assert answers == sorted(answers)   # False ... False, True ... True
        assert answers[-1]


@pytest.mark.parametrize("shape, points, faster", [
    # attention and MLP outputs patched at every layer, two foreach invokes of one trace, one
    # prompt pair (bench_shared_trace.py): the shared trace against a trace of its own each
    ("tiny", 4, "shared"),     # 1.53x against 1.84x
    ("small", 6, "shared"),    # 0.98x against 1.07x
    ("gpt2", 12, "shared"),    # 0.67x against 0.74x
    # many points (a layer x position grid): the invokes saved (~0.25 ms each, the tiny model's
    # residual sweeps folded or not) outweigh one more forward pass (rule, not measured shared)
    ("tiny", 64, "own"),
    ("small", 96, "own"),
])
def test_a_fold_leaves_a_shared_trace_only_when_it_saves_more_than_a_forward_pass(
        shape, points, faster):
    assert own_trace_pays(SHAPES[shape], points) == (faster == "own")
