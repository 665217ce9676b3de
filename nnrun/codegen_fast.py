"""The program text of the compiler's fast paths (nnrun.fastpath): the prefix run and a trace
per layer, folded invokes (a foreach's points as rows of one batch), and the `fold_points`
helper every program with a folded invoke defines.

Invariant: the text differs from the plain form's only where nnrun.fastpath decided a fast path
gives the same numbers; the statements themselves come from the nodes' `emit`, folded or not.
"""

from __future__ import annotations

from nnrun.bind import InvokeBinding
from nnrun.codegen import _invoke, _statement, _Writer
from nnrun.emit import FoldRows, Namespace
from nnrun.fastpath import looped_layer
from nnrun.graph import Graph
from nnrun.schedule import InvokePlan, Schedule, TracePlan
from nnrun.sites import python_ref


def fold_rows(names: Namespace, b: InvokeBinding, kind: str) -> FoldRows:
    """The per-row index names of a folded invoke: of all its points' rows (`points`), or of
    one layer's points (`layer`: in the loop over layers)."""
    base = "fold" if kind == "points" else "layer"
    rows, example = (names.name(("fold", b.scope, kind, part), f"{base}_{part}")
                     for part in ("rows", "example"))
    loops = tuple((v, names.name(("fold", b.scope, kind, v), f"{base}_{v}"))
                  for v in b.loop_vars if v != "layer")
    return FoldRows(rows, example, loops)


def _unpacked(rows: FoldRows) -> str:
    return ", ".join((rows.rows, rows.example, *(name for _, name in rows.loops)))


def _fold_groups(names: Namespace, scope: str) -> str:
    return names.name(("fold", scope, "groups"), "fold_groups")


def _fold_pieces(names: Namespace, scope: str) -> str:
    return names.name(("fold", scope, "pieces"), "fold_pieces")


# The program calls this helper before its session (fold_points_line): a remote backend runs the
# session's code elsewhere, where the functions the program module defines do not exist.
FOLD_POINTS = '''
def fold_points(points, rows, by_layer, max_points=None, each_alone=False):
    """A foreach's points as the rows of batches: a copy of the chunk per point, point after
    point (row = point * len(rows) + example), at most `max_points` points per batch (None: one
    batch; with `each_alone`, a batch per layer). Per batch: (rows, example, *values), with
    the value of every loop variable after `layer` per row, and per layer when `by_layer` (a
    point's first value; else one group of them all) (layer, rows, example, *values) of its
    points; every index a (row,) tensor, rows counted from the batch's first."""
    n, device = len(rows), rows.device
    first = 1 if by_layer else 0
    key = (lambda point: point[0]) if by_layer else (lambda point: None)
    cap = max_points or len(points)
    if each_alone:   # a piece never spans two layers
        runs = [list(group) for _, group in itertools.groupby(points, key=key)]
    else:
        runs = [points]
    pieces = []
    for run in runs:
        for start in range(0, len(run), cap):
            part = run[start:start + cap]
            at = torch.arange(len(part) * n, device=device)  # (row,)
            example = rows.repeat(len(part))  # (row,) the example each row is a copy of
            values = [torch.tensor([point[i] for point in part], device=device).repeat_interleave(n)  # (row,)
                      for i in range(first, len(part[0]))]
            groups, begin = [], 0
            for layer, group in itertools.groupby(part, key=key):
                end = begin + len(list(group)) * n
                groups.append((layer, at[begin:end], example[begin:end], *(v[begin:end] for v in values)))
                begin = end
            pieces.append(((at, example, *values), groups))
    return pieces
'''


