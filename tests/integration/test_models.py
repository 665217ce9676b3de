"""Model sources: local directories written by save_pretrained, hub ids offline, JSON experiments
(through the `nnrun` command, in-process: `nnrun_inprocess.run_nnrun`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from nnrun_inprocess import Result, run_nnrun

REPO = Path(__file__).resolve().parents[2]


def nnrun(*args: str, cwd: Path) -> Result:
    return run_nnrun(list(args), cwd=cwd)


def test_local_save_pretrained_directory(tmp_path):
    import shutil

    from nnrun.tiny import ensure_tiny_model

    local = tmp_path / "my-model"
    shutil.copytree(ensure_tiny_model("tiny-llama"), local)
    # the default model preset is a GPT-2: overriding only its path must not leave its records
    proc = nnrun("experiment=patching_single", f"model.path={local}",
                 # the tiny model's vocabulary has none of the demo words: an error, else
                 "params.clean=the eiffel tower is in the city of",
                 "params.corrupt=the colosseum tower is in the city of",
                 f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.code == 0, proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"]["path"] == str(local) and manifest["model"]["config_sha256"]
    assert (manifest["model"]["name"], manifest["model"]["model_type"],
            manifest["model"]["family"]) == ("my-model", "llama", "llama")
    assert "gpt2" not in (tmp_path / "run" / "config.yaml").read_text()
    assert "model.layers[layer]" in (tmp_path / "run" / "program.py").read_text()


def test_hub_model_offline_is_a_clear_model_error(tmp_path):
    proc = nnrun("experiment=patching", "model=gpt2", "model.path=nnrun-tests/does-not-exist",
                 f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.code == 13, proc.stderr
    assert "nnrun-tests/does-not-exist" in proc.stderr and "[model_unavailable]" in proc.stderr
    assert "hf download" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_local_directory(tmp_path):
    proc = nnrun("experiment=patching", f"model.path={tmp_path / 'nope'}", "stage=validate",
                 f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.code == 13 and "[model_not_found]" in proc.stderr, proc.stderr


def test_no_experiment_selected(tmp_path):
    proc = nnrun(f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.code == 10 and "experiment=patching" in proc.stderr, proc.stderr


def test_json_experiment_file(tmp_path):
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(REPO / "experiments" / "patching.yaml"))
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "as_json.json").write_text(json.dumps(data))
    import shutil  # the dataset is named relative to the experiment file: it travels with it

    shutil.copytree(REPO / "experiments" / "data", tmp_path / "experiments" / "data")
    proc = nnrun("experiment=as_json", "stage=validate", f"hydra.run.dir={tmp_path / 'run'}",
                 cwd=tmp_path)
    assert proc.code == 0, proc.stderr


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_builtin_experiment_validates(tmp_path, path):
    """On the model it was written for, and its site map on the other families: the tiny models
    have 2 layers, so the only problem an experiment may have there is a layer the demo has."""
    for model in ("demo", "tiny_gpt2", "tiny_llama"):
        result = run_nnrun([f"experiment={path.stem}", f"model={model}", "stage=validate"],
                           cwd=tmp_path, run_dir=tmp_path / model)
        codes = set(re.findall(r"\[([a-z_]+)\]", result.stderr))
        ok = result.code == 0 or (model != "demo" and codes == {"layer_out_of_range"})
        assert ok, (path.name, model, result.stderr)
        assert "warning" not in result.stderr, (path.name, model, result.stderr)  # unused_node


def test_a_run_that_fails_before_the_model_loads_leaves_a_failed_manifest(tmp_path):
    proc = nnrun("experiment=patching_single", "model=tiny_gpt2",  # demo words: not in its vocab
                 f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.code == 10, proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"]["type"] == "ConfigError"
    assert manifest["model"]["name"] == "tiny-gpt2" and manifest["experiment"]["name"]
    assert not (tmp_path / "run" / "COMPLETED").exists()


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_builtin_experiment_plans(tmp_path, path):
    """`stage=plan` works for every experiment, also those that decode tokens to text (they
    cannot be scanned with fake tensors: their shapes are derived instead)."""
    result = run_nnrun([f"experiment={path.stem}", "stage=plan", "++data.limit=4"]
                       if "data:" in path.read_text() else
                       [f"experiment={path.stem}", "stage=plan"], cwd=tmp_path,
                       run_dir=tmp_path / "run")
    assert result.code == 0, result.stderr
    assert "memory estimate" in result.stdout
