"""Parameter fields shared by the model-touching nodes (site, layer, position) and their checks.

Invariant: every site a node names is checked against the model's module tree before any weights
are loaded; the code reference emitted for it is derived from the same resolution.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, StrictInt

from nnrun.errors import Issue, did_you_mean, guess
from nnrun.nodes.base import NodeParams
from nnrun.refs import Column, Match
from nnrun.sites import SITES, is_named_site, resolve, site_needs_layer, site_of

# "{layer}" / "{position}": a foreach variable of the enclosing invoke
LoopRef = Annotated[str, Field(pattern=r"^\{\w+\}$")]
# Strict integers: YAML's `true` is not layer 1 (pydantic's lax mode would take it as one).
LayerSpec = Union[StrictInt, Literal["all"], list[StrictInt], LoopRef]  # noqa: UP007
PositionSpec = Union[StrictInt, Literal["last", "all"], LoopRef, Match, Column]  # noqa: UP007
HeadSpec = Union[StrictInt, Literal["all"], LoopRef]  # noqa: UP007

LOOP_REF = re.compile(r"^\{(\w+)\}$")


def site_field():
    return Field(description="a site name (" + ", ".join(SITES) + ") or a module path such as "
                 "`transformer.h.3.mlp` (may contain `{layer}`)")


def layer_field():
    return Field(None, description="block index: int (negative counts from the end), `all`, "
                                   "a list, or `{layer}` from a foreach")


def position_field(default: str = "all"):
    return Field(default, description="token position, resolved per example: int (negative "
                                      "from the end), `last`, `all`, `{position}` from a "
                                      "foreach, {match: text} (the token of a text found in "
                                      "the prompt) or {column: name} (an integer column)")


def head_field():
    return Field(None, description="for sites split into heads (attention_heads): one head "
                                   "(int, negative from the end), `all` (a `head` axis) or "
                                   "`{head}` from a foreach")


class SiteParams(NodeParams):
    """The fields of a node that touches the model at one site (read, write, grad): each such
    node's Params subclasses this and narrows `op`."""

    site: str = site_field()
    layer: LayerSpec | None = layer_field()
    position: PositionSpec = position_field()
    head: HeadSpec | None = head_field()
    at: Literal["output", "input"] = Field("output", description="for module paths only")


def loop_var(value) -> str | None:
    m = LOOP_REF.match(value) if isinstance(value, str) else None
    return m.group(1) if m else None


def concrete_layers(layer, n_layers: int) -> list[int] | None:
    """The layers a spec names (None for a loop variable); negative indices count from the end."""
    if loop_var(layer):
        return None
    if layer == "all":
        return list(range(n_layers))
    values = layer if isinstance(layer, list) else [layer]
    return [v + n_layers if v < 0 else v for v in values]


def check_site(params, ctx) -> list[Issue]:
    """Site known to the model family, module present, layer in range, layer given iff needed."""
    site, layer, path = params.site, params.layer, ctx.path
    at = getattr(params, "at", "output")
    if is_named_site(site) and at != "output":
        return [Issue("unexpected_at", f"`at: {at}` applies to module paths only; site `{site}` "
                      "already says which tensor it is", path + ".at", ctx.node,
                      "remove `at`, use a site that is an input (layer_input), or give the module "
                      f"path with `at: {at}` (list them: `nnrun stage=modules`)")]
    if not is_named_site(site) and ("." not in site or not re.fullmatch(r"[\w.{}]+", site)):
        if "." not in site and ctx.info is not None and ctx.info.has_module(site):
            return []  # a top-level module such as `lm_head`
        modules = ctx.info.modules if ctx.info is not None else []
        return [Issue("unknown_site", f"`{site}` is neither a site name nor a module path",
                      path + ".site", ctx.node,
                      guess(site, list(SITES) + modules) + "site names: " + ", ".join(SITES))]
    stray = sorted(set(re.findall(r"\{(\w*)\}", site)) - {"layer"})
    if not is_named_site(site) and stray:
        return [Issue("unknown_placeholder", f"module path `{site}` has `{{{stray[0]}}}`: the one "
                      "placeholder a path takes is `{layer}`", path + ".site", ctx.node,
                      did_you_mean(stray[0], ["layer"], otherwise="write `{layer}` and set "
                                   "`layer:`, or write the layer's number"))]
    if site_needs_layer(site) and layer is None:
        return [Issue("missing_layer", f"site `{site}` needs a `layer`", path + ".layer",
                      ctx.node, "e.g. layer: 0, layer: all, or layer: \"{layer}\" in a foreach")]
    if not site_needs_layer(site) and layer is not None:
        return [Issue("unexpected_layer", f"site `{site}` has no layer", path + ".layer", ctx.node,
                      "remove `layer`, or use a per-layer site such as layer_output")]
    info = ctx.info
    if info is None:
        return []
    if is_named_site(site) and info.family is None:
        return [Issue("unknown_family", f"nnrun has no site map for model type "
                      f"`{info.model_type}`", path + ".site", ctx.node,
                      "use a module path instead, e.g. `model.layers.{layer}.mlp`")]
    template, _ = resolve(site, info.family)
    layers = concrete_layers(layer, info.n_layers) if layer is not None else [0]
    given = layer if isinstance(layer, list) else [layer]
    bad = [g for g, v in zip(given, layers or []) if not 0 <= v < info.n_layers]
    if layer is not None and bad:
        return [layer_issue(bad[0], info.n_layers, path + ".layer", ctx.node)]
    probe = template.replace("{layer}", str((layers or [0])[0]))
    if not info.has_module(probe):
        return [Issue("unknown_module", f"the model has no module `{probe}`", path + ".site",
                      ctx.node, _module_hint(probe, info))]
    return []


