"""Where a compiled program runs: here (`local`), here after nnsight's remote round trip (`dry_run`:
`remote="local"` serialises the request, deserialises it with local modules hidden and runs it
on local weights), or on NDIF (`ndif`: no local weights, the request carries program and data).

Invariant: the same `program.py` runs on every backend; a backend only owns how the model is
loaded, the keyword arguments of the program's outermost context (`data["backend"]`), the checks
made before anything is sent, and how remote failures become nnrun errors. The NDIF API key is
read from the environment or nnsight's own config and is never written anywhere.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nnrun.errors import BackendError, ConfigError, Issue
from nnrun.models import BUILTIN_PREFIX, ModelSpec

KEY_HINT = ("export NDIF_API_KEY=<your key> (get one at the NDIF website), or save it once with "
            "`python -c \"import nnsight; nnsight.login('<your key>')\"`")


class BackendSpec(BaseModel):
    """The `backend:` block of the config (configs/backend/*.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "dry_run", "ndif"] = "local"
    host: str | None = Field(None, description="NDIF host; default: nnsight's (or $NDIF_HOST)")
    max_examples_per_request: int = Field(
        32, ge=1, description="ndif: examples per request (each chunk is one remote job)")
    check_service: bool = Field(True, description="ndif: ask the service for its status and "
                                                  "hosted models before compiling")

    @property
    def remote(self) -> bool:
        return self.kind == "ndif"


def backend_spec(config: dict[str, Any]) -> BackendSpec:
    try:
        return BackendSpec.model_validate(config.get("backend") or {})
    except ValidationError as err:
        raise ConfigError("the `backend` config has problems:", [Issue(
            "invalid_backend_config", e["msg"].lower(), "backend." + ".".join(map(str, e["loc"])),
            hint="backend=local | backend=ndif | backend=ndif_dry_run")
            for e in err.errors()]) from None


class Backend:
    """One run's backend: pre-flight checks, model, per-chunk context arguments, provenance."""

    def __init__(self, spec: BackendSpec, model: ModelSpec) -> None:
        self.spec, self.model_spec = spec, model
        self.jobs: list[dict[str, Any]] = []
        self._pending: Any = None

    # --- before anything is compiled or sent -------------------------------------------------

    def preflight(self) -> None:
        """Every reason a remote run cannot start, as a BackendError (exit 16)."""
        if not self.spec.remote:
            return
        _check_hub_id(self.model_spec)
        _check_key()
        if self.spec.check_service:
            _check_service(self.spec.host, self.model_spec)

    def cap_batch(self, batch_size: int) -> int:
        return min(batch_size, self.spec.max_examples_per_request) if self.spec.remote else \
            batch_size

    # --- running -------------------------------------------------------------------------------

    def load_model(self):
        from nnrun.models import load_lazy, load_model

        if self.spec.remote:  # modules on the meta device: the weights stay on the service
            return load_lazy(self.model_spec)
        return load_model(self.model_spec)

    def chunk_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the program's outermost context for the next chunk."""
        if self.spec.kind == "dry_run":
            return {"remote": "local"}
        if not self.spec.remote:
            return {}
        from nnsight.intervention.backends.remote import RemoteBackend

        # One backend object per chunk: one remote job, whose id is recorded afterwards.
        self._pending = (RemoteBackend(self._model_key(), host=self.spec.host,
                                       api_key=api_key(), blocking=True), time.time())
        return {"backend": self._pending[0]}

    def chunk_done(self) -> None:
        if self._pending is None:
            return
        remote, started = self._pending
        meta = remote.meta if isinstance(remote.meta, dict) else {}  # the service's timings
        self.jobs.append({"job_id": remote.job_id, "seconds": round(time.time() - started, 3),
                          **{k: v for k, v in meta.items() if "key" not in k.lower()}})
        self._pending = None

    def _model_key(self) -> str:
        if not hasattr(self, "_key"):
            self._key = self._lazy_key()
        return self._key

    def _lazy_key(self) -> str:
        from nnrun.models import load_lazy

        try:
            return load_lazy(self.model_spec).to_model_key()
        except Exception as err:  # the hub could not name the model (offline, unknown id)
            raise BackendError("the model cannot be named for NDIF:", [Issue(
                "remote_model_key", f"`{self.model_spec.path}`: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}", "model.path",
                hint="use the model's hub id (e.g. meta-llama/Llama-3.1-70B); the hub must be "
                     "reachable to resolve it")]) from err

    def failure(self, err: BaseException) -> BackendError | None:
        """A remote failure (service error, transport) as a BackendError; None otherwise."""
        if not self.spec.remote:
            return None
        cause = err
        while cause is not None:
            name = type(cause).__name__
            if name == "RemoteError" or type(cause).__module__.startswith(("httpx", "websocket")):
                return BackendError("the remote run failed:", [Issue(
                    "remote_failed", f"{name}: {str(cause).strip().splitlines()[0]}"
                    if str(cause).strip() else name, "backend",
                    hint="check the service status (python -c \"import nnsight; "
                         "print(nnsight.status())\") and retry; the run directory says which "
                         "jobs finished")])
            cause = cause.__cause__ or cause.__context__
        return None

    def record(self) -> dict[str, Any]:
        """The manifest's `backend` entry (never the API key)."""
        out: dict[str, Any] = {"kind": self.spec.kind}
        if self.spec.remote:
            from nnsight import CONFIG

            out.update({"host": self.spec.host or CONFIG.API.HOST,
                        "model": self.model_spec.path, "revision": self.model_spec.revision,
                        "max_examples_per_request": self.spec.max_examples_per_request,
                        "jobs": self.jobs})
        return out


def _check_hub_id(model: ModelSpec) -> None:
    path = model.path
    local = path.startswith(BUILTIN_PREFIX) or Path(path).expanduser().exists() or \
        path.startswith(("/", ".", "~"))
    if local:
        raise BackendError("this model cannot run on NDIF:", [Issue(
            "remote_local_model", f"`{path}` is a local model; NDIF runs models it hosts, "
            "named by their hub id", "model.path",
            hint="choose a hub model NDIF hosts (model=llama_70b, or model.path=<org/name>); "
                 "to check that a program is remote-safe on a local model use "
                 "backend=ndif_dry_run")])


def api_key() -> str | None:
    """The NDIF API key from $NDIF_API_KEY or nnsight's config (never logged or written)."""
    key = os.environ.get("NDIF_API_KEY")
    if key:
        return key
    from nnsight import CONFIG

    return CONFIG.API.APIKEY or None


def _check_key() -> None:
    if not api_key():
        raise BackendError("no NDIF API key:", [Issue(
            "missing_api_key", "backend=ndif needs an API key and none is set", "backend",
            hint=KEY_HINT)])


def _check_service(host: str | None, model: ModelSpec) -> None:
    """The service answers its status request and hosts the model (no request is sent)."""
    from nnsight import CONFIG, ndif

    where = host or CONFIG.API.HOST
    previous, CONFIG.API.HOST = CONFIG.API.HOST, where
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # nnsight prints its own DOWN banner
            status = ndif.status(raw=True)
    finally:
        CONFIG.API.HOST = previous
    if not status:
        raise BackendError("NDIF cannot be reached:", [Issue(
            "service_unreachable", f"no answer from {where}", "backend.host",
            hint="check your network and the service status; set backend.host=... (or "
                 "NDIF_HOST) for another deployment")])
    hosted = sorted({str(d.get("repo_id")) for d in status.get("deployments", {}).values()
                     if isinstance(d, dict)})
    if hosted and model.path.lower() not in {h.lower() for h in hosted}:
        from nnrun.errors import did_you_mean

        raise BackendError("the model is not hosted on NDIF:", [Issue(
            "model_not_hosted", f"`{model.path}` is not among the {len(hosted)} models "
            f"{where} serves", "model.path", hint=did_you_mean(model.path, hosted))])
