"""Which attention kernel a run loads: the model's fastest (SDPA where transformers has it) unless
the compiled graph needs the attention weights, which only the eager kernel returns.

Invariant: a run whose graph reads attention weights (the `attention_pattern` site, or a module
that only the eager kernel calls, such as `attn.attn_dropout`) is loaded eager, whatever
`model.attn_implementation` says when it says `auto`; an explicit `sdpa` with such a graph is a
located `ConfigError`, never a silent `None` pattern. The choice is part of the model's cache key
(`ModelSpec` carries it), so a model loaded with SDPA never serves an eager run.
"""

from __future__ import annotations

import logging
import sys

from nnrun.errors import ConfigError, Issue

log = logging.getLogger("nnrun")

WEIGHT_SITES = ("attention_pattern",)   # named sites whose value is the attention weights
EAGER_ONLY_LEAVES = ("attn_dropout",)   # modules called only by the eager attention function


def needs_weights(graph) -> str | None:
    """The id of the first node that needs eager attention, or None."""
    for node in graph.nodes.values():
        site = getattr(node.params, "site", None)
        if not isinstance(site, str):
            continue
        if site in WEIGHT_SITES or site.rsplit(".", 1)[-1] in EAGER_ONLY_LEAVES:
            return node.id
    return None


def choose(spec, graph):
    """The model spec this run loads: `attn_implementation` resolved against the graph.

    `auto` stays `auto` (transformers picks SDPA where the model supports it, else eager) unless
    a node needs the weights; then it becomes `eager`, said in one log line.

    Raises:
        ConfigError: `model.attn_implementation=sdpa` with a graph that reads attention weights.
    """
    node = needs_weights(graph)
    if node is None or spec.attn_implementation == "eager":
        return spec
    if spec.attn_implementation == "sdpa":
        raise ConfigError("the attention implementation cannot give what the graph reads:", [
            Issue("attention_weights_need_eager", f"node `{node}` reads attention weights, which "
                  "SDPA does not compute", "model.attn_implementation", node,
                  hint="leave model.attn_implementation=auto (nnrun then loads eager for this "
                       "run) or set model.attn_implementation=eager")])
    line = (f"nnrun: eager attention for this run: node `{node}` reads attention weights "
            "(SDPA does not return them)")
    print(line, file=sys.stderr, flush=True)
    log.info(line)
    return spec.model_copy(update={"attn_implementation": "eager"})


def load_argument(spec) -> str | None:
    """What to pass to `from_pretrained(attn_implementation=...)`: None lets transformers choose
    its default (SDPA where the architecture supports it, eager otherwise)."""
    return None if spec.attn_implementation == "auto" else spec.attn_implementation


def used_by(model) -> str | None:
    """The kernel the loaded model really uses (for the manifest), if it can be read."""
    hf = getattr(model, "_model", model)
    config = getattr(hf, "config", None)
    return getattr(config, "_attn_implementation", None)
