"""`plot_heatmap`: a 2-D heatmap (png + svg) of a value over two named axes, e.g. layer × position."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.nodes.base import NodeParams, NodeType, Port, register


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
        axes: tuple[str, str] = Field(description="[rows, columns], e.g. [layer, position]")
        title: str | None = None

    def out_axes(self, p, in_axes, ctx):
        if p.axes[0] == p.axes[1]:
            raise ValueError(f"rows and columns are both `{p.axes[0]}`; name two different axes")
        missing = [a for a in p.axes if a not in in_axes["in"]]
        if missing:
            raise ValueError(f"the input has no axis `{missing[0]}` "
                             f"(its axes: {', '.join(in_axes['in']) or 'none'})")
        return ()

    def write_artifacts(self, p, value, ctx):
        from nnrun.plots import heatmap

        matrix = ctx.as_matrix(value, p.axes)  # (rows, cols)
        rows, cols = p.axes
        title = p.title or ctx.default_title()
        spread = getattr(ctx, "spread", None)
        if spread is not None:  # a dataset: the plot is the mean, its s.e.m. is saved beside it
            title += f" (mean over {ctx.n_examples} examples)"
        paths = heatmap(matrix, row_label=rows, col_label=cols, row_ticks=ctx.ticks(rows),
                        col_ticks=ctx.ticks(cols), title=title,
                        colorbar_label=ctx.source_label(), out_stem=ctx.plot_stem(p.id))
        written = [ctx.write_value(p.id, matrix, axes=p.axes)]
        if spread is not None:
            written.append(ctx.write_value(f"{p.id}_sem", ctx.as_matrix(spread, p.axes),
                                           axes=p.axes))
        return written + list(paths)
