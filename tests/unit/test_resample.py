"""`{column: name, resample: seed}`: each example's invoke gets another row's value (resample
ablation), from a seeded permutation without fixed points."""

from __future__ import annotations

import pytest

from nnrun.bind import bind
from nnrun.data import load_dataset
from nnrun.errors import ConfigError
from nnrun.graph import build_graph
from nnrun.model_info import info_from_config
from nnrun.refs import resampled_rows
from nnrun.schema import ExperimentSpec
from nnrun.tiny import build_config, build_tokenizer

INFO = info_from_config(build_config("tiny-gpt2"))
WORDS = ["one", "two", "three", "four", "five", "six", "seven"]


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_the_permutation_never_keeps_a_row_and_is_seeded(n):
    rows = resampled_rows(n, 0)
    assert sorted(rows) == list(range(n)) and all(j != i for i, j in enumerate(rows))
    assert rows == resampled_rows(n, 0)
    assert n < 3 or any(resampled_rows(n, s) != rows for s in range(1, 4))


def bound(rows):
    spec = ExperimentSpec.model_validate({"name": "t", "data": {"rows": rows}, "graph": {
        "scopes": [{"id": "t", "kind": "trace", "input": {"column": "p", "resample": 1}}],
        "nodes": [{"id": "r", "op": "read", "site": "logits", "scope": "t"}]}})
    graph = build_graph(spec, INFO)
    return bind(graph, build_tokenizer(), load_dataset(spec.data, None, {}))


def test_each_example_takes_another_rows_prompt():
    rows = [{"p": f"the {w} cat"} for w in WORDS]
    prompts = bound(rows).invokes["t"].prompts
    order = resampled_rows(len(rows), 1)
    assert prompts == tuple(rows[j]["p"] for j in order)


def test_one_row_cannot_be_resampled():
    with pytest.raises(ConfigError) as err:
        bound([{"p": "the cat"}])
    assert [i.code for i in err.value.issues] == ["bad_input"]
