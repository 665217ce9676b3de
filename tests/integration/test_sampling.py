"""Generation's decoding rule on tiny GPT-2: greedy (the default) equals transformers' greedy
`generate`; `do_sample` with temperature, top_k and top_p equals transformers' `generate` with the
same settings after the same seed (one chunk: `chunk_seed(seed, 0, 0)`); the same seed gives the
same tokens, another seed others; the settings and the seed reach the manifest."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from nnrun_inprocess import run_nnrun

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute
from nnrun.sampling import chunk_seed
from nnrun.tiny import reference_model

PROMPTS = ["the eiffel tower is in the city of", "the louvre tower was in the city of",
           "the kremlin tower is in the country of"]   # 8 tokens each: no padding
STEPS = 6
SAMPLING = {"do_sample": True, "temperature": 0.8, "top_k": 20, "top_p": 0.9}


def config(**decoding) -> dict:
    scopes = [{"id": "gen", "kind": "generate", "max_new_tokens": STEPS, **decoding},
              {"id": "inv", "kind": "invoke", "parent": "gen", "input": {"column": "prompt"}}]
    nodes = [{"id": "tokens", "op": "generated", "scope": "inv"},
             {"id": "save_tokens", "op": "save"}]
    return {"format": 1, "name": "t", "data": {"rows": [{"prompt": p} for p in PROMPTS]},
            "batch_size": len(PROMPTS), "graph": {
        "scopes": scopes, "nodes": nodes, "edges": [{"src": "tokens", "dst": "save_tokens"}]},
        "model": {"name": "tiny-gpt2", "path": "builtin:tiny-gpt2"}}


@functools.lru_cache(maxsize=1)
def reference():
    return reference_model("tiny-gpt2")


def hf_generate(seed: int | None = None, **decoding) -> torch.Tensor:
    """transformers' generate on the same batch: (example, step) token ids."""
    hf, tok = reference()
    ids = torch.tensor([tok(p)["input_ids"] for p in PROMPTS])
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=STEPS,
                          min_new_tokens=STEPS, pad_token_id=tok.pad_token_id, **decoding)
    return out[:, -STEPS:]


def nnrun_tokens(seed: int = 0, **decoding) -> torch.Tensor:
    compiled = compile_program(config(**decoding))
    return execute(compiled, load_model(compiled.model), seed=seed)["tokens"]


def test_greedy_is_the_default_and_equals_transformers():
    compiled = compile_program(config())
    assert "do_sample=False, **backend)" in compiled.program.source
    assert torch.equal(nnrun_tokens(), hf_generate(do_sample=False))


def test_seeded_sampling_equals_transformers_with_the_same_seed():
    compiled = compile_program(config(**SAMPLING))
    assert "do_sample=True, temperature=0.8, top_k=20, top_p=0.9" in compiled.program.source
    got = nnrun_tokens(seed=7, **SAMPLING)
    assert torch.equal(got, hf_generate(seed=chunk_seed(7, 0, 0), **SAMPLING))
    assert torch.equal(nnrun_tokens(seed=7, **SAMPLING), got)         # reproducible
    assert not torch.equal(nnrun_tokens(seed=8, **SAMPLING), got)     # the seed matters
    assert not torch.equal(got, hf_generate(do_sample=False))         # it did sample


def test_unset_settings_are_passed_explicitly():
    """`do_sample: true` alone samples from the plain softmax: transformers' default top_k=50
    (and any generation_config of the model) must not filter it unseen."""
    compiled = compile_program(config(do_sample=True))
    assert "do_sample=True, temperature=1.0, top_k=0, top_p=1.0" in compiled.program.source
    got = nnrun_tokens(seed=3, do_sample=True)
    assert torch.equal(got, hf_generate(seed=chunk_seed(3, 0, 0), do_sample=True,
                                        temperature=1.0, top_k=0, top_p=1.0))


def run_generation(tmp_path, scope: dict, *args: str):
    """`nnrun experiment=gen model=tiny_gpt2 ARGS` on the generation experiment with `scope`'s
    settings, written as experiments/gen.yaml (the run directory: tmp_path/run)."""
    import yaml

    experiments = tmp_path / "experiments"
    experiments.mkdir()
    spec = config(**scope)
    spec.pop("model")
    (experiments / "gen.yaml").write_text(yaml.safe_dump(spec))
    return run_nnrun(["experiment=gen", "model=tiny_gpt2", *args], cwd=tmp_path,
                     run_dir=tmp_path / "run")


@pytest.mark.parametrize("scope, code, exit_code", [
    ({"temperature": 0.5}, "sampling_without_do_sample", 11),   # a graph check
    ({"do_sample": True, "temperature": 0}, "invalid_value", 10),
    ({"do_sample": True, "top_p": 1.5}, "invalid_value", 10),
    ({"do_sample": True, "top_p": 0}, "invalid_value", 10),
    ({"do_sample": True, "top_k": 0}, "invalid_value", 10),
    ({"do_sample": "yes"}, "invalid_value", 10),
])
def test_bad_sampling_settings_are_located_errors(tmp_path, scope, code, exit_code):
    result = run_generation(tmp_path, scope, "stage=validate")
    assert result.code == exit_code, result.explain()
    assert f"[{code}]" in result.stderr and "graph.scopes[0]" in result.stderr
    assert "Traceback" not in result.stderr


def test_sampling_settings_on_a_trace_are_refused(tmp_path):
    from nnrun.errors import GraphError

    spec = config()
    spec["graph"]["scopes"].append({"id": "t", "kind": "trace", "input": "the city of",
                                    "top_k": 5})
    with pytest.raises(GraphError) as err:
        compile_program(spec)
    assert [i.code for i in err.value.issues] == ["illegal_field"]


def test_the_manifest_records_the_settings_and_the_seed(tmp_path):
    result = run_generation(tmp_path, SAMPLING, "seed=7")
    assert result.code == 0, result.explain()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    record = manifest["generation"]["gen"]
    assert record["max_new_tokens"] == STEPS and record["seed"]["run"] == 7
    assert {k: record[k] for k in SAMPLING} == SAMPLING
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "run" / "tensors" / "save_tokens.safetensors")["save_tokens"]
    assert torch.equal(saved, hf_generate(seed=chunk_seed(7, 0, 0), **SAMPLING))
