"""Compiler fast paths: ways to run a trace that change how much the model computes, never what
the experiment's values are.

* **Last-position logits.** When every use of the logits in a trace reads the last position
  only, the trace passes `logits_to_keep=1`, and the model unembeds one position instead of all
  of them (at GPT-2's shape the unembedding costs about five blocks per position).
* **Prefix reuse.** A foreach over `layer` whose points change nothing before block `layer`
  (activation patching of the residual stream, attention or MLP output at the looped layer)
  recomputes blocks `0..layer-1` identically at every point. The compiled program runs those
  blocks once per chunk, without the points' edits (the *prefix* run), then runs one trace per
  layer in which every point skips the blocks before its layer and takes their cached output
  (nnsight's `envoy.skip`; in a batched trace every invoke skips the same blocks, which is why
  the points are grouped by layer). Over all layers this removes about half of the blocks'
  work. It is taken when the blocks it saves outweigh the cost of a trace per layer, the
  weights it reads again included (`prefix_pays`).
* **Folded points.** A foreach over `layer`, `position`, `head` and/or `coefficient` whose
  points differ only in where they write (or in an `add` write's coefficient) runs as one
  invoke over the stacked rows (a copy of the chunk per point) instead of one nnsight invoke
  per point: each statement indexes its rows with per-row tensors (for each layer: the rows of
  the points at that layer, their positions, heads and coefficients), so a sweep costs one
  batched forward pass plus one indexed write per layer, whatever its number of points. When
  the points at once would not fit in memory they run a few at a time (`max_points`, from
  nnrun.chunks), a trace each.
* **A trace of its own.** A foreach invoke batched with other invokes in one trace moves to a
  trace of its own when it then takes prefix reuse, or a fold that saves more than one more
  forward pass costs (`fast_traces`, `own_trace_pays`).

Invariant: a fast path is taken only when the plain form would give the same numbers; the
conditions are checked here, statically, from the statements' model accesses. `fast_paths:
false` compiles the plain form (the tests compare the two).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from nnrun.sites import resolve

if TYPE_CHECKING:
    from nnrun.graph import Graph
    from nnrun.schedule import InvokePlan, TracePlan

# A prefix run costs one forward pass of the chunk; reuse it only when the points skip at least
# this many forward passes' worth of blocks in all (layers summed over points / layers).
MIN_SAVED_PASSES = 2
# ... and when the block work it saves outweighs what its extra traces cost (one per layer, the
# prefix run replacing the fold's one trace), in floating-point operations of block work:
# nnsight's own cost per trace (~2 ms on a CPU at ~50 GFLOP/s), plus reading again the weights
# of every block a trace runs and of the unembedding. A forward pass of few rows is bound by
# reading the weights: at GPT-2 small's shape one row of 16 tokens takes ~150 ms on this CPU,
# twelve rows ~620 ms (benchmarks/bench_shared_trace.py, RESULTS.md). On a tiny model, or with
# one point per layer of a single prompt, the fold is faster.
TRACE_COST_FLOPS = 1e8
WEIGHT_READ_FLOPS = 50   # per parameter read from memory (~5 GB/s per core against ~60 GFLOP/s)
# nnsight's cost per invoke, which a fold saves per point (~0.25 ms on this CPU: the tiny
# model's residual sweeps of 32 and 64 points, folded or not, RESULTS.md).
INVOKE_COST_FLOPS = 1.25e7
# Loop variables a folded invoke takes per row (`layer` picks modules: its points are grouped).
FOLDED_LOOPS = {"position", "head", "coefficient"}


@dataclass(frozen=True)
class FoldPoints:
    """How a foreach invoke's points become rows of one batch (`by_layer`: its first loop
    variable is `layer`; its rows are grouped by layer, and the statements at the looped
    layer run once per layer group, on that group's rows)."""

    by_layer: bool


@dataclass(frozen=True)
class PrefixReuse:
    """How a foreach invoke reuses the unedited run's blocks: `block` is the blocks' module
    path template (`transformer.h.{layer}`) and `depth` how many blocks the prefix run keeps
    (the highest looped layer: its points skip blocks 0..depth-1)."""

    block: str
    depth: int


def keeps_last_logits(trace: TracePlan, graph: Graph) -> bool:
    """Whether the trace may compute the logits of the last position only: the model accepts
    `logits_to_keep`, the trace is a forward pass (generation manages its own logits), and every
    statement touching the logits module reads the last position."""
    info = graph.info
    if info is None or not info.logits_to_keep or info.family is None \
            or trace.scope.kind != "trace":
        return False
    logits, _ = resolve("logits", info.family)
    touching = [s.access for p in trace.invokes for _, s in p.all_stmts
                if s.access is not None and s.access.module == logits]
    return bool(touching) and all(a.last_only for a in touching)


