"""Model-independent site names (`layer_output`, `logits`, ...) mapped to module paths per family.

Invariant: a site resolves to exactly one (module path, input|output) pair for a given layer; raw
module paths (`transformer.h.3.mlp`) pass through unchanged, so any module of any model is reachable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Literal

Event = Literal["input", "output"]


@dataclass(frozen=True)
class Family:
    """Where the standard parts of one architecture family live."""

    layers: str
    attention: str
    mlp: str
    embeddings: str
    final_norm: str
    logits: str
    attn_out: str    # the attention's output projection (inside `attention`): its input is
                     # the heads' outputs side by side


FAMILIES: dict[str, Family] = {
    "gpt2": Family("transformer.h", "attn", "mlp", "transformer.wte", "transformer.ln_f", "lm_head",
                   "c_proj"),
    # transformers >= 5 names GPT-NeoX's unembedding `lm_head` like every other family.
    "gpt_neox": Family("gpt_neox.layers", "attention", "mlp", "gpt_neox.embed_in",
                       "gpt_neox.final_layer_norm", "lm_head", "dense"),
    "llama": Family("model.layers", "self_attn", "mlp", "model.embed_tokens", "model.norm",
                    "lm_head", "o_proj"),
}

#: Families whose module names changed across transformers versions: family → (variant family,
#: module that only the variant has). `family_for(model_type, modules)` picks the variant when the
#: model's module tree has that module, so a model built by an older transformers still resolves.
LEGACY_VARIANTS: dict[str, tuple[str, str]] = {
    "gpt_neox": ("gpt_neox_embed_out", "embed_out"),  # transformers 4.x named it `embed_out`
}
FAMILIES["gpt_neox_embed_out"] = Family(
    "gpt_neox.layers", "attention", "mlp", "gpt_neox.embed_in", "gpt_neox.final_layer_norm",
    "embed_out", "dense")

# transformers `config.model_type` → family; Llama-shaped decoders share one layout.
MODEL_TYPES: dict[str, str] = {
    "gpt2": "gpt2", "gpt_neox": "gpt_neox",
    **{t: "llama" for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2",
                            "olmo", "olmo2", "phi3", "smollm3")},
}

@dataclass(frozen=True)
class Site:
    """What a site name means, independent of the architecture.

    Attributes:
        doc: one line for the README and `--help`-like listings.
        module: a module path template: `{block}` is the layer's block (`transformer.h.{layer}`),
            other `{names}` are `Family` fields (`{block}.{attention}`).
        event: read the module's `input` (first positional argument) or its `output`.
        element: which element of a tuple output (None: the value itself, or element 0 when
            the module returns a tuple, as attention modules do).
        view: code appended to the tensor to give it `axes`; `{name}`s are `ModelInfo.geometry`
            fields (a split into heads: `.unflatten(-1, ({n_heads}, {head_dim}))`). A view of
            the tensor, so a write through it edits the model's own activation.
        axes: dimension names after the view: example, position, then features.
        writable: whether a write there changes what the model computes next.
    """

    doc: str
    module: str
    event: Event = "output"
    element: int | None = None
    view: str = ""
    axes: tuple[str, ...] = ("example", "position", "hidden")
    writable: bool = True

    @property
    def layered(self) -> bool:
        return "{block}" in self.module or "{layer}" in self.module


#: The named sites, by name. A new site is one entry here (and, if it needs a module the
#: families do not name yet, a `Family` field).
SITES: dict[str, Site] = {
    "embeddings": Site("token embeddings (output of the embedding module)", "{embeddings}"),
    "layer_input": Site("residual stream entering block `layer`", "{block}", "input"),
    "layer_output": Site("residual stream leaving block `layer`", "{block}"),
    "attention_output": Site("output of block `layer`'s attention (before the residual add)",
                             "{block}.{attention}", element=0),
    "attention_heads": Site(
        "each attention head's output in block `layer` (the input of the output projection, "
        "split into heads; take one with `head:`)", "{block}.{attention}.{attn_out}", "input",
        view=".unflatten(-1, ({n_heads}, {head_dim}))",
        axes=("example", "position", "head", "head_dim")),
    "attention_pattern": Site(
        "block `layer`'s attention weights, query `position` x `key`, per head (read only; "
        "nnrun loads models with eager attention, which returns them)", "{block}.{attention}",
        element=1, view=".transpose(1, 2)", axes=("example", "position", "head", "key"),
        writable=False),
    "mlp_output": Site("output of block `layer`'s MLP (before the residual add)", "{block}.{mlp}"),
    "final_norm": Site("output of the final layer norm", "{final_norm}"),
    "logits": Site("output of the unembedding (logits over the vocabulary)", "{logits}",
                   axes=("example", "position", "vocab")),
}


def is_named_site(site: str) -> bool:
    return site in SITES


def site_of(site: str, at: Event = "output") -> Site:
    """The descriptor of a named site, or of a raw module path read at `at`."""
    return SITES[site] if site in SITES else Site("a module path", site, at)


def site_needs_layer(site: str) -> bool:
    """Named per-layer sites and raw paths with a `{layer}` placeholder take a layer."""
    return site_of(site).layered


def family_for(model_type: str, modules: Iterable[str] | None = None) -> str | None:
    """Site family of a transformers model type; with the model's module paths, the variant of
    the family that the installed transformers builds (see LEGACY_VARIANTS)."""
    family = MODEL_TYPES.get(model_type)
    if family in LEGACY_VARIANTS and modules is not None:
        variant, marker = LEGACY_VARIANTS[family]
        if marker in set(modules):
            return variant
    return family


def resolve(site: str, family: str | None, at: Event = "output") -> tuple[str, Event]:
    """Map a site to a module path template (with `{layer}` where per-layer) and an event.

    Raises:
        KeyError: a named site was used on a model whose family nnrun does not know.
    """
    if not is_named_site(site):
        return site, at
    if family is None:
        raise KeyError(site)
    fam = FAMILIES[family]
    descriptor = SITES[site]
    names = {f.name: getattr(fam, f.name) for f in fields(Family)}
    return descriptor.module.format(block=f"{fam.layers}.{{layer}}", **names), descriptor.event


def python_ref(module_path: str, layer_expr: str | None = None) -> str:
    """Turn `transformer.h.{layer}.mlp` into `model.transformer.h[layer].mlp` for generated code."""
    parts = []
    for part in module_path.split("."):
        if part == "{layer}":
            parts.append(f"[{layer_expr}]")
        elif part.isdigit():
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}")
    return "model" + "".join(parts)
