"""Security and run-directory integrity through the real `nnrun` command (issue 7): hostile
experiment files are refused before anything runs and nothing is written outside the outputs;
runs killed with SIGKILL at any point never leave a directory marked complete; SIGTERM is
recorded; one run per directory; a re-run starts clean; secrets never reach the disk; `nnrun
verify` checks the result.

Only what needs a process of its own starts one (a kill, SIGTERM, a lock held by another
process); everything else runs the command in-process (`nnrun_inprocess.run_nnrun`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nnrun_inprocess import Result, run_nnrun

from nnrun.verify import INCOMPLETE, OK, verify

FAKE = "hf_FAKEtokenFAKEtoken1234567890"
EXPERIMENT = "experiment=patching_single"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("NNRUN_EXPERIMENTS", "NNRUN_FULL_ERROR", "HYDRA_FULL_ERROR")}
    return {**base, "HF_HUB_OFFLINE": "1", **extra}


def start(cwd: Path, *args: str, checkpoint: str | None = None, **extra: str) -> subprocess.Popen:
    if checkpoint:
        extra.update(NNRUN_TEST_CHECKPOINT=checkpoint, NNRUN_TEST_CHECKPOINT_SLEEP="120")
    return subprocess.Popen([sys.executable, "-m", "nnrun", *args], cwd=cwd, env=env(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(cwd: Path, *args: str, **extra: str) -> Result:
    """`nnrun ARGS` in-process (`extra`: environment variables for the run)."""
    return run_nnrun(list(args), cwd=cwd, env=extra)


def wait_for_checkpoint(proc: subprocess.Popen, name: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if line.strip() == f"nnrun-checkpoint: {name}":
            return
    proc.kill()
    raise AssertionError(f"checkpoint {name} never reached:\n{''.join(seen)}")


def assert_never_falsely_complete(run_dir: Path) -> None:
    """COMPLETED only with a completed, verified manifest; manifest.json never says completed
    without COMPLETED."""
    completed = run_dir / "COMPLETED"
    manifest = run_dir / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text())["status"] == "completed":
        assert completed.exists(), run_dir
    if completed.exists():
        assert json.loads(completed.read_text())["status"] == "completed"
        assert verify(run_dir).code == OK, verify(run_dir).problems


# ---- hostile experiment files -----------------------------------------------------------------

BODY = ("format: 1\ngraph:\n  scopes: [{id: t, kind: trace, input: the famous eiffel}]\n"
        "  nodes:\n    - {id: logits, op: read, site: logits, position: last, scope: t}\n"
        "    - {id: out, op: save}\n  edges: [{src: logits, dst: out}]\n")


def hostile_files(tmp: Path) -> dict[str, str]:
    marker = tmp / "PWNED"
    escape = tmp.parent / f"{tmp.name}_escape"
    bomb = ["l0: &l0 [" + ",".join(["lol"] * 9) + "]"]
    bomb += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return {
        "escape": BODY + f"name: {json.dumps('/../../../../' + str(escape))}\n",
        "dotdot": BODY + "name: ../../../escape_dotdot\n",
        "quotes": BODY + "name: " + json.dumps(
            f'x"""\nimport pathlib; pathlib.Path({str(marker)!r}).touch()\n"""') + "\n",
        "callback": BODY + "name: callback\nhydra:\n  callbacks:\n    x:\n"
                           f"      _target_: pathlib.Path.touch\n      self: {marker}\n",
        "remote": BODY + "name: remote\nmodel:\n  path: /tmp/evil_model\n"
                         "  trust_remote_code: true\n",
        "env": BODY + "name: env\nparams: {t: '${oc.env:HF_TOKEN}'}\n",
        "bomb": "\n".join(bomb) + "\n" + BODY + "name: bomb\n",
        "broken": "format: 1\nname: [unclosed\n",
    }


def test_hostile_experiment_files_are_refused_and_write_nothing(tmp_path):
    work = tmp_path / "work"
    (work / "experiments").mkdir(parents=True)
    files = hostile_files(work)
    for name, text in files.items():
        (work / "experiments" / f"{name}.yaml").write_text(text)
    results = {name: run(work, f"experiment={name}", *(["stage=export"] if name == "escape"
                                                        else []), HF_TOKEN=FAKE)
               for name in files}
    valid = run(work, EXPERIMENT, "stage=validate")  # broken files elsewhere
    assert valid.code == 0 and "is valid" in valid.stdout, valid.stderr
    for name, result in results.items():
        code, err = result.code, result.stderr
        assert code == 10, f"{name}: exit {code}\n{err}"
        assert "Traceback" not in err, err
        assert f"experiments/{name}.yaml:" in err, err  # located: file and line
    assert not (work / "PWNED").exists(), "code from an experiment file ran"
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(work)]
    assert not outside, outside
    assert not list(work.rglob("COMPLETED"))
    assert not list(work.rglob("*_standalone.py"))
    # A refused file gives no name: its run is named after the `experiment=` choice (the file's
    # stem), never after the hostile `name` inside it.
    named = {p.name.split("_", 1)[1] for p in work.glob("outputs/*/*")}
    allowed = set(files) | {"invalid-name", "patching_single"}  # the last: the valid run
    assert named <= allowed, f"a hostile name named a directory: {named}"


def test_unwritable_output_directory_is_exit_15(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = run(tmp_path, EXPERIMENT, f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    assert proc.code == 15, proc.stderr
    assert "[output_not_writable]" in proc.stderr and "Traceback" not in proc.stderr


# ---- faults -----------------------------------------------------------------------------------

CHECKPOINTS = ("locked", "started", "before_completed", "between_completed_and_manifest")


def test_killed_runs_never_look_complete_and_a_rerun_starts_clean(tmp_path):
    procs = {}
    for point in CHECKPOINTS:
        procs[point] = start(tmp_path, EXPERIMENT, f"hydra.run.dir={tmp_path / point}",
                             checkpoint=point)
    timed = {delay: start(tmp_path, EXPERIMENT, f"hydra.run.dir={tmp_path / f't{delay}'}")
             for delay in (0.5, 1.5, 3.0)}
    began = time.monotonic()
    for delay, proc in sorted(timed.items()):
        time.sleep(max(0.0, began + delay - time.monotonic()))
        proc.kill()
    for point, proc in procs.items():
        wait_for_checkpoint(proc, point)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    for proc in timed.values():
        proc.wait(timeout=60)
    for folder in tmp_path.iterdir():
        assert_never_falsely_complete(folder)
    for point in ("locked", "started", "before_completed"):
        assert not (tmp_path / point / "COMPLETED").exists(), point
    assert verify(tmp_path / "before_completed").code == INCOMPLETE
    # killed between the two renames of completion: COMPLETED holds the final manifest
    assert verify(tmp_path / "between_completed_and_manifest").code == OK

    # a re-run into a killed directory: stale temporaries go, the new run completes, no secret
    # reaches any file, and `nnrun verify` passes
    again = tmp_path / "started"
    (again / ".tmp-stale.json").write_text("half")
    (again / "tensors").mkdir(exist_ok=True)
    (again / "tensors" / ".tmp-stale.safetensors").write_text("half")
    proc = run(tmp_path, EXPERIMENT, f"hydra.run.dir={again}", "description=${oc.env:HF_TOKEN}",
               f"+params.note={FAKE}", HF_TOKEN=FAKE)
    assert proc.code == 0, proc.stderr
    assert not list(again.rglob(".tmp-*"))
    for path in again.rglob("*"):
        if path.is_file():
            assert FAKE.encode() not in path.read_bytes(), path
    check = run(tmp_path, "verify", str(again))
    assert check.code == 0 and "verified" in check.stdout, check.stdout + check.stderr

    # tamper with a tensor: verify fails with exit 20
    tensor = next((again / "tensors").glob("*.safetensors"))
    data = bytearray(tensor.read_bytes())
    data[-1] ^= 0x01
    tensor.write_bytes(bytes(data))
    check = run(tmp_path, "verify", str(again))
    assert check.code == 20 and tensor.name in check.stdout, check.stdout

    # a re-run that fails validation removes the old COMPLETED first
    done = tmp_path / "between_completed_and_manifest"
    assert (done / "COMPLETED").exists()
    proc = run(tmp_path, EXPERIMENT, f"hydra.run.dir={done}", "name=../bad")
    assert proc.code == 10 and "[invalid_name]" in proc.stderr, proc.stderr
    assert not (done / "COMPLETED").exists()
    assert_never_falsely_complete(done)


def test_sigterm_is_recorded_and_a_second_run_into_the_directory_is_refused(tmp_path):
    target = tmp_path / "run"
    first = start(tmp_path, EXPERIMENT, f"hydra.run.dir={target}", checkpoint="started")
    wait_for_checkpoint(first, "started")
    second = run(tmp_path, EXPERIMENT, f"hydra.run.dir={target}")
    assert second.code == 15, second.stderr
    assert "[run_dir_locked]" in second.stderr and f"pid {first.pid}" in second.stderr
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 143
    assert "terminated" in first.stderr.read()
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["status"] == "terminated" and "SIGTERM" in manifest["error"]["message"]
    assert not (target / "COMPLETED").exists()
    assert verify(target).code == INCOMPLETE


@pytest.mark.parametrize("override", ["name=../../outside", """name='a\"\"\"b'"""])
def test_hostile_name_on_the_command_line_stays_inside_outputs(tmp_path, override):
    proc = run(tmp_path, EXPERIMENT, override, "stage=validate")
    assert proc.code == 10 and "[invalid_name]" in proc.stderr, proc.stderr
    made = [p.name for p in (tmp_path / "outputs").glob("*/*")]
    assert made and all(name.endswith("_invalid-name") for name in made), made
    assert not (tmp_path.parent / "outside").exists()