def prefix_reuse(trace: TracePlan, graph: Graph) -> PrefixReuse | None:
    """The prefix reuse of the trace's foreach invoke, or None when it would not be exact (or
    would not pay): one invoke looping over `layer` first, no generation, gradients or barriers,
    and every model access at block `layer` or after the last block."""
    info, plan = graph.info, _lone_foreach(trace, graph)
    if plan is None or plan.binding.loop_vars[0] != "layer":
        return None
    b = plan.binding
    block, _ = resolve("layer_output", info.family)
    if block.replace("{layer}", "0") in info.tuple_outputs:
        return None   # the cached output is replayed with skip(): a plain tensor only
    if not all(_after_prefix(s.access, block, graph) for _, s in plan.stmts if s.access):
        return None
    layers = [int(point[0]) for point in b.points]
    if any(layer < 0 for layer in layers) or sum(layers) < MIN_SAVED_PASSES * info.n_layers:
        return None
    if not prefix_pays(info, layers, _block_flops(graph, b)):
        return None
    return PrefixReuse(block, max(layers))


def prefix_pays(info, layers: list[int], point_flops: float) -> bool:
    """Whether the block work prefix reuse saves (each point skips the blocks before its layer;
    the prefix run costs one point's pass) outweighs what a trace per looped layer costs beyond
    the fold's one trace: each trace's own cost, and its weights read again (blocks `layer..`
    and the unembedding). `point_flops`: one block over one point's rows."""
    saved = point_flops * (sum(layers) - info.n_layers)
    weights = sum(_forward_weights(info, info.n_layers - layer) for layer in set(layers))
    return saved >= len(set(layers)) * TRACE_COST_FLOPS + WEIGHT_READ_FLOPS * weights


def _forward_weights(info, blocks: int) -> int:
    """Parameters a forward pass through `blocks` blocks reads: ~12·d² each (attention and
    MLP matrices), and the unembedding."""
    return blocks * 12 * info.hidden_size ** 2 + info.vocab_size * info.hidden_size


def _block_flops(graph: Graph, b) -> float:
    """Floating-point operations of one block over one point's rows of a chunk: about 24·d²
    per token (the attention and MLP matrices, 12·d² weights, two operations each)."""
    examples = len(b.prompts)
    if isinstance(graph.spec.batch_size, int):
        examples = min(examples, graph.spec.batch_size)
    return 24.0 * graph.info.hidden_size ** 2 * max(b.lengths, default=1) * examples


def fold_points(trace: TracePlan, graph: Graph, foldable) -> FoldPoints | None:
    """The fold of the trace's foreach invoke, or None when it would not be exact: one invoke
    looping over `position`, `head` and/or `coefficient` (after `layer`, if it loops over
    layers), or over `layer` alone without prefix reuse (which runs such points a trace each),
    no generation, gradients or barriers, every node in it `foldable(node_id)` (its emit indexes
    rows, see NodeType.foldable), every value it hands on has the example axis first (one row
    per example and point), and, looping over `layer`, every model access is at the looped
    block or after the last block (the statements at the looped block run in a loop over
    layers, the others after it)."""
    info, plan = graph.info, _lone_foreach(trace, graph)
    if plan is None:
        return None
    b = plan.binding
    by_layer = b.loop_vars[0] == "layer"
    folded = b.loop_vars[1:] if by_layer else b.loop_vars
    if not set(folded) <= FOLDED_LOOPS or len(b.points) < 2:
        return None
    if not folded and trace.prefix is not None:
        return None   # a trace per layer of one point each: nothing to fold
    nodes = list(dict.fromkeys(nid for nid, _ in plan.stmts))
    if any(s.access is None for _, s in plan.stmts) or not all(map(foldable, nodes)):
        return None
    if any(graph.point_axes.get(nid, ())[:1] != ("example",) for nid in plan.collect):
        return None
    if by_layer and trace.prefix is None:
        block, _ = resolve("layer_output", info.family)
        if not all(_after_prefix(s.access, block, graph) for _, s in plan.stmts):
            return None
    return FoldPoints(by_layer)


def looped_layer(access) -> bool:
    """The access is at the foreach's layer (its module path still holds `{layer}`)."""
    return "{layer}" in access.module


