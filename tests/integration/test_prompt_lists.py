"""Without `data`, prompt lists (`input: [...]`) are the examples: one prompt per example, every
list the same length. (A list used to run its first prompt only, silently.)"""

from __future__ import annotations

import pytest
import torch

from nnrun.errors import ConfigError
from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute

PROMPTS = ["the eiffel tower is in the city of", "the colosseum is in", "a big red dog sat"]


def config(*inputs) -> dict:
    scopes = [{"id": f"run_{i}", "kind": "trace", "input": given} for i, given in
              enumerate(inputs)]
    nodes = [{"id": f"logits_{i}", "op": "read", "site": "logits", "position": "last",
              "scope": f"run_{i}"} for i in range(len(inputs))]
    return {"format": 1, "name": "lists", "model": {"name": "tiny-gpt2",
                                                     "path": "builtin:tiny-gpt2"},
            "graph": {"scopes": scopes, "nodes": nodes + [{"id": "out", "op": "save"}],
                      "edges": [{"src": "logits_0", "dst": "out"}]}}


def test_every_prompt_of_a_list_is_an_example():
    compiled = compile_program(config(PROMPTS, "the cat"))
    assert compiled.binding.n_examples == 3
    lm = load_model(compiled.model)
    got = execute(compiled, lm)["logits_0"]                          # (example, vocab)
    want = torch.stack([lm._module(**lm.tokenizer(p, return_tensors="pt")).logits[0, -1]
                        for p in PROMPTS])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_lists_of_different_lengths_are_refused_naming_the_scope():
    with pytest.raises(ConfigError) as err:
        compile_program(config(PROMPTS, PROMPTS[:2]))
    [issue] = err.value.issues
    assert issue.code == "bad_input" and issue.node == "run_1"
    assert issue.path == "graph.scopes[1].input" and "2 prompts" in issue.message
