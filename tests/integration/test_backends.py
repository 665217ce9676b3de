"""Backends: every built-in experiment survives nnsight's remote round trip (`remote="local"`) with
results equal to a local run; a remote run that cannot start fails before anything is sent, with a
typed error (exit 16) and a failed run directory; the API key is never written.

No server is contacted: an unreachable address, and a small status server on localhost that
answers like NDIF's `/status` and refuses every request.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from nnrun.backends import Backend, BackendSpec
from nnrun.errors import BackendError
from nnrun.pipeline import compile_program, run
from nnrun.run import execute

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
PLANTED = "ndif-planted-key-0123456789abcdef"


def experiment_config(path: Path, limit: int = 4) -> dict:
    raw = yaml.safe_load(path.read_text())
    raw.pop("defaults", None)
    config = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    if config.get("data"):
        config["data"]["limit"] = limit  # the round trip, not the dataset, is under test
    return {**config, "model": {"path": "builtin:demo"}}


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_builtin_experiment_survives_the_remote_round_trip(path):
    compiled = compile_program(experiment_config(path), path)
    backend = Backend(BackendSpec(kind="dry_run"), compiled.model)
    model = backend.load_model()
    local = execute(compiled, model)
    remote = execute(compiled, model, backend=backend)
    assert local.keys() == remote.keys() and local
    assert all(same(remote[k], local[k]) for k in local)


class FakeNdif(BaseHTTPRequestHandler):
    """GET /status lists one deployment; every other request fails (HTTP 503)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/status"):
            body = json.dumps({"deployments": {"a": {
                "repo_id": "EleutherAI/pythia-70m", "revision": "main",
                "application_state": "RUNNING"}}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(503)

    def do_POST(self):  # noqa: N802
        self.send_error(503)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fake_ndif():
    server = HTTPServer(("127.0.0.1", 0), FakeNdif)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def remote_config(model_path: str, host: str) -> dict:
    config = experiment_config(REPO / "experiments" / "patching_single.yaml")
    return {**config, "model": {"path": model_path},
            "backend": {"kind": "ndif", "host": host}}


def failed_run(config: dict, tmp_path: Path) -> tuple[BackendError, dict]:
    with pytest.raises(BackendError) as info:
        run(config, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"]["exit_code"] == 16
    assert not (tmp_path / "run" / "COMPLETED").exists()
    return info.value, manifest


def test_missing_key_is_refused_before_anything_is_sent(tmp_path, monkeypatch, fake_ndif):
    from nnsight import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    err, _ = failed_run(remote_config("EleutherAI/pythia-70m", fake_ndif), tmp_path)
    assert [i.code for i in err.issues] == ["missing_api_key"]
    assert "NDIF_API_KEY" in err.issues[0].hint


def test_a_local_model_cannot_run_remotely(tmp_path, monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", PLANTED)
    err, _ = failed_run(remote_config("builtin:demo", "http://127.0.0.1:9"), tmp_path)
    assert [(i.code, i.path) for i in err.issues] == [("remote_local_model", "model.path")]
    assert "ndif_dry_run" in err.issues[0].hint


def test_an_unreachable_service_is_a_backend_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", PLANTED)
    err, manifest = failed_run(remote_config("EleutherAI/pythia-70m", "http://127.0.0.1:9"),
                               tmp_path)
    assert [i.code for i in err.issues] == ["service_unreachable"]
    assert "127.0.0.1:9" in err.issues[0].message
    assert PLANTED not in json.dumps(manifest)


def test_a_model_the_service_does_not_host(tmp_path, monkeypatch, fake_ndif):
    monkeypatch.setenv("NDIF_API_KEY", PLANTED)
    err, _ = failed_run(remote_config("EleutherAI/pythia-160m", fake_ndif), tmp_path)
    assert [i.code for i in err.issues] == ["model_not_hosted"]
    assert "did you mean `EleutherAI/pythia-70m`?" in err.issues[0].hint


def test_a_failing_service_is_a_backend_error(monkeypatch, fake_ndif):
    """The service is up and hosts the model, then refuses the request: a BackendError."""
    import nnsight.modeling.huggingface as hf_wrapper

    from nnrun.tiny import ensure_tiny_model

    monkeypatch.setenv("NDIF_API_KEY", PLANTED)
    # The hub id resolves offline to the tiny model's files, as the hub cache would.
    local = ensure_tiny_model("tiny-gpt2")
    monkeypatch.setitem(hf_wrapper._ID_CACHE, str(local), "EleutherAI/pythia-70m")
    config = remote_config(str(local), fake_ndif)
    config["graph"] = {"scopes": [{"id": "t", "kind": "trace", "input": "the cat sat"}],
                       "nodes": [{"id": "r", "op": "read", "site": "logits",
                                  "position": "last", "scope": "t"},
                                 {"id": "s", "op": "save"}],
                       "edges": [{"src": "r", "dst": "s"}]}
    config.pop("data", None)
    backend = Backend(BackendSpec(kind="ndif", host=fake_ndif, check_service=False),
                      compile_program(config).model)
    with pytest.raises(BackendError) as info:
        compiled = compile_program(config)
        try:
            execute(compiled, backend.load_model(), backend=backend)
        except Exception as err:  # what pipeline.run does with a failure
            raise (backend.failure(err) or err) from err
    assert [i.code for i in info.value.issues] == ["remote_failed"]


def test_the_api_key_is_in_no_file_of_a_run_or_its_exported_script(tmp_path, monkeypatch):
    from nnrun.export import export_script

    monkeypatch.setenv("NDIF_API_KEY", PLANTED)
    config = experiment_config(REPO / "experiments" / "patching_single.yaml")
    config["backend"] = {"kind": "dry_run"}
    run(config, tmp_path / "run")
    export_script(compile_program(config), tmp_path / "run" / "standalone.py")
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(files) > 5 and (tmp_path / "run" / "COMPLETED").exists()
    assert not [p.name for p in files if PLANTED.encode() in p.read_bytes()]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["backend"] == {"kind": "dry_run"}
