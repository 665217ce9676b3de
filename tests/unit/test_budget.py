"""The memory budget: a run that would not fit is refused before weights load; `batch_size: auto`
shrinks its chunks to fit; the estimate's terms follow the experiment's shape."""

from __future__ import annotations

import pytest

from nnrun.budget import check_budget, estimate, parse_budget
from nnrun.errors import ConfigError
from nnrun.pipeline import compile_program

PROMPTS = ["the cat sat on the mat", "a dog ran on the mat"] * 8


def config(batch_size="auto", budget="auto", grid=True) -> dict:
    foreach = {"foreach": {"layer": "all", "position": "all"}} if grid else {}
    graph = {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "p"}, **foreach}],
             "nodes": [{"id": "r", "op": "read", "site": "logits", "position": "last",
                        "scope": "t"}, {"id": "s", "op": "save"}],
             "edges": [{"src": "r", "dst": "s"}]}
    if grid:  # a foreach needs an invoke scope
        graph["scopes"] = [{"id": "tr", "kind": "trace"},
                           {"id": "t", "kind": "invoke", "parent": "tr",
                            "input": {"column": "p"}, **foreach}]
    return {"format": 1, "name": "b", "batch_size": batch_size, "memory_budget": budget,
            "data": {"rows": [{"p": p} for p in PROMPTS]}, "graph": graph,
            "model": {"path": "builtin:tiny-gpt2"}}


@pytest.mark.parametrize("text, want", [
    ("16GB", 16 * 10**9), ("12 GiB", 12 * 2**30), ("1.5MB", 1_500_000), (4096, 4096),
    ("auto", "auto"), (None, None)])
def test_budget_values(text, want):
    assert parse_budget(text) == want


@pytest.mark.parametrize("text", ["lots", "-1GB", 0, True, "12 parsecs"])
def test_bad_budget_values_are_config_errors(text):
    with pytest.raises(ConfigError) as info:
        parse_budget(text)
    assert info.value.issues[0].code == "invalid_memory_budget"


def test_auto_batches_shrink_to_fit_the_budget():
    roomy = compile_program(config())
    assert roomy.batch_size == len(PROMPTS)
    per_example = roomy.memory.forward // roomy.batch_size
    fixed = roomy.memory.total - roomy.memory.forward
    tight = compile_program(config(budget=fixed + 3 * per_example))
    assert tight.batch_size == 3
    check_budget(tight)  # fits now


def test_a_fixed_batch_that_does_not_fit_is_refused_with_the_numbers():
    roomy = compile_program(config(batch_size=16))
    compiled = compile_program(config(batch_size=16, budget=roomy.memory.total - 1))
    with pytest.raises(ConfigError) as info:
        check_budget(compiled)
    issue = info.value.issues[0]
    assert (issue.code, issue.path) == ("over_memory_budget", "memory_budget")
    assert "lower batch_size (now 16" in issue.hint


def test_the_forward_term_grows_with_the_grid_and_the_batch():
    one = estimate(compile_program(config(batch_size=1, grid=False)))
    grid = estimate(compile_program(config(batch_size=1)))
    batch = estimate(compile_program(config(batch_size=4)))
    assert grid.forward > one.forward and batch.forward == 4 * grid.forward
    assert grid.weights == one.weights > 0
    assert grid.streamed > one.streamed  # `save` streams: not held, but recorded


def test_no_budget_means_no_check():
    compiled = compile_program(config(batch_size=16, budget=None))
    assert compiled.memory_budget is None
    check_budget(compiled)
