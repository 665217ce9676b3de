"""Named outputs end to end on tiny GPT-2, through the `nnrun` command (in process): `topk`'s
`values` and `indices`, picked with `src: top.values` / `src: top.indices`, equal `torch.topk` of
the logits plain transformers computes, in the model and after it; a bare `src: top` still reads
`indices` (or what `output` names); each output has its own variable (a user's node `top_values`
keeps its name); the saved files say which output they hold; the graph picture labels the edges."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import yaml
from nnrun_inprocess import run_nnrun
from safetensors import safe_open

from nnrun.tiny import reference_model

PROMPTS = ["the eiffel tower is in the city of", "the louvre was in the city of",
           "mary gave the cat a"]           # different lengths: left padding in one batch
K = 3


def experiment() -> dict:
    nodes = [{"id": "logits", "op": "read", "site": "logits", "position": "last", "scope": "t"},
             {"id": "top", "op": "topk", "k": K, "scope": "t"},             # in the model
             {"id": "after", "op": "topk", "k": K, "output": "values"},    # after the model
             {"id": "top_values", "op": "scale", "factor": 1.0},   # an id the output's name wants
             *({"id": f"save_{name}", "op": "save"}
               for name in ("values", "indices", "bare", "after_values", "after_bare", "scaled"))]
    edges = [{"src": "logits", "dst": "top"}, {"src": "logits", "dst": "after"},
             {"src": "top.values", "dst": "save_values"},
             {"src": "top.indices", "dst": "save_indices"},
             {"src": "top", "dst": "save_bare"},
             {"src": "after.values", "dst": "save_after_values"},
             {"src": "after", "dst": "save_after_bare"},
             {"src": "top.values", "dst": "top_values"}, {"src": "top_values", "dst": "save_scaled"}]
    return {"format": 1, "name": "top", "data": {"rows": [{"prompt": p} for p in PROMPTS]},
            "batch_size": 2,                # two chunks: outputs are streamed like any value
            "graph": {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "prompt"}}],
                      "nodes": nodes, "edges": edges}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    project = tmp_path_factory.mktemp("named_outputs")
    (project / "experiments").mkdir()
    (project / "experiments" / "top.yaml").write_text(yaml.safe_dump(experiment()))
    result = run_nnrun(["experiment=top", "model=tiny_gpt2"], cwd=project,
                       run_dir=project / "run")
    assert result.code == 0, result.explain()
    return project / "run"


@functools.lru_cache(maxsize=1)
def reference() -> torch.return_types.topk:
    """torch.topk of the last position's logits, each prompt alone through transformers."""
    hf, tok = reference_model("tiny-gpt2")
    with torch.no_grad():
        last = [hf(torch.tensor([tok(p)["input_ids"]])).logits[0, -1] for p in PROMPTS]
    return torch.stack(last).topk(K, dim=-1)


def saved(run, name: str) -> tuple[torch.Tensor, dict[str, str]]:
    with safe_open(run / "tensors" / f"{name}.safetensors", "pt") as f:
        return f.get_tensor(name), f.metadata()


def test_values_and_indices_equal_torch_topk(run):
    want = reference()
    for prefix in ("save", "save_after"):
        values, _ = saved(run, f"{prefix}_values")
        assert values.shape == (len(PROMPTS), K)
        assert (values - want.values).abs().max() <= 1e-5
    indices, meta = saved(run, "save_indices")
    assert indices.dtype == torch.int64 and torch.equal(indices, want.indices)
    assert (meta["node"], meta["op"], meta["axes"]) == ("top.indices", "topk", "example,k")


def test_a_bare_source_keeps_reading_the_default_output(run):
    want = reference()
    assert torch.equal(saved(run, "save_bare")[0], want.indices)       # output: indices
    assert (saved(run, "save_after_bare")[0] - want.values).abs().max() <= 1e-5


def test_each_output_has_its_own_name_in_the_program(run):
    program = (run / "program.py").read_text()
    assert "top = logits.topk(3, dim=-1)" in program
    assert "top_values_1 = top.values" in program      # `top_values`: the user's node
    assert "top_indices = top.indices" in program
    assert (saved(run, "save_scaled")[0] - reference().values).abs().max() <= 1e-5


def test_the_manifest_and_the_picture_name_the_outputs(run):
    manifest = json.loads((run / "manifest.json").read_text())
    tensors = {a["path"]: a for a in manifest["artifacts"] if a["kind"] == "tensor"}
    assert tensors["tensors/save_values.safetensors"]["axes"] == ["example", "k"]
    svg = (run / "graph.svg").read_text()
    assert "values" in svg and "indices" in svg and ">top.values<" not in svg