def prefix_trace(w: _Writer, depth: int, trace: TracePlan, graph: Graph, schedule: Schedule,
                 names: Namespace, kwargs: str, note: str) -> None:
    """The foreach invoke with prefix reuse (nnrun.fastpath): the prefix run, then one trace
    per layer whose points skip the blocks before their layer (always inside a session)."""
    plan, reuse = trace.invokes[0], trace.prefix
    scope = plan.binding.scope
    prefix = names.name(("prefix", scope), f"prefix_{scope}")
    block = names.name(("prefix_block",), "block")
    blocks = python_ref(reuse.block, block)
    w.add(depth, f"{prefix} = list()  # blocks 0..{reuse.depth - 1} of the unedited run: the "
                 "points reuse them (nnrun.fastpath)")
    keep = "logits_to_keep=1" if graph.info.logits_to_keep else ""  # it reads no logits
    w.add(depth, f"with model.trace({keep}) as tracer:  # scope: {trace.scope.id} (prefix run: "
                 "the points' prompts, no edits)")
    w.add(depth + 1, f"with tracer.invoke(**prompts[{scope!r}]):")
    w.add(depth + 2, f"for {block} in range({reuse.depth}):")
    w.add(depth + 3, f"{prefix}.append({blocks}.output.clone())  # (example, position, hidden)")
    layer = names.name(("loop", "layer"), "layer")
    if trace.fold is not None:
        rows = fold_rows(names, plan.binding, "layer")
        w.add(depth, f"for _, [({layer}, {_unpacked(rows)})] in "
                     f"{_fold_pieces(names, scope)}:  # one trace per layer (or per piece of its "
                     "points when memory is short), its points folded into rows")
        skip = (f"for {block} in range({layer}):  # the points change nothing before their "
                "layer", f"    {blocks}.skip({prefix}[{block}][{rows.example}])  # a copy per row")
        w.add(depth + 1, f"with model.trace({kwargs}) as tracer:  # scope: {trace.scope.id}{note}")
        _folded_invoke(w, depth + 2, plan, trace, graph, schedule, names, skip)
        return
    group = names.name(("group", scope), "group")
    w.add(depth, f"for {layer}, {group} in itertools.groupby(points[{scope!r}], "
                 "key=lambda point: point[0]):  # one trace per layer")
    w.add(depth + 1, f"with model.trace({kwargs}) as tracer:  # scope: {trace.scope.id}{note}")
    skip = (f"for {block} in range({layer}):  # the point changes nothing before its layer",
            f"    {blocks}.skip({prefix}[{block}].clone())  # a copy: the point may edit it")
    _invoke(w, depth + 2, plan, graph, schedule, names, {}, (group, skip))


def folded_trace(w: _Writer, depth: int, trace: TracePlan, graph: Graph, schedule: Schedule,
                 names: Namespace, kwargs: str, note: str) -> None:
    """A folded foreach without prefix reuse: a trace per piece of its points (one piece,
    all of them, unless memory is short), each one invoke of the piece's rows."""
    plan = trace.invokes[0]
    rows = fold_rows(names, plan.binding, "points")
    w.add(depth, f"for ({_unpacked(rows)}), {_fold_groups(names, plan.binding.scope)} in "
                 f"{_fold_pieces(names, plan.binding.scope)}:  # one forward pass per "
                 "piece of the points (all of them, unless memory is short)")
    w.add(depth + 1, f"with model.trace({kwargs}) as tracer:  # scope: {trace.scope.id}{note}")
    _folded_invoke(w, depth + 2, plan, trace, graph, schedule, names)


def fold_points_line(w: _Writer, depth: int, trace: TracePlan, names: Namespace) -> None:
    """The per-row indices of a folded invoke (nnrun.fastpath), before the session."""
    b = trace.invokes[0].binding
    alone = trace.prefix is not None   # a trace per layer: each group a batch of its own
    w.add(depth, f"{_fold_pieces(names, b.scope)} = fold_points(points[{b.scope!r}], rows, "
                 f"by_layer={trace.fold.by_layer}, max_points=data['max_points']"
                 f"{', each_alone=True' if alone else ''})  # scope {b.scope}: (row,) indices "
                 "of batches of its points")


def _folded_invoke(w: _Writer, depth: int, plan: InvokePlan, trace: TracePlan, graph: Graph,
                   schedule: Schedule, names: Namespace, skip: tuple[str, ...] = ()) -> None:
    """A foreach invoke whose points are rows of one batch (nnrun.fastpath): its prompts are
    copied per point; looping over layers (without prefix reuse), the statements at the looped
    layer run once per layer, on that layer's rows, the others after them on every row."""
    b = plan.binding
    rows = fold_rows(names, b, "layer" if trace.prefix is not None else "points")
    w.add(depth, f"with tracer.invoke(**{{key: ids[{rows.example}] for key, ids in "
                 f"prompts[{b.scope!r}].items()}}):  # scope: {b.scope}, its points "
                 "folded into rows")
    depth += 1
    for line in skip:
        w.add(depth, line)
    every = plan.all_stmts
    looped = [i for i, (_, s) in enumerate(every) if trace.fold.by_layer and trace.prefix is None
              and looped_layer(s.access)]
    if looped:
        per = fold_rows(names, b, "layer")
        layer = names.name(("loop", "layer"), "layer")
        w.add(depth, f"for {layer}, {_unpacked(per)} in {_fold_groups(names, b.scope)}:  "
                     "# the statements at the looped layer, on its points' rows")
        for i in looped:
            _statement(w, depth + 1, plan, i, every, graph, schedule, names, folded=True)
    for i in range(len(every)):
        if i not in looped:
            _statement(w, depth, plan, i, every, graph, schedule, names, folded=True)
