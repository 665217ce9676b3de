"""Sweep state on disk without a model (issue 10): job directory names, swept axes, the refusal
of values Hydra would split, each job's state from its directory (dead jobs recognised), the
summary, the aggregated tensors and plots, resume decisions, model pins and git provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nnrun.atomic import write_tensors
from nnrun.errors import CommandLineError
from nnrun.outputs import now
from nnrun.sweeps.keys import check_split_values, job_dir_name, swept_axes
from nnrun.sweeps.state import is_dead, read_jobs, write_plan
from nnrun.sweeps.summary import summarize, table


def test_job_directory_depends_only_on_what_the_job_computes():
    a = job_dir_name(["experiment=e", "params.layer=3", "params.position=-1"])
    assert a.startswith("experiment=e,layer=3,position=-1_")
    assert a == job_dir_name(["params.position=-1", "params.layer=3", "experiment=e",
                              "resume=true"])  # order and control keys do not matter
    assert a != job_dir_name(["experiment=e", "params.layer=4", "params.position=-1"])
    odd = job_dir_name(["params.clean='the cat, sat/on ../mat'"])
    assert "/" not in odd and ".." not in odd.split("_")[0] or odd.count("/") == 0
    assert len(job_dir_name([f"params.p={'x' * 500}"])) < 80


def test_swept_axes_keep_command_line_and_sweep_order():
    jobs = [["experiment=e", "params.layer=1", "params.position=2"],
            ["experiment=e", "params.layer=1", "params.position=-1"],
            ["experiment=e", "params.layer=0", "params.position=2"],
            ["experiment=e", "params.layer=0", "params.position=-1"]]
    axes = swept_axes(jobs)
    assert [(a.key, a.label, a.values) for a in axes] == [
        ("params.layer", "layer", ["1", "0"]), ("params.position", "position", ["2", "-1"])]
    clash = swept_axes([["a.x=1", "b.x=1"], ["a.x=2", "b.x=2"]])
    assert [a.label for a in clash] == ["a.x", "b.x"]  # short names collide: full keys


@pytest.mark.parametrize("override, refused", [
    ("params.clean=when mary and john went to the store, john gave", True),
    ("params.foil= rome, london", False),               # single words: a real sweep
    ('params.foil=" rome"," london"', False),           # quoted elements
    ('params.clean="when mary went to the store, john gave"', False),  # quoted whole
    ("params.layer=range(0,4)", False),
    ("params.clean=choice(a b, c d)", False),            # an explicit choice() is deliberate
])
def test_values_that_hydra_would_split_are_refused(override, refused):
    if not refused:
        check_split_values([override])
        return
    with pytest.raises(CommandLineError) as err:
        check_split_values([override])
    issue = err.value.issues[0]
    assert issue.code == "split_value" and "into 2 jobs" in issue.message
    assert "quote it whole" in issue.hint


def manifest(status: str, **extra) -> dict:
    return {"manifest_version": 1, "status": status, "stage": "run", "started_at": now(),
            "finished_at": None if status == "running" else now(), "artifacts": [],
            "error": None, "experiment": {"config_sha256": "h"}, **extra}


def make_job(sweep: Path, overrides: list[str], data: dict | None, completed: bool = False,
             tensors: dict | None = None) -> Path:
    run = sweep / job_dir_name(overrides)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if data is None:
        return run
    for name, (value, axes) in (tensors or {}).items():
        path = run / "tensors" / f"{name}.safetensors"
        write_tensors(path, {name: value}, {"axes": ",".join(axes), "coords": "{}"})
        data["artifacts"].append({"path": f"tensors/{name}.safetensors", "kind": "tensor",
                                  "shape": list(value.shape), "axes": list(axes)})
    (run / "manifest.json").write_text(json.dumps(data))
    if completed:
        (run / "COMPLETED").write_text(json.dumps(data))
    return run


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_each_job_state_comes_from_its_directory(tmp_path):
    sweep = tmp_path / "sweep"
    jobs = [[f"params.layer={i}"] for i in range(6)]
    write_plan(sweep.mkdir() or sweep, jobs, {"task": ["params.layer=0,1,2,3,4,5"], "hydra": []})
    make_job(sweep, jobs[0], manifest("completed"), completed=True)
    error = {"type": "RunError", "exit_code": 14, "message": "while executing node `x`",
             "node": "x"}
    make_job(sweep, jobs[1], manifest("failed", error=error))
    from nnrun.provenance import host

    make_job(sweep, jobs[2], manifest("running", process={"pid": dead_pid(), "host": host(),
                                                          "heartbeat_s": 30}))
    make_job(sweep, jobs[3], manifest("running", process={"pid": os.getpid(), "host": host(),
                                                          "heartbeat_s": 30}))
    make_job(sweep, jobs[4], None)  # started, no manifest yet
    found = read_jobs(sweep)
    assert [j.status for j in found] == ["completed", "failed", "dead", "running", "running",
                                         "pending"]
    assert [j.exit_code for j in found] == [0, 14, 137, 0, 0, 0]
    assert "is gone" in found[2].reason
    final = read_jobs(sweep, final=True)  # the launcher returned: nothing is still running
    assert [j.status for j in final][3:5] == ["dead", "dead"]
    summary = summarize(sweep, final=True)
    assert summary.exit_code == 137 and len(summary.failed) == 4
    text = table(summary)
    assert "6 jobs, 4 failed" in text and "node x" in text and "resume=true" in text
    data = json.loads((sweep / "sweep_summary.json").read_text())
    assert data["jobs"][1]["error"]["node"] == "x" and data["counts"]["dead"] == 3


def test_a_stopped_heartbeat_means_dead():
    old = "2020-01-01T00:00:00.000+00:00"
    away = {"status": "running", "heartbeat_at": old,
            "process": {"pid": 1, "host": "another-node", "heartbeat_s": 30}}
    assert "no heartbeat" in is_dead(away)
    assert is_dead({**away, "heartbeat_at": now()}) is None


def test_summary_aggregates_scalars_curves_and_per_example_values(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    jobs = [["params.layer=0", "params.pos=a"], ["params.layer=0", "params.pos=b"],
            ["params.layer=1", "params.pos=a"], ["params.layer=1", "params.pos=b"]]
    write_plan(sweep, jobs, {"task": [], "hydra": []})
    for i, overrides in enumerate(jobs[:3]):
        make_job(sweep, overrides, manifest("completed"), completed=True, tensors={
            "score": (torch.tensor(float(i)), ()),
            "curve": (torch.arange(3.0) + i, ("layer",)),
            "per_example": (torch.tensor([[i, i + 2.0]]).T, ("example", "batch"))})
    make_job(sweep, jobs[3], manifest("failed", error={"type": "ConfigError", "exit_code": 10,
                                                      "message": "bad", "node": None}))
    summary = summarize(sweep, final=True)
    assert summary.exit_code == 10
    assert summary.metrics[0] == {"score": 0.0, "per_example": 1.0}  # mean over examples
    agg = sweep / "aggregate"
    with safe_open(agg / "score_by_layer_pos.safetensors", "pt") as f:
        grid = f.get_tensor("score")
        meta = f.metadata()
    assert grid.shape == (2, 2) and grid[1, 1].isnan() and grid[1, 0] == 2.0
    assert meta["axes"] == "layer,pos" and json.loads(meta["coords"])["pos"] == ["a", "b"]
    with safe_open(agg / "curve_by_layer_pos.safetensors", "pt") as f:
        assert f.get_tensor("curve").shape == (2, 2, 3)  # saved, not plotted (3 dims)
    assert (agg / "score_by_layer_pos.png").is_file()  # two swept axes: a heatmap
    assert not (agg / "curve_by_layer_pos.png").exists()
    first = (agg / "score_by_layer_pos.safetensors").read_bytes()
    summarize(sweep, final=True)
    assert (agg / "score_by_layer_pos.safetensors").read_bytes() == first  # deterministic


def test_one_swept_axis_gives_lines(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    jobs = [[f"params.prompt=p{i}"] for i in range(3)]
    write_plan(sweep, jobs, {"task": [], "hydra": []})
    for i, overrides in enumerate(jobs):
        make_job(sweep, overrides, manifest("completed"), completed=True, tensors={
            "score": (torch.tensor(float(i)), ()),
            "rank": (torch.arange(4.0) * i, ("layer",))})
    summary = summarize(sweep)
    names = sorted(p.name for p in summary.files)
    assert "score_by_prompt.png" in names  # a line over the swept values
    assert "rank_by_prompt.png" in names   # one line per prompt over the layers


def test_resume_skips_only_what_completed_with_the_same_config(tmp_path):
    from nnrun.sweeps.job import skip_reason

    done = make_job(tmp_path, ["a=1"], manifest("completed"), completed=True)
    failed = make_job(tmp_path, ["a=2"], manifest("failed", error={"exit_code": 14}))
    never = tmp_path / "never"
    assert skip_reason(done, "all", "h")
    assert skip_reason(done, "all", "other") is None       # the experiment changed: rerun
    assert skip_reason(failed, "all", "h") is None
    assert skip_reason(never, "all", "h") is None
    assert skip_reason(failed, "failed", "h") is None      # resume=failed: only failed jobs
    assert skip_reason(never, "failed", "h")
    assert skip_reason(done, "failed", "h")


def test_sigusr2_marks_the_job_preempted(tmp_path):
    import signal

    from nnrun.outputs import RunDir
    from nnrun.rundir import Preempted, job_guard

    run = RunDir(tmp_path / "run")
    with pytest.raises(Preempted):
        with job_guard(run.path, "run"):
            run.start({"name": "e"}, {"path": "x"}, "run", [])
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(5)
    data = json.loads((run.path / "manifest.json").read_text())
    assert data["status"] == "preempted" and data["error"]["exit_code"] == 140
    assert not (run.path / "COMPLETED").exists()
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


def test_submitit_preemption_ends_the_job_preempted(tmp_path):
    from nnrun.outputs import RunDir
    from nnrun.rundir import PREEMPTION, mark_preempted

    run = RunDir(tmp_path / "run")
    run.start({"name": "e"}, {"path": "x"}, "run", [])
    try:
        mark_preempted(run.path)  # submitit's checkpoint hook, then its SystemExit
        run.finish({"type": "SystemExit", "exit_code": 1, "message": "-1", "node": None})
    finally:
        PREEMPTION["requested"] = False
    assert json.loads((run.path / "manifest.json").read_text())["status"] == "preempted"


def test_heartbeat_is_renewed_while_running_and_stops_at_the_end(tmp_path, monkeypatch):
    from nnrun.outputs import RunDir

    monkeypatch.setenv("NNRUN_HEARTBEAT_S", "0.05")
    run = RunDir(tmp_path / "run")
    run.start({"name": "e"}, {"path": "x"}, "run", [])
    first = json.loads((run.path / "manifest.json").read_text())
    assert first["process"]["pid"] == os.getpid() and first["process"]["host"]
    time.sleep(0.3)
    later = json.loads((run.path / "manifest.json").read_text())
    assert later["heartbeat_at"] > first["heartbeat_at"]
    run.finish({"type": "RunError", "exit_code": 14, "message": "x", "node": None})
    ended = (run.path / "manifest.json").read_text()
    time.sleep(0.2)
    assert (run.path / "manifest.json").read_text() == ended  # nothing writes after the end


def test_model_cache_is_bounded_and_counts_loads(monkeypatch):
    from nnrun import models

    monkeypatch.setattr(models, "_load_weights", lambda spec: object())
    monkeypatch.setattr(models, "_LOADED", type(models._LOADED)())
    monkeypatch.setenv("NNRUN_MODEL_CACHE", "1")
    a = models.ModelSpec(name="a", path="builtin:demo")
    b = models.ModelSpec(name="b", path="builtin:demo", dtype="float64")
    start = models.LOADS["count"]
    first = models.load_model(a)
    assert models.load_model(a) is first and models.LOADS["count"] == start + 1
    models.load_model(b)  # a is released before b is loaded
    assert not models.is_loaded(a) and models.is_loaded(b) and len(models._LOADED) == 1
    assert models.load_model(a) is not first and models.LOADS["count"] == start + 3


def test_safetensors_bytes_depend_only_on_the_contents(tmp_path):
    tensors = {"x": torch.arange(6.0).reshape(2, 3), "y": torch.ones(2, dtype=torch.bfloat16)}
    meta = {"b": "2", "a": "1", "z": "ünïcode"}
    write_tensors(tmp_path / "one.safetensors", tensors, meta)
    write_tensors(tmp_path / "two.safetensors", dict(reversed(tensors.items())),
                  dict(reversed(meta.items())))
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()
    with safe_open(tmp_path / "one.safetensors", "pt") as f:
        assert f.metadata() == meta and f.get_tensor("x").equal(tensors["x"])
        assert f.get_tensor("y").equal(tensors["y"])


def test_hub_models_are_pinned_once_per_sweep(tmp_path, monkeypatch):
    from nnrun.sweeps.pins import pin_models, pinned

    cache = tmp_path / "hub"
    commit = "a" * 40
    repo = cache / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    lock = pin_models(sweep, [("org/model", None), ("builtin:demo", None)])
    assert lock == {"org/model@main": commit}
    assert pinned(sweep, "org/model", None) == commit
    assert pinned(sweep, "org/model", "b" * 40) is None  # already a commit
    (repo / "refs" / "main").write_text("c" * 40)         # the branch moves mid-sweep ...
    assert pin_models(sweep, [("org/model", None)])["org/model@main"] == commit  # ... not us


def test_git_state_of_the_experiment_repository(tmp_path):
    from nnrun.provenance import git_state

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    exp = tmp_path / "exp.yaml"
    exp.write_text("a: 1\n")
    git("add", "exp.yaml")
    git("commit", "-qm", "x")
    clean = git_state(exp)
    assert len(clean["commit"]) == 40 and not clean["dirty"] and not clean["file_dirty"]
    exp.write_text("a: 2\n")
    assert git_state(exp)["dirty"] and git_state(exp)["file_dirty"]
    assert git_state(Path("/")) is None or "commit" in git_state(Path("/"))
