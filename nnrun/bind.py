"""Bind a graph to its examples and the tokenizer: prompts per example, token counts, foreach
grids, per-example positions (integers, `last`, `all`, token matches, columns) and answer ids.

Invariants:
* every position is resolved per example and stored counted from the end of that example's
  prompt (a negative index), so left padding in a batch can never shift it; an index outside a
  prompt is an error naming the row, never a silent wrap-around;
* a value patched along the position axis comes from prompts of the same token count, row by
  row (else an error), so a patch can never land on the wrong token;
* nothing here touches weights; the result is pure data that `chunks.chunk_data` slices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from nnrun.data import Dataset, single_example
from nnrun.errors import ConfigError, Issue, raise_if_issues
from nnrun.graph import Graph
from nnrun.loops import LOOPS, LoopContext, LoopError
from nnrun.nodes.fields import loop_var
from nnrun.refs import Column, Match, Resampled, resampled_rows

MAX_GRID_POINTS = 100_000   # foreach points per invoke: each is one nnsight invoke per chunk


@dataclass(frozen=True)
class InvokeBinding:
    """One invoke scope after binding: its prompt per example and, for a foreach, its grid."""

    scope: str
    prompts: tuple[str, ...]                 # one per example
    tokens: tuple[tuple[str, ...], ...]      # token strings per example (what the model sees)
    loop_vars: tuple[str, ...] = ()
    points: tuple[tuple[Any, ...], ...] = ((),)
    shape: tuple[int, ...] = ()
    coords: dict[str, list[str]] = field(default_factory=dict)
    ids: tuple[tuple[int, ...], ...] = ()    # token ids per example: tokenized once, here

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(len(t) for t in self.tokens)

    @property
    def aligned(self) -> bool:
        """Every example has the same token count (positions mean the same token index)."""
        return len(set(self.lengths)) == 1


@dataclass(frozen=True)
class PositionIndex:
    """Where one node reads or writes along the position axis, for every example.

    kind: `loop` (a foreach variable), `slice` (all positions, every prompt the same length),
    `row` (one position per example, `values` counted from the end), `ragged` (all positions of
    prompts of different lengths: `values` are the lengths; missing cells read as NaN).
    """

    kind: Literal["loop", "slice", "row", "ragged"]
    values: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()             # per example `index:token` (metadata)


@dataclass(frozen=True)
class Binding:
    dataset: Dataset
    invokes: dict[str, InvokeBinding]
    positions: dict[str, PositionIndex]      # node id → its position per example
    token_ids: dict[str, tuple[int, ...]]    # "node.field" → token id per example
    node_coords: dict[str, dict[str, list[str]]]
    pad_id: int = 0                          # the tokenizer's padding id (left padding)

    @property
    def n_examples(self) -> int:
        return len(self.dataset)


def bind(graph: Graph, tokenizer, dataset: Dataset | None = None) -> Binding:
    """Resolve everything that needs the examples and the tokenizer (but no weights).

    Raises:
        ConfigError: every out-of-range or unmatched position, multi-token answer, unknown word
            and misaligned patch, each naming the scope or node and the row.
    """
    dataset = dataset or single_example()
    issues: list[Issue] = []  # left padding is guaranteed by ModelSpec.padding_side
    invokes = {}
    for scope in _invoke_scopes(graph):
        try:
            invokes[scope.id] = _bind_invoke(scope, graph, tokenizer, dataset)
        except BindError as err:
            issues.append(Issue(err.code, err.message, _scope_path(graph, scope.id), scope.id,
                                err.hint))
    positions = _positions(graph, invokes, tokenizer, dataset, issues)
    token_ids = _token_ids(graph, tokenizer, dataset, issues)
    issues += _patch_alignment(graph, invokes, dataset)
    raise_if_issues(issues, ConfigError, f"inputs of `{graph.spec.name}`")
    return Binding(dataset, invokes, positions, token_ids, _node_coords(graph, invokes),
                   _pad_id(tokenizer))


class BindError(Exception):
    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


def _invoke_scopes(graph: Graph):
    return [s for s in graph.scopes.values()
            if s.kind == "invoke" or (s.kind in ("trace", "generate") and s.input is not None)]


# --- prompts ---------------------------------------------------------------------------------

def _prompts(scope, dataset: Dataset) -> list[str]:
    """The scope's prompt for every example."""
    given = scope.input
    if isinstance(given, Resampled):
        if len(dataset) < 2:
            raise BindError("bad_input", "resampling needs at least two examples",
                            "give a dataset with several rows")
        return [str(dataset.rows[j][given.column])
                for j in resampled_rows(len(dataset), given.resample)]
    if isinstance(given, Column):
        return [str(row[given.column]) for row in dataset.rows]
    if isinstance(given, list):
        if len(dataset) > 1 and len(given) != len(dataset):
            raise BindError("bad_input", f"the input lists {len(given)} prompts but the dataset "
                            f"has {len(dataset)} examples", "use {column: name} with `data`")
        return list(given)
    return [given] * len(dataset)


