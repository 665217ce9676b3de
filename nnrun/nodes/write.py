"""`write`: change the activation at a site: replace it, add to it, or patch it from another run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.errors import Issue
from nnrun.nodes.base import NodeParams, NodeType, Port, Stmt, register
from nnrun.nodes.fields import (
    LayerSpec,
    PositionSpec,
    check_site,
    layer_field,
    position_field,
    site_axes,
    site_field,
)


@register
class Write(NodeType):
    """Edit `site` in place during the forward pass; later modules see the edited value.

    Modes: `replace` sets it to `value` (an edge) or `constant`; `add` adds `coefficient * value`
    (steering); `patch` copies the same layer and position out of `value`, an activation read in
    another run (activation patching).
    """

    op = "write"
    kind = "write"
    summary = "replace / add to / patch the activation at a site"
    touches_model = True
    has_output = False
    inputs = {"value": Port("tensor to write (replace, add) or patch from", required=False)}

    class Params(NodeParams):
        op: Literal["write"] = "write"
        site: str = site_field()
        layer: LayerSpec | None = layer_field()
        position: PositionSpec = position_field()
        mode: Literal["replace", "add", "patch"] = "replace"
        constant: float | None = Field(None, description="replace/add this number instead of "
                                                         "an input edge (0 = zero-ablation)")
        coefficient: float = Field(1.0, description="add mode: scale of the added value")
        at: Literal["output", "input"] = Field("output", description="for module paths only")

    def check(self, p, ctx):
        issues = check_site(p, ctx)
        if p.constant is not None and p.constant != p.constant or \
                p.constant in (float("inf"), float("-inf")):
            issues.append(Issue("invalid_value", f"`constant` must be a finite number, found "
                                f"{p.constant!r}", ctx.path + ".constant", ctx.node))
        if p.mode == "patch" and p.constant is not None:
            issues.append(Issue("invalid_value", "patch mode takes its value from an edge, not "
                                "`constant`", ctx.path + ".constant", ctx.node))
        return issues

    def out_axes(self, p, in_axes, ctx):
        if (p.constant is None) != ("value" in in_axes):
            raise ValueError("give exactly one of an edge into `value` or `constant`")
        if "value" in in_axes:
            _check_value_axes(p, in_axes["value"])
        return ()

    def emit(self, p, ctx):
        stmts = []
        for ref in ctx.site_refs(p.site, p.layer, p.at):
            target = ctx.target(ref.code, p.position)
            value = self._value(p, ctx, ref)
            if p.mode == "add":
                value = f"{target} + {ctx.literal(p.coefficient)} * {value}"
            stmts.append(Stmt(f"{target} = {value}", ref.access))
        return stmts

    @staticmethod
    def _value(p, ctx, ref) -> str:
        if p.constant is not None:
            return ctx.literal(p.constant)
        source, axes = ctx.input("value"), ctx.in_axes("value")
        # A value with a `layer` axis gives each written layer its own slice.
        source += ctx.layer_index_into("value", ref.layer) if "layer" in axes else ""
        if p.mode != "patch":
            # One vector per example written at every position: broadcast over positions.
            spread = p.position == "all" and "position" not in axes and "example" in axes
            return f"{source}.unsqueeze(-2)" if spread else source
        # Patching copies the same position as the write.
        return ctx.select(source, p.position) if "position" in axes else source


def _check_value_axes(p, value: tuple[str, ...]) -> None:
    """The written value must fit the site: after taking this layer's slice (and, when
    patching, this position) its axes are the site's, or trailing ones that broadcast."""
    target = site_axes(p.site)
    if p.position != "all":
        target = tuple(a for a in target if a != "position")
    fitted = tuple(a for a in value if a != "layer")
    if p.mode == "patch" and p.position != "all":
        fitted = tuple(a for a in fitted if a != "position")
    spread = p.mode != "patch" and p.position == "all" and fitted == ("example", target[-1])
    if "layer" in value and p.layer is None:
        raise ValueError(f"the value has a `layer` axis but `{p.site}` takes no layer")
    if fitted == target[len(target) - len(fitted):] and fitted or spread:
        return
    raise ValueError(f"a value with axes ({', '.join(value)}) cannot be written at `{p.site}` "
                     f"with axes ({', '.join(target)}): reduce or select the extra axes first "
                     "(mean, select_position), or patch from a read of the same site")
