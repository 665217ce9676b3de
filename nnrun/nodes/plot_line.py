"""`plot_line`: a line plot (png + svg) of a value along one axis, one line per `series` entry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.nodes.base import NodeParams, NodeType, Port, register


@register
class PlotLine(NodeType):
    op = "plot_line"
    kind = "plot"
    summary = ("line plot along axis `x`, one line per entry of axis `series` (optional); "
               "over a dataset: the mean with a ± s.e.m. band")
    inputs = {"in": Port("value with the named axes")}
    is_sink = True
    sink_mode = "mean"
    has_output = False

    class Params(NodeParams):
        op: Literal["plot_line"] = "plot_line"
        x: str = Field(description="axis along the x direction, e.g. layer")
        series: str | None = Field(None, description="axis whose entries become separate lines")
        title: str | None = None

    def out_axes(self, p, in_axes, ctx):
        if p.series == p.x:
            raise ValueError(f"`x` and `series` are both `{p.x}`; name two different axes")
        for axis in (p.x, p.series):
            if axis is not None and axis not in in_axes["in"]:
                raise ValueError(f"the input has no axis `{axis}` "
                                 f"(its axes: {', '.join(in_axes['in']) or 'none'})")
        return ()

    def write_artifacts(self, p, value, ctx):
        from nnrun.plots import line

        axes = (p.series, p.x) if p.series else (p.x,)
        values = ctx.as_matrix(value, axes)  # (series, x) or (x,)
        spread = getattr(ctx, "spread", None)
        band = None if spread is None else ctx.as_matrix(spread, axes)
        title = p.title or ctx.default_title()
        if band is not None:  # a dataset: the mean, with a band of ± one s.e.m.
            title += f" (mean ± s.e.m. over {ctx.n_examples} examples)"
        paths = line(values, x_label=p.x, y_label=ctx.source_label(), x_ticks=ctx.ticks(p.x),
                     series_labels=ctx.ticks(p.series) if p.series else None,
                     title=title, out_stem=ctx.plot_stem(p.id), band=band)
        written = [ctx.write_value(p.id, values, axes=axes)]
        if band is not None:
            written.append(ctx.write_value(f"{p.id}_sem", band, axes=axes))
        return written + list(paths)
