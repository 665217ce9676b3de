"""Logit lens, extended: the top-k tokens per layer × position (`topk_tokens` → `table`) are the
softmax top-k of the lens logits, written as one CSV/JSON row per cell; on the demo model the
answer is the last layer's top token at the last position."""

from __future__ import annotations

import pytest
import torch
from method_helpers import experiment_on_demo

from nnrun.models import load_model
from nnrun.nodes.table import table_rows
from nnrun.pipeline import compile_program
from nnrun.run import execute
from nnrun.tiny import reference_model

PROMPT = "the eiffel tower is in the city of"


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_topk_tokens_are_the_softmax_top_k_of_the_lens(model):
    graph = {"scopes": [{"id": "t", "kind": "trace", "input": PROMPT}],
             "nodes": [{"id": "lens", "op": "logit_lens", "layer": "all", "position": "all",
                        "scope": "t"},
                       {"id": "top", "op": "topk_tokens", "k": 3},
                       {"id": "s1", "op": "save"}, {"id": "s2", "op": "table"}],
             "edges": [{"src": "lens", "dst": "top.logits"}, {"src": "lens", "dst": "s1"},
                       {"src": "top", "dst": "s2"}]}
    compiled = compile_program({"format": 1, "name": "t", "graph": graph,
                                "model": {"name": model, "path": f"builtin:{model}"}})
    got = execute(compiled, load_model(compiled.model))
    assert compiled.graph.axes["top"] == ("layer", "example", "position", "k")
    _, tok = reference_model(model)
    probs, ids = got["lens"].softmax(-1).topk(3, dim=-1)          # (layer, ex, position, k)
    want = [[[[[tok.decode([int(i)]), round(float(p), 6)] for p, i in zip(pp, ii)]
               for pp, ii in zip(p_ex, i_ex)] for p_ex, i_ex in zip(p_l, i_l)]
             for p_l, i_l in zip(probs, ids)]
    assert got["top"] == want
    assert len({cell[0] for row in want[0][0] for cell in row}) > 1   # not one token everywhere


def test_table_rows_carry_the_axis_labels():
    value = [[["a", 0.5], ["b", 0.25]], [["c", 0.75], ["d", 0.125]]]       # (position, k)
    rows = table_rows(value, ("position", "k"), {"position": ["0:the", "1:cat"],
                                                 "k": ["1", "2"]})
    assert rows[1] == {"position": "0:the", "k": "2", "token": "b", "probability": 0.25}
    assert [r["value"] for r in table_rows(torch.tensor([1.5, 2.5]), ("layer",), {})] == [1.5,
                                                                                        2.5]


def test_logit_lens_table_on_the_demo_model():
    got = experiment_on_demo("logit_lens")
    top = got["top_tokens"]                                 # (layer, example, position, k)
    assert top[-1][0][-1][0][0] == "russian"                # last layer, last position: top 1
    assert top[0][0][-1][0][0] != "russian"                 # ... but not yet after layer 0
    prob = got["answer_prob_all"][:, 0, -1]                 # (layer,) at the last position
    assert prob[-1] > 0.5 and prob[0] < prob[-1]
