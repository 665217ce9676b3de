"""`plot_heatmap`: a 2-D heatmap (png + svg) of a value over two named axes, e.g. layer × position."""

from __future__ import annotations

import itertools
from typing import Literal, Union

from pydantic import Field

from nnrun.nodes.base import NodeParams, NodeType, Port, register

AxisGroup = Union[str, list[str]]  # noqa: UP007


@register
class PlotHeatmap(NodeType):
    op = "plot_heatmap"
    kind = "plot"
    summary = ("heatmap over two axes (rows, columns); over a dataset: the mean over "
               "`example` (its s.e.m. saved beside it); other axes must have size 1")
    inputs = {"in": Port("value with the two named axes")}
    is_sink = True
    sink_mode = "mean"
    has_output = False

    class Params(NodeParams):
        op: Literal["plot_heatmap"] = "plot_heatmap"
        axes: tuple[AxisGroup, AxisGroup] = Field(
            description="[rows, columns], e.g. [layer, position]; a list of axes makes one row "
                        "(or column) per combination, e.g. [[layer, head], position]")
        title: str | None = None

    def out_axes(self, p, in_axes, ctx):
        flat = _flat(p.axes)
        if len(set(flat)) < len(flat):
            raise ValueError(f"rows and columns name `{flat[0]}` twice; name different axes")
        missing = [a for a in flat if a not in in_axes["in"]]
        if missing:
            raise ValueError(f"the input has no axis `{missing[0]}` "
                             f"(its axes: {', '.join(in_axes['in']) or 'none'})")
        return ()

    def write_artifacts(self, p, value, ctx):
        from nnrun.plots import heatmap

        groups = [_group(g) for g in p.axes]
        matrix = ctx.as_matrix(value, _flat(p.axes))  # (*rows, *cols)
        matrix = matrix.reshape(matrix.shape[:len(groups[0])].numel(), -1)  # (rows, cols)
        rows, cols = (".".join(g) for g in groups)
        title = p.title or ctx.default_title()
        spread = getattr(ctx, "spread", None)
        if spread is not None:  # a dataset: the plot is the mean, its s.e.m. is saved beside it
            title += f" (mean over {ctx.n_examples} examples)"
        paths = heatmap(matrix, row_label=rows, col_label=cols,
                        row_ticks=_ticks(ctx, groups[0]), col_ticks=_ticks(ctx, groups[1]),
                        title=title,
                        colorbar_label=ctx.source_label(), out_stem=ctx.plot_stem(p.id))
        written = [ctx.write_value(p.id, matrix, axes=(rows, cols))]
        if spread is not None:
            sem = ctx.as_matrix(spread, _flat(p.axes)).reshape(matrix.shape)
            written.append(ctx.write_value(f"{p.id}_sem", sem, axes=(rows, cols)))
        return written + list(paths)


def _group(axes) -> tuple[str, ...]:
    return (axes,) if isinstance(axes, str) else tuple(axes)


def _flat(groups) -> tuple[str, ...]:
    return tuple(a for g in groups for a in _group(g))


def _ticks(ctx, group: tuple[str, ...]) -> list[str] | None:
    """Tick labels of one axis, or of every combination of several (`L1.H3`)."""
    if len(group) == 1:
        return ctx.ticks(group[0])
    labels = [ctx.ticks(a) for a in group]
    if any(lab is None for lab in labels):
        return None
    return [".".join(f"{a[0].upper()}{lab}" for a, lab in zip(group, combo))
            for combo in itertools.product(*labels)]