def _lone_foreach(trace: TracePlan, graph: Graph) -> InvokePlan | None:
    """The trace's one invoke when a fast path may change how it runs: a forward pass (not
    generation) of a single foreach invoke, without barriers, generation steps, a backward
    pass or gradients, on a model of a known site family."""
    info = graph.info
    if info is None or info.family is None or trace.scope.kind != "trace" \
            or len(trace.invokes) != 1 or trace.barriers:
        return None
    plan = trace.invokes[0]
    if not plan.binding.loop_vars or plan.step is not None or plan.backward is not None \
            or plan.after or _needs_grad(plan, graph):
        return None
    return plan


def _needs_grad(plan: InvokePlan, graph: Graph) -> bool:
    return any(graph.nodes[nid].type.needs_grad for nid, _ in plan.stmts)


def _after_prefix(access, block: str, graph: Graph) -> bool:
    """An access the skipped blocks cannot affect: inside (or at the input of) the looped
    block itself, or at a module that runs after the last block (final norm, logits)."""
    module = access.module
    if module == block or module.startswith(block + "."):
        return True
    if "{layer}" in module:
        return False   # a looped module outside the block: not a known layout
    info = graph.info
    last_block = block.replace("{layer}", str(info.n_layers - 1))
    try:
        return info.rank(module, access.event) > info.rank(last_block, "output")
    except KeyError:
        return False


def fast_traces(traces: list[TracePlan], graph: Graph, emit, foldable,
                prefix: bool = True) -> list[TracePlan]:
    """The traces with their fast paths decided (`take_fast_paths`; `prefix`: prefix reuse
    where it pays, else never). A foreach invoke that shares a forward pass with other invokes
    moves to a trace of its own, right after theirs, when alone it takes prefix reuse, or a
    fold that saves more invokes than the extra trace costs (`own_trace_pays`). It exchanges
    no values with them (schedule's `loop_crossing` check), and each row of a batch is
    computed on its own, so only the batches change, never the numbers."""
    out = []
    for trace in traces:
        alone = []
        if trace.scope.kind == "trace" and len(trace.invokes) > 1:
            for plan in [p for p in trace.invokes if p.binding.loop_vars]:
                stmts, piece = plan.stmts, replace(trace, invokes=[plan], barriers=[])
                take_fast_paths(piece, graph, emit, foldable, prefix)
                if piece.prefix is not None or (piece.fold is not None and own_trace_pays(
                        graph.info, len(plan.binding.points))):
                    trace.invokes.remove(plan)
                    alone.append(piece)
                else:
                    plan.stmts = stmts   # a fold re-emits them per row: back to the plain ones
        if trace.invokes:
            take_fast_paths(trace, graph, emit, foldable, prefix)
            out.append(trace)
        out += alone
    return out


def own_trace_pays(info, points: int) -> bool:
    """Whether folding a foreach's points (one nnsight invoke instead of one per point) saves
    more than moving them out of a shared trace costs: one more forward pass, which reads
    every weight again."""
    extra = TRACE_COST_FLOPS + WEIGHT_READ_FLOPS * _forward_weights(info, info.n_layers)
    return points * INVOKE_COST_FLOPS >= extra


def take_fast_paths(trace: TracePlan, graph: Graph, emit, foldable, prefix: bool = True) -> None:
    """Decide the trace's fast paths (in `trace.last_logits`, `.prefix`, `.fold`); a folded
    invoke gets its statements emitted again, per row, in the same order (each node's
    statements correspond one to one). `emit` and `foldable` are make_schedule's; `prefix`:
    whether prefix reuse may be taken."""
    trace.last_logits = keeps_last_logits(trace, graph)
    trace.prefix = prefix_reuse(trace, graph) if prefix else None
    fold = fold_points(trace, graph, foldable)
    if fold is None:
        return
    plan = trace.invokes[0]
    folded: dict[str, list] = {}
    for nid in dict.fromkeys(n for n, _ in plan.stmts):
        looped = any(looped_layer(s.access) for n, s in plan.stmts if n == nid)
        # a trace per layer (prefix reuse): every statement on its layer's rows; one trace:
        # those at the looped layer on its layer's rows, the others on every point's rows
        per_layer = trace.prefix is not None or (fold.by_layer and looped)
        folded[nid] = emit(nid, fold="layer" if per_layer else "points")
    if not _same_accesses(plan.stmts, folded):
        return
    plan.stmts = [(nid, folded[nid].pop(0)) for nid, _ in plan.stmts]
    trace.fold = fold


def _same_accesses(stmts, folded: dict[str, list]) -> bool:
    """Each node's folded statements touch the model where its plain ones did."""
    return all([s.access for n, s in stmts if n == nid] == [s.access for s in folded[nid]]
               for nid in folded)
