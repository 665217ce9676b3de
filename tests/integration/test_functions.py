"""The `function` node end to end on tiny GPT-2, through the `nnrun` command (in process): a user's
function gives what plain torch hooks give; it runs only with `allow_functions=true`; validate and
plan never execute the file; the manifest holds its sha256; the exported script carries its source
and runs without the file; a wrong result shape or a failing function is a RunError naming the
node."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys

import pytest
import torch
import yaml
from nnrun_inprocess import run_nnrun
from safetensors.torch import load_file

from nnrun.tiny import reference_model

PROMPTS = ["the eiffel tower is in the city of", "the louvre tower was in the city of",
           "the kremlin tower is in the country of"]
FUNCTIONS = '''"""Test functions."""
import pathlib

import torch

pathlib.Path(MARKER).write_text("the file was executed")   # a top-level side effect


def resid_norm(resid):
    return resid.float().norm(dim=-1)


def norm_ratio(a, b):
    return a.norm(dim=-1) / b.norm(dim=-1)


def wrong_shape(resid):
    return resid[:, :2]


def fails(resid):
    raise KeyError("no such thing")
'''


def experiment(fn: str = "functions/mine.py:resid_norm", axes=("example",), extra=()) -> dict:
    nodes = [{"id": "resid", "op": "read", "site": "layer_output", "layer": 1,
              "position": "last", "scope": "run"},
             {"id": "embed", "op": "read", "site": "embeddings", "position": "last",
              "scope": "run"},
             {"id": "norm", "op": "function", "fn": fn, "axes": list(axes)},
             {"id": "ratio", "op": "function", "fn": "functions/mine.py:norm_ratio",
              "axes": ["example"]},
             {"id": "save_norm", "op": "save"}, {"id": "save_ratio", "op": "save"}, *extra]
    edges = [{"src": "resid", "dst": "norm"}, {"src": "resid", "dst": "ratio"},
             {"src": "embed", "dst": "ratio"},          # ratio(resid, embed): edge order
             {"src": "norm", "dst": "save_norm"}, {"src": "ratio", "dst": "save_ratio"}]
    return {"format": 1, "name": "fn", "data": {"rows": [{"prompt": p} for p in PROMPTS]},
            "graph": {"scopes": [{"id": "run", "kind": "trace", "input": {"column": "prompt"}}],
                      "nodes": nodes, "edges": edges}}


@pytest.fixture
def project(tmp_path):
    """A folder with experiments/fn.yaml and experiments/functions/mine.py (which, if ever
    executed, writes tmp_path/marker)."""
    folder = tmp_path / "experiments"
    (folder / "functions").mkdir(parents=True)
    marker = tmp_path / "marker"
    (folder / "functions" / "mine.py").write_text(FUNCTIONS.replace("MARKER", repr(str(marker))))
    (folder / "fn.yaml").write_text(yaml.safe_dump(experiment()))
    return tmp_path


def nnrun(project, *args: str, run: str = "run"):
    return run_nnrun(["experiment=fn", "model=tiny_gpt2", *args], cwd=project,
                     run_dir=project / run)


@functools.lru_cache(maxsize=1)
def reference() -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch hooks: block 1's output and the token embedding of the last token."""
    hf, tok = reference_model("tiny-gpt2")
    got = {}
    hooks = [hf.transformer.h[1].register_forward_hook(
                 lambda m, i, o: got.__setitem__(
                     "resid", (o[0] if isinstance(o, tuple) else o)[:, -1])),
             hf.transformer.wte.register_forward_hook(   # the `embeddings` site: token only
                 lambda m, i, o: got.__setitem__("embed", o[:, -1]))]
    with torch.no_grad():
        hf(torch.tensor([tok(p)["input_ids"] for p in PROMPTS]))
    for h in hooks:
        h.remove()
    return got["resid"], got["embed"]


def saved(project, name: str, run: str = "run") -> torch.Tensor:
    return load_file(project / run / "tensors" / f"{name}.safetensors")[name]


def test_a_function_equals_plain_torch_hooks(project):
    result = nnrun(project, "allow_functions=true")
    assert result.code == 0, result.explain()
    resid, embed = reference()
    assert (saved(project, "save_norm") - resid.norm(dim=-1)).abs().max() <= 1e-5
    assert (saved(project, "save_ratio") - resid.norm(dim=-1) / embed.norm(dim=-1)
            ).abs().max() <= 1e-5
    assert (project / "marker").exists()        # it did run, once allowed
    manifest = json.loads((project / "run" / "manifest.json").read_text())
    file = project / "experiments" / "functions" / "mine.py"
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    assert manifest["functions"]["norm"] == {"path": "functions/mine.py", "sha256": sha,
                                             "name": "resid_norm", "resolved": str(file)}
    assert manifest["functions"]["ratio"]["name"] == "norm_ratio"
    program = (project / "run" / "program.py").read_text()
    assert file.read_text().rstrip() in program and sha in program
    assert program.count("def resid_norm(") == 1   # one file, two nodes: copied once


def test_without_the_opt_in_nothing_runs(project):
    result = nnrun(project)
    assert result.code == 10, result.explain()
    err = result.stderr
    assert "[functions_not_allowed]" in err and "allow_functions=true" in err
    assert "node `norm`" in err and "functions/mine.py" in err and "fn.yaml" in err
    assert "Traceback" not in err and not (project / "marker").exists()


def test_validate_and_plan_never_execute_the_file(project):
    for stage in ("validate", "plan"):
        result = nnrun(project, f"stage={stage}", run=stage)
        assert result.code == 0, result.explain()
    assert not (project / "marker").exists()


def test_the_exported_script_carries_the_function_and_runs_without_the_file(project):
    result = nnrun(project, "allow_functions=true")
    assert result.code == 0, result.explain()
    script = project / "fn_standalone.py"
    result = nnrun(project, "stage=export", f"export_path={script}", run="export")
    assert result.code == 0, result.explain()
    file = project / "experiments" / "functions" / "mine.py"
    assert file.read_text().rstrip() in script.read_text()
    file.unlink()
    done = subprocess.run([sys.executable, str(script), str(project / "exported")],
                          capture_output=True, text=True, timeout=300, cwd=project,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    exported = load_file(project / "exported" / "save_ratio.safetensors")["save_ratio"]
    assert torch.equal(exported, saved(project, "save_ratio"))


@pytest.mark.parametrize("fn, axes, words", [
    ("functions/mine.py:wrong_shape", ("example",), ["wrong_shape() returned shape (3, 2)",
                                                     "declares axes (example)"]),
    ("functions/mine.py:resid_norm", ("example", "hidden"), ["returned shape (3,)"]),
    ("functions/mine.py:fails", ("example",), ["fails() in functions/mine.py raised KeyError"]),
])
def test_a_bad_result_is_a_run_error_naming_the_node(project, fn, axes, words):
    (project / "experiments" / "fn.yaml").write_text(yaml.safe_dump(experiment(fn, axes)))
    result = nnrun(project, "allow_functions=true")
    assert result.code == 14, result.explain()
    assert "node `norm`" in result.stderr and "graph.nodes[2]" in result.stderr
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr


def test_the_built_in_example_runs_on_the_demo_model(tmp_path):
    result = run_nnrun(["experiment=custom_function", "allow_functions=true",
                        "++data.limit=8"], cwd=tmp_path, run_dir=tmp_path / "run")
    assert result.code == 0, result.explain()
    norm = load_file(tmp_path / "run" / "tensors" / "save_norm.safetensors")["save_norm"]
    assert norm.shape == (8, 4) and bool((norm > 0).all())