def layer_issue(layer: int, n_layers: int, path: str, node: str | None) -> Issue:
    return Issue("layer_out_of_range", f"layer {layer} does not exist (the model has "
                 f"{n_layers} layers: 0..{n_layers - 1}, or -{n_layers}..-1 from the end)",
                 path, node)


def _module_hint(path: str, info) -> str:
    """Did-you-mean for a module path: by spelling, else by the same block and submodule in
    this model's layout (`transformer.h.0.mlp` on a Llama: `model.layers.0.mlp`)."""
    hint = info.suggest(path)
    if "did you mean" in hint:
        return hint
    m = re.search(r"\.(\d+)((?:\.\w+)*)$", path)
    if m:
        tail = m.group(0)
        same = [p for p in info.modules if p.endswith(tail)]
        if same:
            return "did you mean " + " or ".join(f"`{p}`" for p in same[:3]) + "? " + hint
    return hint


def site_axes(site: str) -> tuple[str, ...]:
    """Dimension names of the tensor at a site (example, position, then features)."""
    return site_of(site).axes


def picks(spec) -> bool:
    """Whether an index spec selects one entry (the axis disappears) rather than all."""
    return spec is not None and spec != "all"


def after_position(params) -> tuple:
    """The node's index specs for the site's axes that follow `position` (its `head` on a site
    split into heads), in axis order, as `EmitContext.select`/`target` take them."""
    specs = []
    for axis in site_axes(params.site)[2:]:
        if not hasattr(params, axis):
            break
        specs.append(getattr(params, axis))
    return tuple(specs)


def remaining_after_position(params) -> int:
    """How many of the site's axes after `position` the node keeps."""
    return len(site_axes(params.site)) - 2 - sum(map(picks, after_position(params)))


def check_head(params, ctx) -> list[Issue]:
    """`head` only on a site split into heads, and within the model's head count."""
    head = getattr(params, "head", None)
    if head is None:
        return []
    if "head" not in site_axes(params.site):
        heads = [name for name, site in SITES.items() if "head" in site.axes]
        return [Issue("unexpected_head", f"site `{params.site}` is not split into heads",
                      ctx.path + ".head", ctx.node, "use a per-head site: " + ", ".join(heads))]
    info = ctx.info
    if isinstance(head, int) and info is not None and not -info.n_heads <= head < info.n_heads:
        return [Issue("head_out_of_range", f"head {head} does not exist (the model has "
                      f"{info.n_heads} heads per layer: 0..{info.n_heads - 1})",
                      ctx.path + ".head", ctx.node)]
    return []


def check_keys_aligned(params, ctx) -> None:
    """A site with a `key` axis (attention weights) indexes the keys of the padded batch: the
    prompts of an invoke must have one token count for key j to mean the same token in every
    example (and every chunk to have as many keys).

    Raises:
        CompileError: the invoke's prompts differ in length.
    """
    if "key" not in site_axes(params.site):
        return
    invoke = ctx.binding.invokes[ctx.graph.invoke_of(ctx.node.scope).id]
    if invoke.aligned:
        return
    from nnrun.errors import CompileError

    raise CompileError(f"experiment `{ctx.graph.spec.name}` has 1 problem:", [Issue(
        "ragged_keys", f"`{params.site}` has a key axis, but the prompts of invoke "
        f"`{invoke.scope}` differ in length (padding would shift the keys)", ctx.node.path,
        ctx.node_id, "use prompts of one token count (one template) for attention patterns")])


def site_coords(params, info) -> dict[str, list[str]]:
    """Tick labels of the axes a read adds: stacked layers, and every head when `head: all`."""
    coords = layer_coords(params, info)
    if "head" in site_axes(params.site) and not picks(getattr(params, "head", None)) and info:
        coords["head"] = [str(h) for h in range(info.n_heads)]
    return coords


def layer_coords(params, info) -> dict[str, list[str]]:
    """Tick labels of the `layer` axis of a node that stacks several concrete layers."""
    layer = getattr(params, "layer", None)
    if layer is None or loop_var(layer) or info is None:
        return {}
    return {"layer": [str(v) for v in concrete_layers(layer, info.n_layers)]}


def point_axes(params) -> tuple[str, ...]:
    """Axes of a read/write value: drop `position` (and `head`) when one is selected, add
    `layer` when several layers are read at once."""
    axes = site_axes(params.site)
    picked = {"position": params.position != "all"}
    picked.update({axis: picks(getattr(params, axis)) for axis in axes[2:]
                   if hasattr(params, axis)})
    axes = tuple(a for a in axes if not picked.get(a))
    if params.layer is not None and concrete_layers(params.layer, 1) is not None and (
            params.layer == "all" or isinstance(params.layer, list)):
        axes = ("layer",) + axes
    return axes


def emit_per_layer(ctx, refs, expression, stacked: bool) -> list:
    """One statement per layer (each in firing order), stacked on a `layer` axis when several.

    Args:
        refs: the site references from `ctx.site_refs`.
        expression: turns one site reference's code into the value's code.
        stacked: the layer spec names several layers (`all` or a list).
    """
    from nnrun.nodes.base import Stmt

    if len(refs) == 1 and not stacked:
        return [Stmt(f"{ctx.out} = {expression(refs[0].code)}", refs[0].access)]
    parts = [ctx.fresh(f"{ctx.out}_{i}") for i in range(len(refs))]
    stmts = [Stmt(f"{part} = {expression(ref.code)}", ref.access) for part, ref in zip(parts, refs)]
    return stmts + [Stmt(f"{ctx.out} = torch.stack([{', '.join(parts)}])  # (layer, ...)")]
