"""Security and run-directory integrity, in-process (issue 7): what an experiment file may not
configure, bounded YAML, safe names, the run-directory lock, atomic completion, SIGTERM and write
failures, secret redaction, safetensors-only weights and `nnrun verify`."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from nnrun.errors import ConfigError, ModelError, OutputError
from nnrun.policy import check_experiment_text, is_safe_name, load_experiment_yaml, safe_dirname

REPO = Path(__file__).resolve().parents[2]
GOOD = (REPO / "experiments" / "patching_single.yaml").read_text()


def codes(err: pytest.ExceptionInfo) -> list[str]:
    return [i.code for i in err.value.issues]


# ---- names ------------------------------------------------------------------------------------

HOSTILE_NAMES = ["/../../../../x", "../x", "a/b", "..", ".hidden", "-rf", "a..b", "x" * 65, "",
                 'x"""\nimport os\nos.system("touch /tmp/pwned")\n"""', "x\ny", "x'y", "é",
                 "a b", "C:\\x", "x\x00y"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused_by_the_file_check_and_the_schema(name):
    assert not is_safe_name(name) and safe_dirname(name) == "invalid-name"
    text = f"format: 1\nname: {json.dumps(name)}\ngraph: {{nodes: []}}\n"
    with pytest.raises(ConfigError) as err:
        check_experiment_text(text, "e.yaml")
    assert codes(err) == ["invalid_name"] and err.value.issues[0].line == 2
    from nnrun.load import load_experiment

    with pytest.raises(ConfigError) as err:
        load_experiment({"name": name, "graph": {"nodes": []}})
    assert "invalid_name" in codes(err) and err.value.exit_code == 10


@pytest.mark.parametrize("name", ["patching", "my_exp-2", "v1.2", "A", "x" * 64])
def test_safe_names_pass(name):
    assert is_safe_name(name) and safe_dirname(name) == name


# ---- what an experiment file may not configure ------------------------------------------------

@pytest.mark.parametrize("snippet, code, line", [
    ("hydra:\n  callbacks:\n    x: {cmd: ls}\n", "forbidden_hydra", 4),
    ("hydra:\n  run: {dir: /tmp/elsewhere}\n", "forbidden_hydra", 4),
    ("model:\n  path: /tmp/evil\n  trust_remote_code: true\n", "forbidden_model_override", 4),
    ("model: {allow_pickle: true}\n", "forbidden_model_override", 4),
    ("export_path: /etc/x.py\n", "forbidden_path", 4),
    ("backend: {kind: ndif}\n", "forbidden_backend", 4),
    ("resume: true\n", "forbidden_resume", 4),
    ("memory_budget: null\n", "forbidden_budget", 4),
    ("defaults:\n  - override /hydra/launcher: slurm\n", "forbidden_default", 5),
    ("defaults:\n  - /hydra/callbacks: x\n", "forbidden_default", 5),
    ("params:\n  x: {_target_: os.system, command: ls}\n", "forbidden_target", 5),
    ("params:\n  tok: ${oc.env:HF_TOKEN}\n", "forbidden_env", 5),
    ("params:\n  tok: ${env:HF_TOKEN}\n", "forbidden_env", 5),
])
def test_experiment_files_cannot_configure_code_trust_models_or_paths(snippet, code, line):
    text = "format: 1\nname: e\ngraph: {nodes: []}\n" + snippet
    with pytest.raises(ConfigError) as err:
        check_experiment_text(text, "e.yaml")
    assert code in codes(err), str(err.value)
    issue = next(i for i in err.value.issues if i.code == code)
    assert issue.file == "e.yaml" and issue.line == line and issue.hint


def test_nested_target_is_found_anywhere():
    text = GOOD.replace("graph:\n", "graph:\n  x: {deep: [{_target_: builtins.eval}]}\n", 1)
    with pytest.raises(ConfigError) as err:
        check_experiment_text(text, "e.yaml")
    assert codes(err) == ["forbidden_target"]
    assert err.value.issues[0].path == "graph.x.deep[0]._target_"


def test_a_model_preset_and_self_are_allowed_in_defaults():
    check_experiment_text("defaults:\n  - override /model: gpt2\n  - _self_\n" + GOOD)


def test_built_in_experiments_pass_the_check():
    for path in (REPO / "experiments").glob("*.yaml"):
        load_experiment_yaml(path)


# ---- YAML: alias bombs, recursion, size --------------------------------------------------------

def _bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ",".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\nformat: 1\nname: bomb\ngraph: {nodes: []}\n"


def test_alias_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_experiment_yaml(path)
    assert time.perf_counter() - start < 2
    assert codes(err) == ["yaml_alias_limit"] and err.value.exit_code == 10
    from nnrun.load import load_experiment_file, source_lines

    with pytest.raises(ConfigError):
        load_experiment_file(path)  # the direct (no Hydra) loader is protected too
    start = time.perf_counter()
    source_lines(path)  # line lookup walks each aliased node once
    assert time.perf_counter() - start < 2


def test_recursive_alias_and_small_aliases():
    with pytest.raises(ConfigError) as err:
        check_experiment_text("a: &a [*a]\n", "e.yaml")
    assert codes(err) == ["yaml_alias_limit"]
    check_experiment_text("p: &p {x: 1}\nq: *p\n" + GOOD)  # ordinary anchors are fine


def test_oversized_and_malformed_files(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (11 * 2**20))
    with pytest.raises(ConfigError) as err:
        load_experiment_yaml(big)
    assert codes(err) == ["file_too_large"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: 1\nname: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_experiment_yaml(bad)
    assert codes(err) == ["invalid_yaml"] and err.value.issues[0].line


def test_a_refused_file_is_registered_as_its_error_only(tmp_path):
    from nnrun.cli import REFUSED, _checked_node, _raise_if_refused

    path = tmp_path / "evil.yaml"
    path.write_text(GOOD + "hydra:\n  callbacks:\n    x: {_target_: os.system, command: ls}\n")
    node = _checked_node(path)
    assert list(node) == [REFUSED]  # nothing of the file reaches Hydra
    with pytest.raises(ConfigError) as err:
        _raise_if_refused(node)
    assert {"forbidden_hydra", "forbidden_target"} <= set(codes(err))
    assert all(i.file == str(path) and i.line for i in err.value.issues)
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    _raise_if_refused(_checked_node(good))


# ---- secrets ----------------------------------------------------------------------------------

FAKE = "hf_FAKEtokenFAKEtoken1234567890"


def test_redaction_finds_tokens_by_name_and_shape():
    from nnrun.redact import redact, secrets

    env = {"HF_TOKEN": FAKE, "NDIF_API_KEY": "ndif-secret-123456", "MY_PASSWORD": "hunter2hunter2",
           "SOMETHING": "sk-abcdefghijklmnop", "HOME": "/root", "SHORT_TOKEN": "abc"}
    found = secrets(env)
    assert set(found.values()) == {"HF_TOKEN", "NDIF_API_KEY", "MY_PASSWORD", "SOMETHING"}
    data = {"a": [f"x {FAKE} y", ("ndif-secret-123456",)], FAKE: 3, "n": 5}
    clean = redact(data, found)
    assert FAKE not in json.dumps(clean) and "ndif-secret" not in json.dumps(clean)
    assert clean["a"][0] == "x <redacted:HF_TOKEN> y" and clean["n"] == 5


def test_manifest_config_and_artifact_text_are_redacted(tmp_path, monkeypatch):
    from nnrun.outputs import RunDir

    monkeypatch.setenv("HF_TOKEN", FAKE)
    run = RunDir(tmp_path / "run")
    run.start({"name": "e", "description": FAKE}, {"path": "x"}, "run", [f"params.t={FAKE}"])
    run.write_text("config.yaml", f"params:\n  t: {FAKE}\n", "config")
    run.finish()
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert FAKE.encode() not in path.read_bytes(), path


# ---- the run directory: lock, clean start, completion, faults ----------------------------------

def _completed_run(folder: Path, tensor=None):
    import torch

    from nnrun.outputs import ArtifactContext, RunDir

    run = RunDir(folder)
    run.start({"name": "e"}, {"path": "x"}, "run", [])
    ctx = ArtifactContext(run, "save", "v", ("layer", "position"), {}, {"node": "v"})
    ctx.write_value("save", torch.arange(12.0).reshape(3, 4) if tensor is None else tensor)
    run.write_text("config.yaml", "a: 1\n", "config")
    run.finish()
    return run


def test_completion_makes_completed_the_final_manifest(tmp_path):
    from nnrun.verify import OK, verify

    run = _completed_run(tmp_path / "run")
    completed = (run.path / "COMPLETED").read_bytes()
    assert completed == (run.path / "manifest.json").read_bytes()
    assert json.loads(completed)["status"] == "completed"
    assert not list(run.path.rglob(".tmp-*"))
    assert verify(run.path).code == OK


def test_a_failed_run_has_no_completed(tmp_path):
    from nnrun.outputs import RunDir

    run = RunDir(tmp_path / "run")
    run.start({"name": "e"}, {"path": "x"}, "run", [])
    run.finish({"type": "RunError", "exit_code": 14, "message": "boom", "node": "n"})
    assert not (run.path / "COMPLETED").exists()
    assert json.loads((run.path / "manifest.json").read_text())["status"] == "failed"


def test_second_job_in_the_same_directory_is_refused(tmp_path):
    from nnrun.rundir import job_guard

    with job_guard(tmp_path / "run", "run"):
        with pytest.raises(OutputError) as err:
            with job_guard(tmp_path / "run", "run"):
                pass
        assert codes(err) == ["run_dir_locked"] and err.value.exit_code == 15
        assert str(os.getpid()) in str(err.value)
    with job_guard(tmp_path / "run", "run"):  # released at the end of the first job
        pass


def test_a_rerun_drops_old_completed_and_stale_temporaries_first(tmp_path):
    from nnrun.rundir import job_guard

    run = _completed_run(tmp_path / "run")
    stale = [run.path / ".tmp-abc.safetensors", run.path / "tensors" / ".tmp-xyz"]
    for path in stale:
        path.write_bytes(b"half")
    with pytest.raises(ConfigError):
        with job_guard(run.path, "run"):
            assert not (run.path / "COMPLETED").exists()
            assert not (run.path / "manifest.json").exists()
            assert not any(p.exists() for p in stale)
            raise ConfigError("fails validation", [])
    assert not (run.path / "COMPLETED").exists()
    # validate/plan do not write the run directory and leave it alone
    run = _completed_run(tmp_path / "run2")
    with job_guard(run.path, "validate"):
        pass
    assert (run.path / "COMPLETED").exists()


def test_sigterm_during_a_job_marks_the_manifest_terminated(tmp_path):
    import signal

    from nnrun.outputs import RunDir
    from nnrun.rundir import Terminated, job_guard

    run = RunDir(tmp_path / "run")
    with pytest.raises(Terminated):
        with job_guard(run.path, "run"):
            run.start({"name": "e"}, {"path": "x"}, "run", [])
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises long before this ends
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == "terminated" and "SIGTERM" in manifest["error"]["message"]
    assert not (run.path / "COMPLETED").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the job


def test_sigterm_through_the_pipelines_finish_says_terminated(tmp_path):
    from nnrun.outputs import RunDir

    run = RunDir(tmp_path / "run")
    run.start({"name": "e"}, {"path": "x"}, "run", [])
    run.finish({"type": "Terminated", "exit_code": 1, "message": "terminated by SIGTERM",
                "node": None})
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == "terminated" and manifest["error"]["exit_code"] == 143


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_disk_full_is_an_output_error(tmp_path, code):
    from nnrun.outputs import RunDir
    from nnrun.rundir import job_guard

    run = RunDir(tmp_path / "run")
    with pytest.raises(OutputError) as err:
        with job_guard(run.path, "run"):
            run.start({"name": "e"}, {"path": "x"}, "run", [])
            raise OSError(code, os.strerror(code), str(run.path / "tensors" / "x"))
    assert err.value.exit_code == 15 and codes(err) == ["output_not_writable"]
    assert os.strerror(code) in str(err.value)
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"]["exit_code"] == 15


def test_other_os_errors_are_not_disguised(tmp_path):
    from nnrun.rundir import job_guard

    with pytest.raises(FileNotFoundError):
        with job_guard(tmp_path / "run", "run"):
            raise FileNotFoundError(errno.ENOENT, "nope", "/elsewhere/x")


def test_unusable_output_directory_is_an_output_error(tmp_path):
    from nnrun.cli import _check_writable, _OutputDirUnusable
    from nnrun.rundir import job_guard

    (tmp_path / "file").write_text("x")
    with pytest.raises(_OutputDirUnusable) as err:
        _check_writable(tmp_path / "file" / "run")
    assert err.value.error.exit_code == 15
    _check_writable(tmp_path / "new" / "run")  # creatable: fine
    with pytest.raises(OutputError):
        with job_guard(tmp_path / "file" / "run", "run"):
            pass


def test_artifact_names_cannot_leave_the_run_directory(tmp_path):
    from nnrun.outputs import RunDir

    run = RunDir(tmp_path / "run")
    run.start({"name": "e"}, {"path": "x"}, "run", [])
    for name in ("../escape.txt", "/tmp/escape.txt", "a/../../escape.txt"):
        with pytest.raises(OutputError):
            run.write_text(name, "x", "config")
    assert not (tmp_path / "escape.txt").exists()


# ---- verify -----------------------------------------------------------------------------------

def test_verify_flags_a_tampered_tensor(tmp_path):
    from nnrun.verify import TAMPERED, verify

    run = _completed_run(tmp_path / "run")
    tensor = run.path / "tensors" / "save.safetensors"
    data = bytearray(tensor.read_bytes())
    data[-1] ^= 0xFF  # one bit of one value: same size, valid file
    tensor.write_bytes(bytes(data))
    report = verify(run.path)
    assert report.code == TAMPERED and any("sha256" in p for p in report.problems)


def test_verify_flags_a_replaced_tensor_missing_and_extra_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    from nnrun.verify import TAMPERED, verify

    run = _completed_run(tmp_path / "run")
    save_file({"save": torch.zeros(2, 2)}, str(run.path / "tensors" / "save.safetensors"))
    (run.path / "config.yaml").unlink()
    (run.path / "tensors" / "planted.safetensors").write_bytes(b"x")
    problems = " | ".join(verify(run.path).problems)
    assert verify(run.path).code == TAMPERED
    assert "(2, 2)" in problems and "config.yaml: missing" in problems
    assert "planted.safetensors: not recorded" in problems


def test_verify_reports_incomplete_and_inconsistent_directories(tmp_path):
    from nnrun.outputs import RunDir
    from nnrun.verify import INCOMPLETE, OK, TAMPERED, main, verify

    run = RunDir(tmp_path / "running")
    run.start({"name": "e"}, {"path": "x"}, "run", [])
    assert verify(run.path).code == INCOMPLETE
    done = _completed_run(tmp_path / "done")
    (done.path / "COMPLETED").unlink()
    assert verify(done.path).code == TAMPERED  # manifest says completed, no COMPLETED
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "COMPLETED").write_text("2026-01-01\n")  # an old-style or forged marker
    assert verify(lone).code == TAMPERED
    ok = _completed_run(tmp_path / "ok")
    assert main([str(ok.path)]) == OK
    assert main([str(ok.path), str(run.path)]) == INCOMPLETE
    assert main([]) == 22 and main([str(tmp_path / "nope")]) == 22


def test_verify_accepts_a_run_killed_between_completed_and_the_manifest_rename(tmp_path):
    from nnrun.verify import OK, verify

    run = _completed_run(tmp_path / "run")
    manifest = json.loads((run.path / "manifest.json").read_text())
    os.unlink(run.path / "manifest.json")
    manifest["status"] = "running"  # what the directory holds if killed in that instant
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    report = verify(run.path)
    assert report.code == OK and report.notes


# ---- models: safetensors only -----------------------------------------------------------------

def test_pickle_weights_are_refused_unless_allowed(tmp_path):
    from nnrun.models import ModelSpec, refuse_pickle_weights

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    spec = ModelSpec(name="m", path=str(tmp_path))
    with pytest.raises(ModelError) as err:
        refuse_pickle_weights(spec, str(tmp_path))
    assert codes(err) == ["pickle_weights"] and "model.allow_pickle=true" in err.value.issues[0].hint
    refuse_pickle_weights(spec.model_copy(update={"allow_pickle": True}), str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")
    refuse_pickle_weights(spec, str(tmp_path))


def test_load_model_asks_transformers_for_safetensors(monkeypatch):
    import transformers

    from nnrun import models

    seen = {}

    def fake(path, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake)
    spec = models.ModelSpec(name="demo", path="builtin:demo", dtype="float64")
    with pytest.raises(ModelError):
        models.load_model(spec)
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False
    assert models.describe(spec)["allow_pickle"] is False


def test_exported_script_and_its_data_are_scrubbed(tmp_path, monkeypatch):
    from nnrun.cli import _scrub_export

    monkeypatch.setenv("HF_TOKEN", FAKE)
    script = tmp_path / "e_standalone.py"
    script.write_text(f"PROMPT = {FAKE!r}\n")
    (tmp_path / "e_standalone_data.json").write_text(json.dumps({"prompts": [FAKE]}))
    _scrub_export({"export_path": None}, tmp_path)
    for path in tmp_path.iterdir():
        assert FAKE not in path.read_text() and "<redacted:HF_TOKEN>" in path.read_text()
    compile(script.read_text(), str(script), "exec")  # still valid Python


def test_lazy_loading_refuses_custom_model_code_without_trust(tmp_path):
    """nnsight's meta path passes trust_remote_code=True whatever it is given: refuse first."""
    from nnrun.models import ModelSpec, load_lazy

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "auto_map": {"AutoModelForCausalLM": "evil.EvilModel"}}))
    (tmp_path / "evil.py").write_text("raise SystemExit('custom code ran')\n")
    with pytest.raises(ModelError) as err:
        load_lazy(ModelSpec(name="m", path=str(tmp_path)))
    assert codes(err) == ["remote_code"] and "trust_remote_code=true" in err.value.issues[0].hint
