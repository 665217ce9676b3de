"""Find, describe and load models: built-in (tiny, demo), local directories and hub ids.

Invariant: one loading path for every source (transformers `from_pretrained`, then nnsight's
`TransformersModel` wrapper); `trust_remote_code` is false unless the config says otherwise (and an
experiment file cannot say so: nnrun.policy); weights are safetensors only unless the user sets
`model.allow_pickle=true`; a
model is loaded once per process and kept in a small cache keyed by its whole config (at most
NNRUN_MODEL_CACHE models, default 1: a sweep over models never holds them all); a model that
cannot be reached raises `ModelError`, never a hub traceback.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nnrun.errors import Issue, ModelError

BUILTIN_PREFIX = "builtin:"
_LOADED: OrderedDict[str, Any] = OrderedDict()   # spec key → loaded model, least recent first
_SMALL: dict[str, OrderedDict[str, Any]] = {"config": OrderedDict(), "tokenizer": OrderedDict()}
LOADS = {"count": 0}  # weights loaded by this process (a sweep asserts it loads a model once)


class ModelSpec(BaseModel):
    """The `model:` block of the config (configs/model/*.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="short name for the manifest; default: from "
                                               "`path`, so overriding model.path renames it")
    path: str = Field(description="hub id, local directory, or builtin:<tiny-gpt2|tiny-llama|"
                                  "tiny-neox|demo>")
    revision: str | None = Field(None, description="hub branch, tag or commit (pin a commit)")
    dtype: Literal["float32", "float16", "bfloat16", "float64"] = "float32"
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$",
                        description="cpu, cuda, cuda:N, mps or xpu[:N]")
    trust_remote_code: bool = False
    allow_pickle: bool = Field(
        False, description="load pickle weights (pytorch_model.bin, *.pt): pickle can run code; "
                           "set it on your command line only for a checkpoint you trust")
    family: Literal["gpt2", "gpt_neox", "llama"] | None = Field(
        None, description="site map for a model type nnrun does not recognise; a recognised "
                          "config.model_type always wins (so changing model.path stays correct)")
    attn_implementation: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="attention kernel: auto (transformers' fastest, e.g. SDPA; eager "
                            "when the run reads attention weights), eager or sdpa")
    padding_side: Literal["left"] = Field(
        "left", description="causal LMs are padded on the left so `last` is every row's last token")

    @model_validator(mode="after")
    def _default_name(self) -> ModelSpec:
        if self.name is None:
            object.__setattr__(self, "name", name_from_path(self.path))
        return self


def name_from_path(path: str) -> str:
    """`builtin:demo` -> demo, `org/model` -> model, `/data/ckpt/` -> ckpt."""
    return path.removeprefix(BUILTIN_PREFIX).rstrip("/").rsplit("/", 1)[-1] or path


def resolve_path(spec: ModelSpec) -> str:
    """Local directory for builtin models, else the path/id as given."""
    if not spec.path.startswith(BUILTIN_PREFIX):
        return spec.path
    name = spec.path[len(BUILTIN_PREFIX):]
    if name == "demo":
        return str(demo_dir())
    from nnrun.tiny import SHAPES, ensure_tiny_model

    if name not in SHAPES:
        raise ModelError("unknown built-in model:", [Issue(
            "unknown_model", f"`{name}` is not a built-in model", "model.path",
            hint="built-ins: demo, " + ", ".join(SHAPES))])
    return str(ensure_tiny_model(name))


def demo_dir() -> Path:
    return Path(__file__).parent / "assets" / "demo"


def _unavailable(spec: ModelSpec, err: Exception) -> ModelError:
    rev = f" (revision {spec.revision})" if spec.revision else ""
    local = Path(spec.path).expanduser()
    if spec.path.startswith((".", "/", "~")) or local.exists():
        return ModelError("model not found:", [Issue(
            "model_not_found", f"`{spec.path}` is not a model directory ({err.__class__.__name__})",
            "model.path", hint="point model.path at a directory written by save_pretrained")])
    return ModelError("model not available:", [Issue(
        "model_unavailable", f"model `{spec.path}`{rev} is not in the local cache and the hub "
        "cannot be reached (offline?)", "model.path",
        hint=f"download it once on a machine with internet: `hf download {spec.path}"
             f"{' --revision ' + spec.revision if spec.revision else ''}` (or run nnrun there "
             "once); then run with HF_HUB_OFFLINE=1")])


def cache_size() -> int:
    """How many loaded models a process keeps (NNRUN_MODEL_CACHE, default 1; 0: none)."""
    try:
        return max(0, int(os.environ.get("NNRUN_MODEL_CACHE", "1")))
    except ValueError:
        return 1


def _key(spec: ModelSpec) -> str:
    """The cache key: the whole model config, and for a local directory its config.json's mtime
    (a checkpoint rewritten in place is loaded again)."""
    path = spec.path if spec.path.startswith(BUILTIN_PREFIX) else str(Path(spec.path).expanduser())
    try:
        stamp = (Path(path) / "config.json").stat().st_mtime_ns
    except OSError:
        stamp = None
    return f"{spec.model_dump_json()}|{stamp}"


def _remember(table: OrderedDict[str, Any], key: str, value: Any, size: int) -> Any:
    table[key] = value
    table.move_to_end(key)
    while len(table) > size:
        table.popitem(last=False)
    return value


def _cached(kind: str, spec: ModelSpec, build, size: int = 8):
    """Configs and tokenizers: small, read once per process per model config."""
    table = _SMALL[kind]
    key = _key(spec)
    if key in table:
        table.move_to_end(key)
        return table[key]
    return _remember(table, key, build(), size)


def is_loaded(spec: ModelSpec) -> bool:
    return _key(spec) in _LOADED


def release_models() -> None:
    """Drop every cached model and give its memory back (GPU memory included)."""
    _LOADED.clear()
    _free_memory()


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # memory is given back best effort; a failure here must not fail a run
        pass


def load_config(spec: ModelSpec):
    def build():
        if missing_offline(spec):  # fail at once: importing transformers alone takes seconds
            raise _unavailable(spec, FileNotFoundError("config.json is not in the hub cache"))
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(resolve_path(spec), revision=spec.revision,
                                              trust_remote_code=spec.trust_remote_code)
        except (OSError, ValueError) as err:
            raise _unavailable(spec, err) from err

    return _cached("config", spec, build)


def missing_offline(spec: ModelSpec) -> bool:
    """True when transformers would certainly not find the model: the hub is off (offline
    mode), `model.path` is a hub id, and its config.json is not in the local hub cache. A local
    path, a legacy TRANSFORMERS_CACHE folder or online mode say False: transformers decides."""
    from nnrun.model_cache import hub_offline
    from nnrun.provenance import hub_snapshot

    if (not hub_offline() or "TRANSFORMERS_CACHE" in os.environ
            or spec.path.startswith((BUILTIN_PREFIX, ".", "/", "~"))
            or Path(spec.path).expanduser().exists()):
        return False
    return hub_snapshot(spec.path, spec.revision) is None


def model_info(spec: ModelSpec):
    """Module tree and firing order from the config alone (no weights): from the disk cache
    when it has them (no torch needed), else probed on the meta device and cached."""
    from dataclasses import replace

    from nnrun import model_cache
    from nnrun.model_info import info_from_config_json

    key = model_cache.key_for(spec)
    info = model_cache.read(key) if key else None
    if info is None:
        config = load_config(spec)
        info = info_from_config_json(config.to_json_string(use_diff=False))
        if key:
            model_cache.write(key, info)
    return replace(info, family=spec.family) if spec.family and info.family is None else info


def load_tokenizer(spec: ModelSpec):
    return _cached("tokenizer", spec, lambda: _read_tokenizer(spec))


def _read_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolve_path(spec), revision=spec.revision,
                                            trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as err:
        raise _unavailable(spec, err) from err
    tok.padding_side = spec.padding_side
    if tok.pad_token is None:  # nnsight would do the same silently; do it explicitly
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: ModelSpec):
    """The nnsight-wrapped model, loaded once per process per spec and kept in a bounded cache
    (the least recently used model is released before another one is loaded)."""
    key = _key(spec)
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    size = cache_size()
    if len(_LOADED) >= max(size, 1):  # free memory before the next model takes its place
        while len(_LOADED) >= max(size, 1):
            _LOADED.popitem(last=False)
        _free_memory()
    model = _load_weights(spec)
    LOADS["count"] += 1
    if size:
        _remember(_LOADED, key, model, size)
    return model


def _load_weights(spec: ModelSpec):
    import torch
    from nnsight import TransformersModel
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from nnrun.attention import load_argument

    hf_logging.disable_progress_bar()  # one progress bar per sweep job buries the results
    tokenizer = load_tokenizer(spec)
    path = resolve_path(spec)
    refuse_pickle_weights(spec, path)
    try:
        hf = AutoModelForCausalLM.from_pretrained(
            path, revision=spec.revision, dtype=getattr(torch, spec.dtype),
            trust_remote_code=spec.trust_remote_code, attn_implementation=load_argument(spec),
            use_safetensors=None if spec.allow_pickle else True)
    except (OSError, ValueError) as err:
        if not spec.allow_pickle and "safetensors" in str(err).lower():
            raise _pickle_error(spec, "the model has no safetensors weights") from err
        raise _unavailable(spec, err) from err
    check_device(spec.device)
    hf.to(spec.device).eval()
    return TransformersModel(hf, tokenizer=tokenizer)


def check_device(device: str) -> None:
    """A device this torch build can use; otherwise a ModelError before weights move."""
    import torch

    kind = device.split(":")[0]
    backend = getattr(torch, kind, None) if kind != "cpu" else None
    if kind == "cpu" or (backend is not None and backend.is_available()):
        return
    raise ModelError("the device is not available:", [Issue(
        "device_unavailable", f"`{device}` is not available to this torch "
        f"({torch.__version__})", "model.device",
        hint="run with model.device=cpu, or on a machine (and torch build) with that device")])


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def refuse_pickle_weights(spec: ModelSpec, path: str) -> None:
    """Safetensors only: a local checkpoint with pickle weights and no safetensors is refused
    unless `model.allow_pickle=true` (hub models: `use_safetensors=True` does the same)."""
    folder = Path(path).expanduser()
    if spec.allow_pickle or not folder.is_dir():
        return
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise _pickle_error(spec, f"`{spec.path}` holds pickle weights ({', '.join(pickles)}) "
                                  "and no .safetensors file")


def _pickle_error(spec: ModelSpec, message: str) -> ModelError:
    return ModelError("pickle weights refused:", [Issue(
        "pickle_weights", message + "; loading pickle can run arbitrary code", "model.path",
        hint="convert the checkpoint to safetensors (model.save_pretrained(dir)), or, if you "
             "trust it, add `model.allow_pickle=true` on your command line")])


def load_lazy(spec: ModelSpec):
    """nnsight's lazy wrapper: modules on the meta device, no weights (for `scan`).

    nnsight's meta path passes trust_remote_code=True internally; that is safe here only because
    `load_config` (called by every stage first) already refused remote code unless the config
    allows it.
    """
    from nnsight import TransformersModel

    from nnrun.attention import load_argument

    path = resolve_path(spec)
    if not spec.trust_remote_code and getattr(load_config(spec), "auto_map", None):
        # nnsight's meta path builds the model with trust_remote_code=True whatever we pass
        raise ModelError("custom model code refused:", [Issue(
            "remote_code", f"`{spec.path}` ships its own model code (config.json `auto_map`)",
            "model.path", hint="if you trust it, add `model.trust_remote_code=true` (and pin "
                               "model.revision to a commit) on your command line")])
    try:
        # the kernel load_model would use: eager when the run reads attention weights
        # (nnrun.attention), so that they exist under scan too
        kernel = {"attn_implementation": load_argument(spec)} if load_argument(spec) else {}
        return TransformersModel(path, task="text-generation", tokenizer=load_tokenizer(spec),
                                 revision=spec.revision, trust_remote_code=spec.trust_remote_code,
                                 **kernel)
    except (OSError, ValueError) as err:
        raise _unavailable(spec, err) from err


def describe(spec: ModelSpec) -> dict[str, Any]:
    """Model facts for the manifest: path, revision, dtype, device, the hub commit the revision
    resolved to (from the local cache) and a fingerprint of the weight files."""
    from nnrun.provenance import hub_snapshot, weights_fingerprint

    path = resolve_path(spec)
    commit = None
    folder: Path | None = Path(path).expanduser()
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        snapshot = hub_snapshot(spec.path, spec.revision)
        commit = snapshot.name if snapshot is not None else spec.revision
        folder = snapshot
        cfg_file = snapshot / "config.json" if snapshot is not None else cfg_file
    return {"name": spec.name, "path": spec.path, "resolved": path, "revision": spec.revision,
            "commit": commit, "dtype": spec.dtype, "device": spec.device,
            "trust_remote_code": spec.trust_remote_code, "allow_pickle": spec.allow_pickle,
            "config_sha256": _sha(cfg_file) if cfg_file.exists() else None,
            "weights_sha256": weights_fingerprint(folder, spec.allow_pickle),
            # whether this job reuses the weights an earlier job of the process loaded
            "reused_in_process": is_loaded(spec), "process_model_loads": LOADS["count"]}


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
