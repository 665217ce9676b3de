"""The on-disk cache of a model's structure facts: keyed by config.json, never trusted blindly."""

from __future__ import annotations

import json

import pytest

from nnrun import model_cache
from nnrun.model_info import ModelInfo
from nnrun.models import ModelSpec

INFO = ModelInfo(model_type="gpt2", family="gpt2", n_layers=2, hidden_size=8, vocab_size=11,
                 order={("transformer.h.0", "input"): 0, ("transformer.h.0", "output"): 1},
                 tuple_outputs=frozenset({"transformer.h.0"}), n_params=123, n_heads=2,
                 head_dim=4, n_kv_heads=2, max_positions=None)


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("NNRUN_CACHE", str(tmp_path / "cache"))
    model_cache._READ.clear()
    yield
    model_cache._READ.clear()


def local_model(tmp_path, config: dict) -> ModelSpec:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return ModelSpec(path=str(folder))


def test_an_entry_round_trips():
    assert model_cache.from_json(json.loads(json.dumps(model_cache.to_json(INFO)))) == INFO
    model_cache.write("k", INFO)
    model_cache._READ.clear()
    assert model_cache.read("k") == INFO


def test_the_key_follows_the_config_bytes(tmp_path):
    spec = local_model(tmp_path, {"model_type": "gpt2", "n_layer": 2})
    first = model_cache.key_for(spec)
    assert first and model_cache.key_for(spec) == first
    local_model(tmp_path, {"model_type": "gpt2", "n_layer": 3})
    assert model_cache.key_for(spec) not in (None, first)


def test_models_with_their_own_code_or_unpinned_online_are_not_cached(tmp_path, monkeypatch):
    assert model_cache.key_for(local_model(tmp_path, {"model_type": "x", "auto_map": {}})) is None
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert model_cache.key_for(ModelSpec(path="org/not-a-local-dir")) is None


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],                          # truncated
    lambda text: "not json",
    lambda text: text.replace('"format": 1', '"format": 99'),     # another layout
    lambda text: text.replace('"key": "k"', '"key": "other"'),    # a renamed or copied file
    lambda text: text.replace('"n_layers": 2', '"n_layers": "2"'),
    lambda text: text.replace('"n_layers": 2', '"n_layers": true'),  # a bool is not an int
    lambda text: text.replace('"n_params": 123, ', ''),           # a field missing
    lambda text: text.replace('"n_params"', '"n_params": 1, "new_field": 1, "x"'),  # one more
    lambda text: text.replace('["transformer.h.0", "input", 0]', '["transformer.h.0", 0]'),
])
def test_a_damaged_or_stale_entry_is_ignored(damage):
    model_cache.write("k", INFO)
    entry = model_cache.folder() / "k.json"
    entry.write_text(damage(entry.read_text()))
    model_cache._READ.clear()
    assert model_cache.read("k") is None


def test_a_corrupt_entry_is_rebuilt_by_the_probe():
    from nnrun.models import model_info

    spec = ModelSpec(path="builtin:demo")
    key = model_cache.key_for(spec)
    entry = model_cache.folder() / f"{key}.json"
    entry.parent.mkdir(parents=True)
    entry.write_text('{"format": 1, "key": "' + key + '", "info": {"n_layers": 999}}')
    info = model_info(spec)
    assert info.n_layers != 999 and info.order
    model_cache._READ.clear()
    assert model_cache.read(key) == info  # the probe's facts replaced the corrupt entry


def hub_cache(tmp_path, monkeypatch, cached: tuple[str, ...] = ()):
    """An offline hub cache (HF_HUB_CACHE) holding `cached` repos, and a transformers that must
    not be asked (it raises, so a test sees whether nnrun went to it)."""
    import huggingface_hub.constants
    import transformers

    root = tmp_path / "hub"
    for repo in cached:
        folder = root / f"models--{repo.replace('/', '--')}"
        (folder / "snapshots" / "abc123").mkdir(parents=True)
        (folder / "snapshots" / "abc123" / "config.json").write_text("{}")
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_CACHE", raising=False)

    def asked(*args, **kwargs):
        raise OSError("transformers was asked")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", asked)


def test_a_hub_model_missing_offline_fails_without_transformers(tmp_path, monkeypatch):
    from nnrun.errors import ModelError
    from nnrun.models import load_config, missing_offline

    hub_cache(tmp_path, monkeypatch, cached=("org/cached",))
    missing = ModelSpec(path="org/no-such-model")
    assert missing_offline(missing)
    with pytest.raises(ModelError) as err:
        load_config(missing)
    assert err.value.issues[0].code == "model_unavailable"
    assert "transformers was asked" not in str(err.value.__cause__)
    # anything that may be found goes to transformers as before
    for spec in (ModelSpec(path="org/cached"), ModelSpec(path=str(tmp_path)),
                 ModelSpec(path="builtin:demo")):
        assert not missing_offline(spec), spec.path
    monkeypatch.setenv("TRANSFORMERS_CACHE", str(tmp_path))  # a legacy cache folder: unknown
    assert not missing_offline(missing)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online: transformers downloads it, or says why not
    assert not missing_offline(missing)
