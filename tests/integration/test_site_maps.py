"""Every named site of every family resolves to a real module of the INSTALLED transformers.

Site maps are module paths written by hand; transformers renames modules between major versions
(GPT-NeoX's unembedding was `embed_out` in 4.x and is `lm_head` in 5.x). These tests build a tiny
random model of every model type nnrun maps (offline, from a config) and check each site against
the model's module tree and the shapes of what the module outputs in a real forward pass.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from nnrun.sites import FAMILIES, LEGACY_VARIANTS, MODEL_TYPES, SITES, family_for, resolve

VOCAB, HIDDEN, LAYERS = 40, 32, 2


def tiny_config(model_type: str):
    """A 2-layer, width-32 config of ``model_type``, or skip if this transformers lacks it."""
    from transformers import AutoConfig

    if model_type == "gpt2":
        kw = dict(n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=64)
    else:
        kw = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=HIDDEN // 4,
                  max_position_embeddings=64)
        if model_type == "mixtral":
            kw.update(num_local_experts=2, num_experts_per_tok=1)
    try:
        cfg = AutoConfig.for_model(model_type, vocab_size=VOCAB, pad_token_id=0, bos_token_id=0,
                                   eos_token_id=0, **kw)
    except ValueError as err:  # model type unknown to the installed transformers
        pytest.skip(f"transformers has no {model_type!r}: {err}")
    cfg._attn_implementation = "eager"
    return cfg


def build(model_type: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()


def site_paths(family: str, n_layers: int) -> dict[str, list[tuple[str, str]]]:
    """site → the (module path, event) pairs it names: layer 0 and the last layer if per-layer."""
    out = {}
    for site, descriptor in SITES.items():
        per_layer = descriptor.layered
        template, event = resolve(site, family)
        layers = (0, n_layers - 1) if per_layer else (None,)
        out[site] = [(template.format(layer=layer) if per_layer else template, event)
                     for layer in layers]
    return out


def test_every_family_is_used_by_a_model_type_or_is_a_legacy_variant():
    variants = {v for v, _ in LEGACY_VARIANTS.values()}
    assert set(FAMILIES) == set(MODEL_TYPES.values()) | variants
    assert variants.isdisjoint(MODEL_TYPES.values())


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_every_named_site_resolves_to_a_module_with_the_right_output(model_type):
    model = build(model_type)
    modules = dict(model.named_modules())
    family = family_for(model_type, modules)
    assert family == MODEL_TYPES[model_type]  # the installed transformers builds no legacy variant
    n_layers = model.config.get_text_config().num_hidden_layers

    captured: dict[tuple[str, str], torch.Tensor] = {}
    paths = site_paths(family, n_layers)
    for site, pairs in paths.items():
        for path, event in pairs:
            assert path in modules, (
                f"{model_type}: site {site!r} maps to {path!r}, which {type(model).__name__} of "
                f"this transformers does not have")
            mod = modules[path]
            if event == "input":
                mod.register_forward_pre_hook(
                    lambda m, args, kwargs, key=(path, event): captured.__setitem__(
                        key, (args[0] if args else kwargs["hidden_states"])),
                    with_kwargs=True)
            else:
                mod.register_forward_hook(
                    lambda m, a, out, key=(path, event): captured.__setitem__(
                        key, out[0] if isinstance(out, tuple) else out))

    ids = torch.tensor([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[-1] == VOCAB

    for site, pairs in paths.items():
        for key in pairs:
            assert key in captured, f"{model_type}: {site} ({key}) never fired in a forward pass"
            value = captured[key]
            want = VOCAB if site == "logits" else HIDDEN
            assert value.shape[-1] == want, (model_type, site, key, tuple(value.shape))
            assert value.shape[-2] == ids.shape[1], (model_type, site, key, tuple(value.shape))
    # The logits site is THE unembedding: its output is what the model returns -- except that
    # Gemma 2 soft-caps the unembedding's output (cap * tanh(x / cap)) outside any module, so its
    # `logits` site holds the logits BEFORE the cap (same argmax, larger differences).
    (logits_key,) = paths["logits"]
    site_logits = captured[logits_key]
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        site_logits = cap * torch.tanh(site_logits / cap)
    torch.testing.assert_close(site_logits, logits)


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_nnrun_model_info_accepts_every_named_site(model_type):
    """The same check through nnrun's meta-device probe, which validation uses."""
    from nnrun.model_info import info_from_config

    info = info_from_config(tiny_config(model_type))
    assert info.family == MODEL_TYPES[model_type]
    for site, pairs in site_paths(info.family, info.n_layers).items():
        for path, event in pairs:
            assert (path, event) in info.order, (model_type, site, path, event)


def test_gpt_neox_logits_is_lm_head_in_transformers_5():
    """Regression (issue 8): the map said `embed_out`, which transformers 5 no longer has."""
    assert resolve("logits", "gpt_neox") == ("lm_head", "output")
    model = build("gpt_neox")
    names = {p for p, _ in model.named_modules()}
    assert "lm_head" in names and "embed_out" not in names


def test_legacy_gpt_neox_module_tree_picks_the_embed_out_variant():
    """A GPT-NeoX built by transformers 4.x (unembedding `embed_out`) still resolves."""
    legacy_tree = ["", "gpt_neox", "gpt_neox.embed_in", "gpt_neox.layers", "gpt_neox.layers.0",
                   "gpt_neox.final_layer_norm", "embed_out"]
    family = family_for("gpt_neox", legacy_tree)
    assert family == "gpt_neox_embed_out"
    assert resolve("logits", family) == ("embed_out", "output")
    for site in SITES:
        if site != "logits":
            assert resolve(site, family) == resolve(site, "gpt_neox")
    assert family_for("gpt_neox") == "gpt_neox"
    assert family_for("llama", legacy_tree) == "llama"
    assert family_for("no_such_type") is None


def test_builtin_patching_validates_on_tiny_neox(tmp_path):
    """Regression (issue 8): `logits` reads of the built-in experiment failed on a GPT-NeoX."""
    from nnrun_inprocess import run_nnrun

    result = run_nnrun(["experiment=patching", "model=tiny_gpt2", "model.path=builtin:tiny-neox",
                        "model.name=tiny-neox", "model.family=null", "stage=validate"],
                       cwd=tmp_path, run_dir=tmp_path / "run")
    assert result.code == 0, result.explain()
    assert "is valid" in result.stdout


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_attention_heads_site_holds_n_heads_times_head_dim(model_type):
    """The per-head site's input splits into ModelInfo's (n_heads, head_dim) on every family."""
    from nnrun.model_info import info_from_config

    info = info_from_config(tiny_config(model_type))
    model = build(model_type)
    template, event = resolve("attention_heads", info.family)
    captured = []
    model.get_submodule(template.format(layer=0)).register_forward_pre_hook(
        lambda m, args: captured.append(args[0]))
    with torch.no_grad():
        model(input_ids=torch.tensor([[3, 5, 7]]))
    assert event == "input"
    assert captured[0].shape[-1] == info.n_heads * info.head_dim
    assert captured[0].unflatten(-1, (info.n_heads, info.head_dim)).shape[-2:] == (
        info.n_heads, info.head_dim)
