"""The attention kernel: SDPA by default, eager exactly when the graph reads attention weights;
both kernels give the same results within fp32 tolerance, forward and backward; a cached model
of one kernel never serves a run that asked for the other."""

from __future__ import annotations

import pytest
import torch
from test_attribution import atp_config
from test_numerics import patching_config

from nnrun.attention import used_by
from nnrun.errors import ConfigError
from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute


def run_with(config: dict, kernel: str) -> tuple[dict, str]:
    config = {**config, "model": {**config["model"], "attn_implementation": kernel}}
    compiled = compile_program(config)
    model = load_model(compiled.model)
    return execute(compiled, model), used_by(model)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_sdpa_patching_equals_eager(model):
    fast, fast_kernel = run_with(patching_config(model), "auto")
    slow, slow_kernel = run_with(patching_config(model), "eager")
    assert (fast_kernel, slow_kernel) == ("sdpa", "eager")   # the cache kept them apart
    assert (fast["effect"] - slow["effect"]).abs().max().item() <= 1e-5
    assert slow["effect"].std() > 0


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_attribution_backward_through_sdpa_equals_eager(model):
    fast, fast_kernel = run_with(atp_config(model), "auto")
    slow, _ = run_with(atp_config(model), "eager")
    assert fast_kernel == "sdpa"
    for name in ("atp_heads", "atp_resid"):
        assert torch.isfinite(fast[name]).all()
        assert (fast[name] - slow[name]).abs().max().item() <= 1e-5, name


def pattern_config(kernel: str) -> dict:
    return {"format": 1, "name": "t",
            "graph": {"scopes": [{"id": "t", "kind": "trace", "input": "the cat sat on the mat"}],
                      "nodes": [{"id": "p", "op": "read", "site": "attention_pattern",
                                 "layer": 0, "scope": "t"}, {"id": "s", "op": "save"}],
                      "edges": [{"src": "p", "dst": "s"}]},
            "model": {"name": "tiny-gpt2", "path": "builtin:tiny-gpt2",
                      "attn_implementation": kernel}}


def test_reading_attention_weights_switches_auto_to_eager_and_says_so(capsys):
    compiled = compile_program(pattern_config("auto"))
    assert compiled.model.attn_implementation == "eager"
    assert "eager attention for this run: node `p`" in capsys.readouterr().err
    values = execute(compiled, load_model(compiled.model))
    assert torch.allclose(values["p"].sum(-1), torch.ones(()))


def test_explicit_sdpa_with_attention_weights_is_a_located_error():
    with pytest.raises(ConfigError) as err:
        compile_program(pattern_config("sdpa"))
    issue = err.value.issues[0]
    assert (issue.code, issue.path, issue.node) == ("attention_weights_need_eager",
                                                    "model.attn_implementation", "p")
