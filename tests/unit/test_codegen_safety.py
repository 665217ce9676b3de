"""User strings never become code: prompts, answers, match texts and titles reach `program.py`
only as data (or not at all), so hostile strings give the same program as benign ones."""

from __future__ import annotations

import ast

from nnrun.bind import bind
from nnrun.codegen import generate
from nnrun.data import Dataset
from nnrun.graph import build_graph
from nnrun.model_info import info_from_config
from nnrun.schema import ExperimentSpec
from nnrun.tiny import build_config, build_tokenizer

INFO = info_from_config(build_config("tiny-gpt2"))
TOKENIZER = build_tokenizer()
HOSTILE = '"""\nimport os; os.system("touch /tmp/pwned")\n#\'\\ ünï'


def program(text: str, title: str):
    spec = ExperimentSpec.model_validate({"name": "t", "description": text, "params": {"x": text},
        "graph": {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "prompt"}}],
                  "nodes": [{"id": "l", "op": "read", "site": "logits",
                             "position": {"match": " city"}, "scope": "t"},
                            {"id": "d", "op": "logit_diff", "answer": {"column": "a"},
                             "foil": " rome"},
                            {"id": "p", "op": "plot_line", "x": "example", "title": title}],
                  "edges": [{"src": "l", "dst": "d.logits"}, {"src": "d", "dst": "p"}]}})
    graph = build_graph(spec, INFO)
    rows = ({"prompt": "the city of paris", "a": " paris"},)
    return generate(graph, bind(graph, TOKENIZER, Dataset(rows, "inline"))).source


def test_hostile_strings_give_the_same_program():
    benign, hostile = program("ok", "a title"), program(HOSTILE, HOSTILE)
    assert benign == hostile
    assert ast.dump(ast.parse(benign)) == ast.dump(ast.parse(hostile))
    for text in ("the city of paris", "paris", "rome", "city", HOSTILE):
        assert text not in hostile
