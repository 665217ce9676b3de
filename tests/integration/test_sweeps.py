"""Sweeps through the real `nnrun -m` (issue 10): with the basic launcher, joblib
(`local_parallel`) and submitit (`local_processes`), one failing job leaves the others complete,
the summary (built from the job directories; `nnrun summarize` rebuilds it) names the failure and
its reason, the exit code is the failing job's, and the aggregated plot exists; a sweep killed
with SIGKILL resumes only its unfinished jobs (and a killed job only its unfinished chunks) into
the same summary as an uninterrupted one; Ctrl-C stops a sweep with its summary; a model is
loaded once per process; a value Hydra would split at its commas is refused; a past run directory
is re-run exactly from its manifest's one line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from nnrun_inprocess import run_nnrun
from safetensors import safe_open

# patch_layer on 8 examples at the last token; position 99 is outside every prompt (exit 10, at
# node `patch`, found when the prompts are tokenized); seed `x` is refused before anything loads
# (exit 10), which keeps the runs that start a process per job short
SWEEP = ["experiment=patch_layer", "data.limit=8", "params.layer=1", "params.position=-1,99"]
FAST_FAIL = ["experiment=patch_layer", "data.limit=8", "params.layer=1", "params.position=-1",
             "seed=0,x"]
POSITION = ("position", "-1", "99", "patch", "position 99 is outside")
SEED = ("seed", "0", "x", None, "seed must be an integer")


def summary_of(sweep: Path) -> dict:
    return json.loads((sweep / "sweep_summary.json").read_text())


def assert_one_failure(sweep: Path, code: int, stderr: str, case=POSITION) -> dict:
    """The job table, the summary files and the exit code say: one job completed, the other
    failed with a ConfigError (its node and reason recorded, also in its cli.log); the
    aggregated tensor has NaN at the failed point and its plot exists."""
    axis, good, bad, node, reason = case
    assert code == 10, stderr
    summary = summary_of(sweep)
    jobs = {j["params"][axis]: j for j in summary["jobs"]}
    assert jobs[good]["status"] == "completed" and jobs[good]["exit_code"] == 0
    assert jobs[good]["metrics"]["save_restored"] > 0.5  # the last token restores the answer
    failed = jobs[bad]
    assert failed["status"] == "failed" and failed["exit_code"] == 10
    assert failed["error"]["type"] == "ConfigError" and failed["error"]["node"] == node
    assert reason in failed["error"]["message"]
    assert summary["exit_code"] == 10 and summary["failed"] == 1
    assert "2 jobs, 1 failed" in stderr and reason in stderr
    plot = f"aggregate/save_restored_by_{axis}"
    for ext in ("png", "svg", "safetensors"):
        assert (sweep / f"{plot}.{ext}").is_file(), ext
    with safe_open(sweep / f"{plot}.safetensors", "pt") as f:
        grid = f.get_tensor("save_restored")
        assert f.metadata()["axes"] == axis
    assert grid.shape == (2,) and grid[1].isnan() and grid[0] > 0.5  # the failed point is NaN
    csv = (sweep / "sweep_summary.csv").read_text()
    assert "ConfigError" in csv and "save_restored" in csv.splitlines()[0]
    log = (Path(failed["run_dir"]) / "cli.log").read_text()  # the reason is in the job's log
    assert reason in log
    return summary


def test_basic_launcher_isolates_a_failing_job_and_summarize_rebuilds_it(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_nnrun(["-m", *SWEEP, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    summary = assert_one_failure(sweep, result.code, result.stderr)
    # job directories are named after their overrides (and a hash), never the time
    names = sorted(Path(j["run_dir"]).name for j in summary["jobs"])
    assert names[0].startswith("limit=8,experiment=patch_layer,layer=1,position=-1_")
    assert "resume=true" in summary["resume"] and str(sweep) in summary["resume"]
    # `nnrun summarize` rebuilds the same summary from the directories alone
    (sweep / "sweep_summary.json").unlink()
    (sweep / "aggregate/save_restored_by_position.png").unlink()
    again = run_nnrun(["summarize", str(sweep)], cwd=tmp_path)
    assert again.code == 10 and "2 jobs, 1 failed" in again.stdout
    assert summary_of(sweep)["jobs"] == summary["jobs"]
    assert (sweep / "aggregate/save_restored_by_position.png").is_file()
    assert run_nnrun(["summarize", str(tmp_path)], cwd=tmp_path).code == 22


def test_joblib_launcher_isolates_a_failing_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_nnrun(["-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=1",
                        *FAST_FAIL, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    summary = assert_one_failure(sweep, result.code, result.stderr, SEED)
    launcher = {json.loads((Path(j["run_dir"]) / "manifest.json").read_text())["job"]["launcher"]
                for j in summary["jobs"]}
    assert launcher == {"JoblibLauncher"}


def test_submitit_launcher_isolates_a_failing_job_and_it_really_fails(tmp_path):
    """The sweep runs in-process; submitit starts each job in a process of its own."""
    sweep = tmp_path / "sweep"
    result = run_nnrun(["-m", "hydra/launcher=local_processes", *FAST_FAIL,
                        f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    summary = assert_one_failure(sweep, result.code, result.stderr, SEED)
    failed = next(j for j in summary["jobs"] if j["status"] == "failed")
    job_id = json.loads((Path(failed["run_dir"]) / "manifest.json").read_text())["job"]["id"]
    log = next((sweep / ".submitit" / job_id).glob("*_log.err")).read_text()
    assert "JobFailed" in log and "exit code 10" in log  # submitit recorded a failure
    assert "Job completed successfully" not in log


def test_twelve_point_layer_sweep_loads_the_model_once(tmp_path):
    from nnrun import models

    models.release_models()
    loads = models.LOADS["count"]
    sweep = tmp_path / "sweep"
    result = run_nnrun(["-m", "experiment=patch_layer", "data.limit=2", "params.layer=0,1,2,3",
                        "params.position=2,-2,-1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.code == 0, result.explain()
    summary = summary_of(sweep)
    assert summary["counts"] == {"completed": 12}
    manifests = [json.loads((Path(j["run_dir"]) / "COMPLETED").read_text())
                 for j in summary["jobs"]]
    reused = [m["model"]["reused_in_process"] for m in manifests]
    assert reused == [False] + [True] * 11, reused
    assert models.LOADS["count"] == loads + 1
    assert len({m["process"]["pid"] for m in manifests}) == 1
    assert (sweep / "aggregate/save_restored_by_layer_position.png").is_file()


def test_a_sentence_split_at_its_commas_is_refused(tmp_path):
    result = run_nnrun(["-m", "experiment=patch_layer",
                        "params.clean=when mary and john went to the store, john gave a drink to",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert result.code == 2, result.explain()
    assert "[split_value]" in result.stderr and "quote it whole" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_run_directory_reruns_exactly_from_its_manifest(tmp_path):
    run = tmp_path / "run"
    first = run_nnrun(["experiment=patch_layer", "data.limit=4"], cwd=tmp_path, run_dir=run)
    assert first.code == 0, first.explain()
    manifest = json.loads((run / "COMPLETED").read_text())
    variable, *args = shlex.split(manifest["rerun"])
    assert args[:5] == ["nnrun", "-cp", str(run.absolute() / ".hydra"), "-cn", "config"]
    name, _, value = variable.partition("=")
    assert name == "NNRUN_EXPERIMENT_FILE" and value.endswith("patch_layer.yaml")
    second = run_nnrun(args[1:], cwd=tmp_path, env={name: value})
    assert second.code == 0, second.explain()
    again = json.loads((Path(f"{run.absolute()}-rerun") / "COMPLETED").read_text())
    assert again["experiment"]["config_sha256"] == manifest["experiment"]["config_sha256"]
    assert manifest["model"]["weights_sha256"] == again["model"]["weights_sha256"]

    def tensors(m):
        return {a["path"]: a["sha256"] for a in m["artifacts"] if a["kind"] == "tensor"}

    assert tensors(again) == tensors(manifest)  # byte-identical tensor files


@pytest.mark.parametrize("launcher", ["local_parallel", "local_processes"])
def test_launcher_presets_compose(tmp_path, launcher):
    result = run_nnrun([f"hydra/launcher={launcher}", "--cfg", "hydra", "-p", "hydra.launcher"],
                       cwd=tmp_path)
    assert result.code == 0, result.explain()
    assert "_target_" in result.stdout


def start_sweep(tmp_path: Path, *args: str, at: str, pause: float) -> subprocess.Popen:
    """`nnrun -m ARGS` in a new process that pauses `pause` seconds at each checkpoint `at`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NNRUN_TEST_CHECKPOINT": at,
           "NNRUN_TEST_CHECKPOINT_SLEEP": str(pause)}
    for name in ("NNRUN_FULL_ERROR", "HYDRA_FULL_ERROR", "NNRUN_EXPERIMENTS"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "nnrun", "-m", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_terminal)


