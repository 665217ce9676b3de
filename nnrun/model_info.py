"""What nnrun knows about a model without its weights: module paths, firing order, sizes, family.

Invariant: built from the config alone on the meta device (no weights, no download beyond the
config), by one forward pass with hooks, so the firing order is the model's real one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from nnrun.errors import close_matches
from nnrun.sites import family_for


@dataclass(frozen=True)
class ModelInfo:
    """Module tree and forward-execution order of one architecture.

    Attributes:
        model_type: transformers `config.model_type`.
        family: nnrun site family (`gpt2`, `gpt_neox`, `llama`, or a variant named in
            `sites.LEGACY_VARIANTS`) or None if unknown.
        n_layers, hidden_size, vocab_size: from the config.
        order: (module path, event) → rank in the forward pass (0 = first).
        tuple_outputs: module paths whose output is a tuple (read element 0).
        n_heads, head_dim, n_kv_heads: attention geometry from the config (`head_dim` defaults
            to hidden_size / n_heads; `n_kv_heads` to n_heads).
        n_params: parameter count (shared weights counted once).
        max_positions: the longest sequence the model takes (its position table), if known.
        logits_to_keep: its forward takes `logits_to_keep` (unembed only the last positions).
    """

    model_type: str
    family: str | None
    n_layers: int
    hidden_size: int
    vocab_size: int
    order: dict[tuple[str, str], int] = field(repr=False)
    tuple_outputs: frozenset[str] = field(repr=False)
    n_params: int = 0   # parameters (tied weights once): the weights' memory for the budget
    n_heads: int = 0    # attention (query) heads per layer
    head_dim: int = 0   # size of one head's output
    n_kv_heads: int = 0  # key/value heads (fewer than n_heads with grouped-query attention)
    max_positions: int | None = None
    logits_to_keep: bool = False

    @property
    def modules(self) -> list[str]:
        return sorted({path for path, _ in self.order})

    @property
    def geometry(self) -> dict[str, int]:
        """The sizes a site's `view` may name (`sites.Site.view`)."""
        return {"hidden_size": self.hidden_size, "n_heads": self.n_heads,
                "head_dim": self.head_dim, "n_kv_heads": self.n_kv_heads}

    def has_module(self, path: str) -> bool:
        return (path, "output") in self.order

    def rank(self, path: str, event: str) -> int:
        return self.order[(path, event)]

    def suggest(self, path: str) -> str:
        """Did-you-mean hint for a module path the model does not have."""
        close = close_matches(path, self.modules, n=3, cutoff=0.5)
        if close:
            return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"
        return "list the model's modules with `nnrun stage=modules model=...`"


def info_from_config(config: Any) -> ModelInfo:
    """Build the model on the meta device and record its firing order with hooks."""
    import copy
    import inspect

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(config)
    config.pad_token_id = None  # its pad check reads tensor values, which meta tensors lack
    if hasattr(config, "_experts_implementation"):
        # Mixture-of-experts (Mixtral, ...): the default grouped_mm kernel has no float32 meta
        # implementation and eager routing calls nonzero(); batched_mm runs on meta tensors and
        # calls the same expert modules, so the firing order is unchanged.
        try:
            from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
        except ImportError:  # a transformers without the experts interface
            ALL_EXPERTS_FUNCTIONS = {}
        if "batched_mm" in ALL_EXPERTS_FUNCTIONS:
            config._experts_implementation = "batched_mm"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    order: dict[tuple[str, str], int] = {}
    tuples: set[str] = set()

    def note(path: str, event: str) -> None:
        order.setdefault((path, event), len(order))  # first occurrence = the prompt's forward

    for path, module in model.named_modules():
        if not path:
            continue
        module.register_forward_pre_hook(lambda m, a, p=path: note(p, "input"))

        def on_output(m, a, out, p=path):
            note(p, "output")
            if isinstance(out, tuple):
                tuples.add(p)
        module.register_forward_hook(on_output)
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 4, dtype=torch.long, device="meta"))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelInfo(
        model_type=config.model_type,
        family=family_for(config.model_type, (p for p, _ in model.named_modules())),
        n_layers=text.num_hidden_layers,
        hidden_size=text.hidden_size,
        vocab_size=text.vocab_size,
        order=order,
        tuple_outputs=frozenset(tuples),
        n_params=sum(p.numel() for p in model.parameters()),
        **_heads(text),
        max_positions=getattr(text, "n_positions", None)
        or getattr(text, "max_position_embeddings", None),
        logits_to_keep="logits_to_keep" in inspect.signature(model.forward).parameters,
    )


def _heads(text: Any) -> dict[str, int]:
    """Head geometry of a text config (GPT-2's `n_head` is aliased as num_attention_heads)."""
    n_heads = getattr(text, "num_attention_heads", None) or 0
    head_dim = getattr(text, "head_dim", None) or (text.hidden_size // n_heads if n_heads else 0)
    return {"n_heads": n_heads, "head_dim": head_dim,
            "n_kv_heads": getattr(text, "num_key_value_heads", None) or n_heads}


@lru_cache(maxsize=16)
def info_from_config_json(config_json: str) -> ModelInfo:
    """Cached by the config's JSON text: the same architecture is probed once per process."""
    import json

    from transformers import AutoConfig

    data = json.loads(config_json)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    return info_from_config(config)
