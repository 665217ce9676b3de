"""`plot_attention`: attention patterns as a grid of query × key maps (layer rows × head columns)
with the prompt's tokens on both axes."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, Port, register

GRID = ("layer", "head", "position", "key")


@register
class PlotAttention(NodeType):
    op = "plot_attention"
    kind = "plot"
    summary = ("attention patterns as a grid of query × key maps, layer rows × head columns, "
               "with token labels; over a dataset: the mean over `example`")
    inputs = {"in": Port("attention weights with axes position (query), head and key, e.g. a "
                         "read of attention_pattern (a `layer` axis gives the grid its rows)")}
    is_sink = True
    sink_mode = "mean"
    has_output = False

    class Params(NodeParams):
        op: Literal["plot_attention"] = "plot_attention"
        title: str | None = None

    def out_axes(self, p, in_axes, ctx):
        missing = [a for a in GRID[1:] if a not in in_axes["in"]]
        if missing:
            raise ValueError(f"the input has no axis `{missing[0]}` (its axes: "
                             f"{', '.join(in_axes['in']) or 'none'}); read site "
                             "attention_pattern with position: all and every head")
        return ()

    def write_artifacts(self, p, value, ctx):
        from nnrun.plots import attention_grid

        keep = GRID if "layer" in ctx.axes else GRID[1:]
        grid = ctx.as_matrix(value, keep)
        if "layer" not in ctx.axes:
            grid = grid.unsqueeze(0)              # (layer, head, position, key)
        layers = ctx.ticks("layer") or [str(i) for i in range(grid.shape[0])]
        heads = ctx.ticks("head") or [str(i) for i in range(grid.shape[1])]
        title = p.title or ctx.default_title()
        spread = getattr(ctx, "spread", None)
        if spread is not None:
            title += f" (mean over {ctx.n_examples} examples; tokens of the first)"
        paths = attention_grid(grid, row_ticks=[f"layer {v}" for v in layers],
                               col_ticks=[f"head {h}" for h in heads],
                               tokens=ctx.ticks("position"), title=title,
                               out_stem=ctx.plot_stem(p.id))
        written = [ctx.write_value(p.id, grid, axes=GRID)]
        if spread is not None:
            sem = ctx.as_matrix(spread, keep).reshape(grid.shape)
            written.append(ctx.write_value(f"{p.id}_sem", sem, axes=GRID))
        return written + list(paths)