def encode(tokenizer, prompt: str) -> dict[str, list]:
    """Token ids and character offsets exactly as the model will see the prompt (special
    tokens included, as nnsight tokenizes an invoke's text)."""
    try:
        enc = tokenizer(prompt, return_offsets_mapping=True)
        return {"ids": enc["input_ids"], "offsets": enc["offset_mapping"]}
    except NotImplementedError:  # slow tokenizers have no offsets; matches then need fast ones
        enc = tokenizer(prompt)
        return {"ids": enc["input_ids"], "offsets": None}


def _bind_invoke(scope, graph: Graph, tokenizer, dataset: Dataset) -> InvokeBinding:
    foreach = dict(scope.foreach or {})
    if "prompt" in foreach:
        raise BindError("migrated", "`foreach: {prompt: [...]}` is replaced by datasets",
                        "give the prompts as `input: [...]` (one example each) or as a column "
                        "of `data`; results then have an `example` axis")
    plist = _prompts(scope, dataset)
    if not plist or not all(isinstance(p, str) and p.strip() for p in plist):
        raise BindError("bad_input", "prompts must be non-empty strings")
    seen: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {}  # a prompt shared by every
    encoded = tuple(seen[p] if p in seen else seen.setdefault(     # example is tokenized once
        p, _checked_tokens(tokenizer, p, dataset, i)) for i, p in enumerate(plist))
    ids, tokens = tuple(e[0] for e in encoded), tuple(e[1] for e in encoded)
    _check_context(scope, graph, tokens, dataset)
    values, coords = {}, {}
    loop_ctx = LoopContext(graph.info, tokens, dataset.where)
    for var, spec in foreach.items():
        try:
            values[var], coords[var] = LOOPS[var].expand(spec, loop_ctx)
        except LoopError as err:
            raise BindError(err.code, err.message, err.hint) from None
    points = tuple(itertools.product(*values.values())) if values else ((),)
    if len(points) > MAX_GRID_POINTS:
        raise BindError("grid_too_large", f"the foreach grid has {len(points):,} points (limit "
                        f"{MAX_GRID_POINTS:,})", "sweep part of it with Hydra multirun instead")
    return InvokeBinding(scope.id, tuple(plist), tokens, tuple(foreach), points,
                         tuple(len(v) for v in values.values()), coords, ids)


def _check_context(scope, graph: Graph, tokens, dataset: Dataset) -> None:
    """Every prompt (and what a generate adds to it) fits the model's context: a longer one
    would index past its position table (an error deep inside the model at run time)."""
    limit = graph.info.max_positions if graph.info else None
    if not limit:
        return
    trace = graph.trace_of(scope.id)
    extra = (trace.max_new_tokens or 0) if trace is not None and trace.kind == "generate" else 0
    row = max(range(len(tokens)), key=lambda i: len(tokens[i]))
    if len(tokens[row]) + extra > limit:
        where = f"{dataset.where(row)}: " if len(dataset) > 1 else ""
        plus = f" + {extra} generated" if extra else ""
        raise BindError("prompt_too_long", f"{where}the prompt is {len(tokens[row])} tokens"
                        f"{plus}, but the model takes at most {limit} positions",
                        "shorten the prompt (or choose a model with a longer context)")


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if pad is not None else getattr(tokenizer, "eos_token_id", None) or 0


