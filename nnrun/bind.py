"""Bind a graph to a tokenizer: prompts → token counts, foreach grids → points, answers → token
ids, positions → indices counted from the end, and tick labels for every axis.

Invariant: every position emitted into a program is negative (counted from the end of the prompt),
so left padding of shorter prompts in a batched trace can never shift it. The positive indices and
token strings are kept for labels and metadata.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from nnrun.errors import ConfigError, Issue, raise_if_issues
from nnrun.graph import Graph
from nnrun.nodes.fields import concrete_layers, loop_var


@dataclass(frozen=True)
class InvokeBinding:
    """One invoke scope after binding: its prompt(s) and, for a foreach, its grid of points."""

    scope: str
    prompts: tuple[str, ...]          # one per point for a prompt foreach, else the input
    batched: bool                     # the input is a list of prompts (several rows)
    n_tokens: int
    tokens: tuple[str, ...]           # token strings of the first prompt
    loop_vars: tuple[str, ...] = ()
    points: tuple[tuple[Any, ...], ...] = ((),)
    shape: tuple[int, ...] = ()
    coords: dict[str, list[str]] = field(default_factory=dict)

    def position(self, spec) -> int | None:
        """A fixed position spec as a negative index (None = all positions)."""
        if spec == "all":
            return None
        if spec == "last":
            return -1
        return spec - self.n_tokens if spec >= 0 else spec


@dataclass(frozen=True)
class Binding:
    invokes: dict[str, InvokeBinding]
    token_ids: dict[str, int]
    node_coords: dict[str, dict[str, list[str]]]


def bind(graph: Graph, tokenizer) -> Binding:
    """Resolve everything that needs the tokenizer (but no weights).

    Raises:
        ConfigError: a prompt position out of range, a multi-token answer, ragged prompts.
    """
    issues: list[Issue] = []
    invokes = {}
    for scope in _invoke_scopes(graph):
        try:
            invokes[scope.id] = _bind_invoke(scope, graph, tokenizer)
        except ValueError as err:
            issues.append(Issue("bad_input", str(err), _scope_path(graph, scope.id), scope.id))
    token_ids = _token_ids(graph, tokenizer, issues)
    raise_if_issues(issues, ConfigError, f"inputs of `{graph.spec.name}`")
    return Binding(invokes, token_ids, _node_coords(graph, invokes))


def _invoke_scopes(graph: Graph):
    return [s for s in graph.scopes.values()
            if s.kind == "invoke" or (s.kind in ("trace", "generate") and s.input is not None)]


def _tokens(tokenizer, prompt: str) -> list[str]:
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode([i]) for i in ids]


def _bind_invoke(scope, graph: Graph, tokenizer) -> InvokeBinding:
    foreach = dict(scope.foreach or {})
    prompts = foreach.get("prompt") or scope.input
    batched = isinstance(scope.input, list) and "prompt" not in foreach
    plist = list(prompts) if isinstance(prompts, list) else [prompts]
    if not plist or not all(isinstance(p, str) and p.strip() for p in plist):
        raise ValueError("prompts must be non-empty strings")
    token_lists = [_tokens(tokenizer, p) for p in plist]
    lengths = {len(t) for t in token_lists}
    if "prompt" in foreach and len(lengths) > 1 and "position" in foreach:
        raise ValueError(f"foreach over prompts and positions needs prompts of equal length "
                         f"(token counts: {sorted(lengths)})")
    n_tokens = max(lengths)
    values, coords = {}, {}
    for var, spec in foreach.items():
        values[var], coords[var] = _loop_values(var, spec, graph, plist, token_lists[0], n_tokens)
    points = tuple(itertools.product(*values.values())) if values else ((),)
    return InvokeBinding(scope.id, tuple(plist), batched, n_tokens, tuple(token_lists[0]),
                         tuple(foreach), points, tuple(len(v) for v in values.values()), coords)


def _loop_values(var, spec, graph, prompts, tokens, n_tokens):
    if var == "layer":
        n_layers = graph.info.n_layers if graph.info else 0
        layers = concrete_layers(spec, n_layers) or []
        if any(not 0 <= v < n_layers for v in layers):
            raise ValueError(f"foreach layer {spec!r} is outside 0..{n_layers - 1}")
        return layers, [str(v) for v in layers]
    if var == "position":
        wanted = range(n_tokens) if spec == "all" else (
            [n_tokens - 1] if spec == "last" else (spec if isinstance(spec, list) else [spec]))
        positive = [p + n_tokens if p < 0 else p for p in wanted]
        if any(not 0 <= p < n_tokens for p in positive):
            raise ValueError(f"foreach position {spec!r} is outside the prompt's {n_tokens} tokens")
        return [p - n_tokens for p in positive], [f"{p}:{tokens[p].strip()}" for p in positive]
    return prompts, [p if len(p) <= 24 else p[:22] + "…" for p in prompts]


def _token_ids(graph: Graph, tokenizer, issues: list[Issue]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for node in graph.nodes.values():
        for text in node.type.tokens(node.params):
            got = tokenizer(text, add_special_tokens=False)["input_ids"]
            if got and got[0] == tokenizer.unk_token_id and tokenizer.unk_token_id is not None:
                issues.append(Issue("unknown_token", f"{text!r} is not in the model's vocabulary "
                                    "(it becomes the unknown token)", node.path, node.id,
                                    "use a word the tokenizer knows"))
            elif len(got) != 1:
                issues.append(Issue("not_one_token", f"{text!r} is {len(got)} tokens, expected 1",
                                    node.path, node.id, "pick a string the tokenizer keeps whole "
                                    "(often with a leading space, e.g. \" paris\")"))
            else:
                ids[text] = got[0]
    return ids


def _node_coords(graph: Graph, invokes: dict[str, InvokeBinding]) -> dict[str, dict[str, list]]:
    """Tick labels of every axis of every node (loops, stacked layers, token positions)."""
    coords: dict[str, dict[str, list[str]]] = {}
    for nid in graph.order:
        node = graph.nodes[nid]
        mine: dict[str, list[str]] = {}
        for src in node.sources:
            mine = {**coords.get(src, {}), **mine}
        invoke = graph.invoke_of(node.scope)
        if invoke is not None and invoke.id in invokes:
            b = invokes[invoke.id]
            mine["position"] = [f"{i}:{t.strip()}" for i, t in enumerate(b.tokens)]
            layer = getattr(node.params, "layer", None)
            if layer is not None and not loop_var(layer) and graph.info:
                mine["layer"] = [str(v) for v in concrete_layers(layer, graph.info.n_layers)]
            for s in graph.chain(node.scope):
                if s.id in invokes:
                    mine.update(invokes[s.id].coords)
        coords[nid] = mine
    return coords


def _scope_path(graph: Graph, scope_id: str) -> str:
    index = [s.id for s in graph.spec.graph.scopes].index(scope_id)
    return f"graph.scopes[{index}]"