def _as_from_a_terminal() -> None:
    """The sweep gets Ctrl-C as from a shell: whatever the test worker inherited or blocked
    (a process pool, a launcher) does not reach it."""
    import signal

    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.default_int_handler)


def wait_for(proc: subprocess.Popen, at: str, n: int) -> None:
    """Return once the sweep has reached checkpoint `at` for the n-th time."""
    seen = 0
    for line in proc.stderr:
        seen += line.startswith(f"nnrun-checkpoint: {at}")
        if seen == n:
            return
    raise AssertionError(f"the sweep ended before {at} #{n} (exit {proc.wait()})")


# three jobs of two examples, one example per chunk: two chunks per job
THREE = ["experiment=patch_layer", "data.limit=2", "+batch_size=1", "params.position=-1",
         "params.layer=0,1,2"]


def comparable(summary: dict) -> list:
    return [(Path(j["run_dir"]).name, j["status"], j["exit_code"], j["params"], j["metrics"])
            for j in summary["jobs"]]


def test_a_killed_sweep_resumes_only_its_unfinished_jobs_and_chunks(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start_sweep(tmp_path, *THREE, f"hydra.sweep.dir={sweep}", at="chunk_stored",
                       pause=1)
    wait_for(proc, "chunk_stored", 3)
    proc.kill()  # SIGKILL in the middle of the second job, its first chunk done
    proc.wait(timeout=60)
    killed = summary_of_summarize(tmp_path, sweep, expect=137)
    assert [j["status"] for j in killed["jobs"]] == ["completed", "dead", "pending"]
    assert "is gone" in killed["jobs"][1]["error"]["message"]
    first_run = Path(killed["jobs"][0]["run_dir"])
    first = (first_run / "COMPLETED").read_text()

    resumed = run_nnrun(["-m", *THREE, f"hydra.sweep.dir={sweep}", "resume=true"], cwd=tmp_path)
    assert resumed.code == 0, resumed.explain()
    assert f"skipped (completed with the same config): {first_run}" in resumed.stdout
    assert (first_run / "COMPLETED").read_text() == first  # not run again
    reused = []
    for job in summary_of(sweep)["jobs"][1:]:  # rerun (job 1) or run for the first time (job 2)
        manifest = json.loads((Path(job["run_dir"]) / "COMPLETED").read_text())
        assert manifest["process"]["pid"] == os.getpid() and manifest["status"] == "completed"
        assert not list(Path(job["run_dir"]).rglob(".tmp-*"))
        assert not (Path(job["run_dir"]) / ".chunks").exists()
        reused.append(manifest["chunks_reused"])
    assert reused == [1, 0]  # the killed job's finished chunk was not computed again

    whole = tmp_path / "whole"
    straight = run_nnrun(["-m", *THREE, f"hydra.sweep.dir={whole}"], cwd=tmp_path)
    assert straight.code == 0, straight.explain()
    assert comparable(summary_of(sweep)) == comparable(summary_of(whole))
    plot = "aggregate/save_restored_by_layer.safetensors"
    assert (sweep / plot).read_bytes() == (whole / plot).read_bytes()
    for a, b in zip(summary_of(sweep)["jobs"], summary_of(whole)["jobs"]):  # byte-identical
        assert tensor_hashes(Path(a["run_dir"])) == tensor_hashes(Path(b["run_dir"]))


def tensor_hashes(run: Path) -> dict:
    from nnrun.verify import OK, verify

    assert verify(run).code == OK
    manifest = json.loads((run / "COMPLETED").read_text())
    return {a["path"]: a["sha256"] for a in manifest["artifacts"] if a["kind"] == "tensor"}


def summary_of_summarize(tmp_path: Path, sweep: Path, expect: int) -> dict:
    stale = next(p for p in sweep.iterdir() if "layer=1" in p.name) / ".tmp-left-by-a-kill"
    stale.write_text("half")
    result = run_nnrun(["summarize", str(sweep)], cwd=tmp_path)
    assert result.code == expect, result.explain()
    assert not stale.exists()  # the job is dead: its temporary files are removed
    return summary_of(sweep)


def test_ctrl_c_stops_the_sweep_with_a_summary(tmp_path):
    import signal

    sweep = tmp_path / "sweep"
    proc = start_sweep(tmp_path, *THREE, f"hydra.sweep.dir={sweep}", at="started", pause=30)
    wait_for(proc, "started", 1)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    here = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    assert proc.wait(timeout=120) == 130, f"{rest}\n(test process SIGINT handler, mask: {here})"
    summary = summary_of(sweep)
    assert [j["status"] for j in summary["jobs"]] == ["interrupted", "pending", "pending"]
    assert "3 jobs, 1 failed" in rest and "Traceback" not in rest
    assert "resume=true" in summary["resume"]



def test_each_job_is_composed_once_with_the_basic_launcher(tmp_path, monkeypatch):
    """Hydra's batch check composes every job; the launcher gets that config instead of
    composing it a second time (0.3 s per job)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    composed = []
    compose = ConfigLoaderImpl.load_sweep_config

    def counting(self, master_config, overrides):
        composed.append(tuple(overrides))
        return compose(self, master_config, overrides)
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", counting)
    sweep = tmp_path / "sweep"
    result = run_nnrun(["-m", *THREE, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.code == 0, result.explain()
    assert len(composed) == 3 and len(set(composed)) == 3
    assert [j["status"] for j in summary_of(sweep)["jobs"]] == ["completed"] * 3