def _checked_tokens(tokenizer, prompt: str, dataset: Dataset,
                    row: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The prompt's token ids and their strings, refused if a word is unknown to the model."""
    ids = encode(tokenizer, prompt)["ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in ids and getattr(tokenizer, "unk_token", None) not in prompt:
        words = [w for w in prompt.split() if unk in tokenizer(w, add_special_tokens=False)
                 ["input_ids"]]
        where = f"{dataset.where(row)}: " if len(dataset) > 1 else ""
        verb = "are" if len(words) > 1 else "is"
        raise BindError("unknown_token", f"{where}{', '.join(map(repr, words[:3])) or 'a word'} "
                        f"{verb} not in the model's vocabulary (it would become the unknown "
                        "token)", "use words the tokenizer knows (see its vocabulary)")
    return tuple(ids), tuple(tokenizer.decode([i]) for i in ids)


# --- positions -------------------------------------------------------------------------------

def _positions(graph: Graph, invokes: dict[str, InvokeBinding], tokenizer, dataset: Dataset,
               issues: list[Issue]) -> dict[str, PositionIndex]:
    out: dict[str, PositionIndex] = {}
    for node in graph.nodes.values():
        spec = getattr(node.params, "position", None)
        invoke = graph.invoke_of(node.scope)
        if spec is None or invoke is None or invoke.id not in invokes \
                or not node.type.touches_model:
            continue
        try:
            out[node.id] = resolve_position(spec, invokes[invoke.id], tokenizer, dataset)
        except BindError as err:
            issues.append(Issue(err.code, err.message, node.path + ".position", node.id,
                                err.hint))
    return out


def resolve_position(spec, b: InvokeBinding, tokenizer, dataset: Dataset) -> PositionIndex:
    """One node's position for every example of its invoke."""
    if loop_var(spec):
        return PositionIndex("loop")
    if spec == "all":
        if b.aligned:
            return PositionIndex("slice", (-b.lengths[0],))
        return PositionIndex("ragged", b.lengths)
    found = [_one_position(spec, b, i, tokenizer, dataset) for i in range(len(b.prompts))]
    labels = tuple(f"{p}:{b.tokens[i][p].strip()}" for i, p in enumerate(found))
    return PositionIndex("row", tuple(p - n for p, n in zip(found, b.lengths)), labels)


def _one_position(spec, b: InvokeBinding, row: int, tokenizer, dataset: Dataset) -> int:
    """The position (counted from the start) of `spec` in example `row`."""
    n = b.lengths[row]
    where = f"{dataset.where(row)}: " if len(dataset) > 1 else ""
    if spec == "last":
        return n - 1
    if isinstance(spec, Match):
        return _match(spec, b.prompts[row], tokenizer, dataset.rows[row], where)
    value = int(dataset.rows[row][spec.column]) if isinstance(spec, Column) else spec
    if not -n <= value < n:
        raise BindError("position_out_of_range", f"{where}position {value} is outside the "
                        f"prompt's {n} tokens (valid: 0..{n - 1}, or -{n}..-1 from the end)",
                        "use `last`, a negative index, or a {match: ...} position")
    return value + n if value < 0 else value


def _match(spec: Match, prompt: str, tokenizer, row: dict, where: str) -> int:
    text = str(row[spec.match.column]) if isinstance(spec.match, Column) else spec.match
    starts = [i for i in range(len(prompt)) if prompt.startswith(text, i)]
    if not starts:
        raise BindError("no_match", f"{where}{text!r} does not occur in the prompt {prompt!r}",
                        "check the spelling (and the leading space) of the text to match")
    if len(starts) > 1 and spec.occurrence == "only":
        raise BindError("ambiguous_match", f"{where}{text!r} occurs {len(starts)} times in "
                        f"{prompt!r}", "set `occurrence: first` or `occurrence: last`")
    start = starts[-1] if spec.occurrence == "last" else starts[0]
    offsets = encode(tokenizer, prompt)["offsets"]
    if offsets is None:
        raise BindError("no_offsets", "matching text needs a fast tokenizer (with offsets)")
    end = start + len(text)
    hit = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    if not hit:
        raise BindError("no_match", f"{where}{text!r} covers no token of {prompt!r}")
    return hit[-1] if spec.token == "last" else hit[0]


def _patch_alignment(graph: Graph, invokes: dict[str, InvokeBinding],
                     dataset: Dataset) -> list[Issue]:
    """A patch that copies along the position axis needs equal token counts, row by row."""
    issues = []
    for node in graph.nodes.values():
        if getattr(node.params, "mode", None) != "patch" or "value" not in node.inputs:
            continue
        src = graph.nodes[node.inputs["value"][0]]
        if getattr(src.params, "position", None) != "all":
            continue  # the source is one position per row, chosen by meaning: nothing to align
        target, source = graph.invoke_of(node.scope), graph.invoke_of(src.scope)
        if target is None or source is None or target.id not in invokes \
                or source.id not in invokes:
            continue
        a, b = invokes[source.id], invokes[target.id]
        bad = next((i for i, (x, y) in enumerate(zip(a.lengths, b.lengths)) if x != y), None)
        hint = ("make each clean/corrupt pair the same token count, or read and patch one "
                "position matched by meaning (position: {match: ...} or last) on both sides")
        if bad is not None:
            row = f"{dataset.where(bad)}: " if len(dataset) > 1 else ""
            issues.append(Issue(
                "misaligned_patch", f"{row}`{src.id}` comes from a prompt of {a.lengths[bad]} "
                f"tokens but `{node.id}` patches a prompt of {b.lengths[bad]} tokens: positions "
                "would not line up", node.path, node.id, hint))
        elif not a.aligned:
            row = next(i for i, n in enumerate(a.lengths) if n != a.lengths[0])
            issues.append(Issue(
                "misaligned_patch", f"`{node.id}` patches every position of `{src.id}`, whose "
                f"prompts differ in length ({dataset.where(0)}: {a.lengths[0]} tokens, "
                f"{dataset.where(row)}: {a.lengths[row]})", node.path, node.id,
                "patch along positions only over prompts of one length (one template), or "
                + hint.split(", or ")[1]))
    return issues


# --- answer tokens ---------------------------------------------------------------------------

def _token_ids(graph: Graph, tokenizer, dataset: Dataset,
               issues: list[Issue]) -> dict[str, tuple[int, ...]]:
    ids: dict[str, tuple[int, ...]] = {}
    for node in graph.nodes.values():
        for name, value in node.type.token_fields(node.params).items():
            texts = [str(row[value.column]) for row in dataset.rows] \
                if isinstance(value, Column) else [value] * len(dataset)
            known: dict[str, int] = {}  # each distinct text is tokenized once
            for row, text in enumerate(texts):
                if text in known:
                    continue
                problem = _token_problem(tokenizer, text)
                if problem:
                    where = f"{dataset.where(row)}: " if len(dataset) > 1 else ""
                    issues.append(Issue(problem[0], where + problem[1], f"{node.path}.{name}",
                                        node.id, problem[2]))
                    break
                known[text] = tokenizer(text, add_special_tokens=False)["input_ids"][0]
            else:
                ids[f"{node.id}.{name}"] = tuple(known[t] for t in texts)
    return ids


def _token_problem(tokenizer, text: str) -> tuple[str, str, str] | None:
    got = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if got and unk is not None and got[0] == unk:
        return ("unknown_token", f"{text!r} is not in the model's vocabulary (it becomes the "
                "unknown token)", "use a word the tokenizer knows")
    if len(got) != 1:
        return ("not_one_token", f"{text!r} is {len(got)} tokens, expected 1",
                "pick a string the tokenizer keeps whole (often with a leading space, "
                "e.g. \" paris\")")
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    if got[0] in specials:
        return ("special_token", f"{text!r} is a special token ({tokenizer.decode(got)!r})",
                "use an ordinary word as the answer")
    return None


# --- tick labels -----------------------------------------------------------------------------

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
            n = max(b.lengths)
            mine["position"] = [f"{i}:{t.strip()}" for i, t in enumerate(b.tokens[0])] \
                if b.aligned else [str(i) for i in range(n)]
        mine.update(node.type.coords(node.params, graph.info))  # the node's own axes (layers)
        if invoke is not None and invoke.id in invokes:
            for s in graph.chain(node.scope):
                if s.id in invokes:
                    mine.update(invokes[s.id].coords)
                if s.kind == "step":   # the generation steps of a step scope
                    mine["step"] = [f"step {i}" for i in range(s.steps or 0)]
        coords[nid] = mine
    return coords


def _scope_path(graph: Graph, scope_id: str) -> str:
    index = [s.id for s in graph.spec.graph.scopes].index(scope_id)
    return f"graph.scopes[{index}]"
