"""End-to-end: the `nnrun` command writes complete run directories; export reproduces tensors.

The command runs in-process (`nnrun_inprocess.run_nnrun`: the real `nnrun.cli.main` with Hydra);
only the console script itself and the exported standalone script run as new processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nnrun_inprocess import run_nnrun
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]


def nnrun(*args: str, cwd: Path, env: dict | None = None):
    return run_nnrun(list(args), cwd=cwd, env=env)


def test_the_console_script_runs_an_experiment(tmp_path):
    """The installed `nnrun` command, in a new process: exit 0, the run directory on stdout, a
    completed run, no traceback."""
    script = Path(sys.executable).parent / "nnrun"
    env = {k: v for k, v in os.environ.items()
           if k not in ("NNRUN_EXPERIMENTS", "NNRUN_FULL_ERROR", "HYDRA_FULL_ERROR")}
    proc = subprocess.run([str(script), "experiment=patching_single",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                          env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"run directory: {tmp_path / 'run'}" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "run" / "COMPLETED").is_file()


def test_run_directory_is_complete(patching_run):
    work, run, proc = patching_run
    assert f"run directory: {run}" in proc.stdout
    for name in ["COMPLETED", "manifest.json", "config.yaml", "program.py", "graph.png",
                 "graph.svg", "plots/heatmap.png", "plots/heatmap.svg",
                 "tensors/save_effect.safetensors", ".hydra/config.yaml"]:
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["model"]["path"] and manifest["model"]["dtype"] == "float32"
    assert {"nnsight", "torch", "transformers"} <= set(manifest["versions"])
    for artifact in manifest["artifacts"]:
        assert len(artifact["sha256"]) == 64 and (run / artifact["path"]).is_file()
    assert not list(run.rglob(".tmp-*")), "temporary files left behind"


def test_tensor_metadata_names_its_origin(patching_run):
    from safetensors import safe_open

    _, run, _ = patching_run
    with safe_open(run / "tensors/save_effect.safetensors", "pt") as f:
        meta = f.metadata()
        shape = f.get_tensor("save_effect").shape
    assert meta["node"] == "effect" and meta["op"] == "subtract"
    assert meta["axes"] == "example,layer,position"  # per-example values are stored example-first
    assert "layer_input" in meta["site"] and "config_sha256" in meta
    coords = json.loads(meta["coords"])
    assert len(coords["position"]) == shape[2] and coords["position"][0] == "0:the"


def test_export_reproduces_tensors_exactly(patching_run, tmp_path):
    work, run, _ = patching_run
    script = tmp_path / "standalone.py"
    proc = nnrun("experiment=patching", "stage=export", f"export_path={script}",
                 f"hydra.run.dir={tmp_path / 'x'}", cwd=work)
    assert proc.code == 0, proc.stderr
    assert "import nnrun" not in script.read_text() and "from nnrun" not in script.read_text()
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    got = load_file(out / "save_effect.safetensors")["save_effect"]
    want = load_file(run / "tensors/save_effect.safetensors")["save_effect"]
    assert got.shape == want.shape and got.equal(want)


def test_validate_needs_no_weights_and_user_experiments_are_found(tmp_path):
    (tmp_path / "experiments").mkdir()
    shutil.copy(REPO / "experiments" / "patching.yaml", tmp_path / "experiments" / "my_exp.yaml")
    shutil.copytree(REPO / "experiments" / "data", tmp_path / "experiments" / "data")
    proc = nnrun("experiment=my_exp", "stage=validate", f"hydra.run.dir={tmp_path / 'v'}",
                 cwd=tmp_path)
    assert proc.code == 0, proc.stderr
    assert "is valid" in proc.stdout
    assert not (tmp_path / "v" / "COMPLETED").exists()


def test_plan_reports_shapes(tmp_path):
    proc = nnrun("experiment=patching", "stage=plan", f"hydra.run.dir={tmp_path / 'p'}",
                 cwd=tmp_path)
    assert proc.code == 0, proc.stderr
    # demo: 4 layers, 9 tokens, 128 examples in the shipped facts dataset
    assert "(layer, position, example) = (4, 9, 128)" in proc.stdout
    assert "no weights loaded" in proc.stdout


def test_multirun_two_points(tmp_path):
    proc = nnrun("-m", "experiment=patching_single", "params.foil= rome, london",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.code == 0, proc.stderr
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["completed", "completed"]
    runs = [Path(j["run_dir"]) for j in summary["jobs"]]  # named after their overrides
    for run in runs:
        assert (run / "COMPLETED").is_file() and run.parent == tmp_path / "sweep"
    a = load_file(runs[0] / "tensors/save_effect.safetensors")["save_effect"]
    b = load_file(runs[1] / "tensors/save_effect.safetensors")["save_effect"]
    assert not a.equal(b)
    assert "2 jobs, 0 failed" in proc.stderr


def test_runs_from_another_directory_with_llama(tmp_path):
    proc = nnrun("experiment=patching", "model=tiny_llama", "stage=validate",
                 f"hydra.run.dir={tmp_path / 'r'}", cwd=Path("/"))
    assert proc.code == 0, proc.stderr


def test_runtime_failure_names_the_node_and_leaves_no_completed(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "broken.yaml").write_text(
        "format: 1\nname: broken\ngraph:\n"
        "  scopes: [{id: t, kind: trace, input: the famous eiffel}]\n"
        "  nodes:\n"
        "    - {id: resid, op: read, site: layer_output, layer: 0, scope: t}\n"
        "    - {id: pick, op: select_position, position: 50}\n"
        "    - {id: out, op: save}\n"
        "  edges: [{src: resid, dst: pick}, {src: pick, dst: out}]\n")
    run = tmp_path / "run"
    proc = nnrun("experiment=broken", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.code == 14, proc.stderr
    assert "node `pick`" in proc.stderr and "[runtime_error]" in proc.stderr
    assert "experiments/broken.yaml:7: graph.nodes[1] (node pick)" in proc.stderr
    assert "`pick = resid.select(" in proc.stderr  # the program's own failing line, no more
    assert "Traceback" not in proc.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"]["node"] == "pick"
    assert not (run / "COMPLETED").exists()
