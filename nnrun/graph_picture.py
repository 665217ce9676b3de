"""A picture of an experiment graph, in the spirit of nnsight's ``.vis``.

Responsibility: draw scopes, nodes and edges given as plain dicts to a PNG and an SVG.

Invariant: the layout is a pure function of the input lists, and boxes never overlap
except by nesting. Nodes sit in one column per topological level, so data flows left
to right; every scope gets its own horizontal band inside its parent's band, so a
scope's box contains exactly its own members. Nodes that run after the model sit in
an "after the model" area to the right of every model column.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnrun.plots import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

NODE_COLOURS = {  # kind -> (fill, edge)
    "read": ("#dbeafe", "#1d4ed8"), "write": ("#fee2e2", "#b91c1c"),
    "compute": ("#f3f4f6", "#4b5563"), "metric": ("#dcfce7", "#15803d"),
    "save": ("#ede9fe", "#6d28d9"), "plot": ("#fef3c7", "#b45309"),
}
SCOPE_COLOURS = {"session": "#374151", "trace": "#1e40af", "generate": "#0f766e",
                 "invoke": "#7c3aed", "step": "#c2410c", "after": "#6b7280"}
_FALLBACK = ("#ffffff", "#111827")
AFTER = "\0after"  # pseudo-scope id; the NUL keeps it from clashing with user ids
_AFTER_SCOPE = {"id": AFTER, "kind": "after", "parent": None}
_DETOURS = (0.0, -0.45, 0.45, -0.9, 0.9, -1.5, 1.5)  # vertical bulge of an edge, inches

# Geometry in inches: the figure is sized so one data unit is one inch, which lets
# point-sized text be measured once and boxes be sized to fit it.
NODE_H, COL_GAP, ROW_GAP, PAD, HEADER = 0.62, 0.8, 0.28, 0.16, 0.34
ID_FONT, OP_FONT, SCOPE_FONT, PORT_FONT = 9.0, 8.0, 8.5, 7.5


@dataclass
class _Box:
    """An axis-aligned rectangle in layout coordinates (y grows downwards)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def contains(self, x: float, y: float, margin: float = 0.0) -> bool:
        """Whether ``(x, y)`` lies inside the box grown by ``margin``."""
        inside_x = self.x0 - margin <= x <= self.x1 + margin
        return inside_x and self.y0 - margin <= y <= self.y1 + margin

    def shifted(self, dx: float) -> _Box:
        """The same box moved ``dx`` to the right."""
        return _Box(self.x0 + dx, self.y0, self.x1 + dx, self.y1)

    @staticmethod
    def around(boxes: list[_Box]) -> _Box:
        """The smallest box holding all ``boxes`` (a small placeholder when there are none)."""
        if not boxes:
            return _Box(0.0, 0.0, 3.0, 0.6)
        return _Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes),
                    max(b.x1 for b in boxes), max(b.y1 for b in boxes))


def _text_width(text: str, size: float, **font: Any) -> float:
    """Width of rendered text in inches, measured from the real font."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(size=size, **font)
    width, _, _ = text_to_path.get_text_width_height_descent(text, prop, ismath=False)
    return width / 72.0


def _levels(ids: list[str], edges: list[dict], after: set[str]) -> dict[str, int]:
    """Column of each node: its longest path from a source, after-model nodes pushed right."""
    preds: dict[str, list[str]] = defaultdict(list)
    for edge in edges:
        preds[edge["dst"]].append(edge["src"])
    level: dict[str, int] = {}
    floor: dict[str, int] = {}

    def visit(nid: str, path: frozenset[str]) -> int:
        if nid not in level:  # a predecessor already on the path closes a cycle: ignore it
            ins = [visit(p, path | {nid}) + 1 for p in preds[nid] if p not in path | {nid}]
            level[nid] = max([floor.get(nid, 0)] + ins)
        return level[nid]

    for nid in (n for n in ids if n not in after):
        visit(nid, frozenset())
    # Model columns are known now; everything after the model starts right of them.
    floor.update(dict.fromkeys(after, 1 + max(level.values(), default=-1)))
    for nid in ids:
        visit(nid, frozenset())
    return level


class _Placer:
    """Assigns boxes to nodes and scopes, one nested horizontal band per scope."""

    def __init__(self, children: dict, members: dict, level: dict, label_w: dict, node_w: float):
        self.children, self.members, self.level = children, members, level
        self.label_w, self.node_w = label_w, node_w
        self.nodes: dict[str, _Box] = {}
        self.scopes: dict[str, _Box] = {}

    def place(self, sid: str, y_top: float) -> _Box:
        """Lay out scope ``sid`` with its top edge at ``y_top``; return its box."""
        y = y_top + HEADER
        parts: list[_Box] = []
        stacked: dict[int, int] = defaultdict(int)  # nodes sharing a column stack downwards
        for nid in self.members[sid]:
            col = self.level[nid]
            x0, y0 = col * (self.node_w + COL_GAP), y + stacked[col] * (NODE_H + ROW_GAP)
            self.nodes[nid] = _Box(x0, y0, x0 + self.node_w, y0 + NODE_H)
            parts.append(self.nodes[nid])
            stacked[col] += 1
        y += max(stacked.values(), default=0) * (NODE_H + ROW_GAP)
        for child in self.children[sid]:
            parts.append(self.place(child, y))
            y = parts[-1].y1 + ROW_GAP
        x0 = min((b.x0 for b in parts), default=0.0) - PAD
        x1 = max(max((b.x1 for b in parts), default=0.0) + PAD, x0 + self.label_w[sid])
        self.scopes[sid] = _Box(x0, y_top, x1, (y - ROW_GAP if parts else y) + PAD)
        return self.scopes[sid]


def _scope_label(scope: dict) -> str:
    """``kind: id``, plus the invoke's iteration space when it has one."""
    if scope["id"] == AFTER:
        return "after the model"
    label = f"{scope['kind']}: {scope['id']}"
    return f"{label}  ·  for each {scope['foreach']}" if scope.get("foreach") else label


def _group(scopes: list[dict], nodes: list[dict], edges: list[dict]) -> tuple[dict, dict]:
    """Children of each scope (roots under None) and members of each scope, validated.

    Raises:
        ValueError: If a parent, scope or edge end names something that does not exist.
    """
    scope_ids, node_ids = {s["id"] for s in scopes} | {None}, {n["id"] for n in nodes}
    refs = [(s["parent"], scope_ids, f"parent of scope {s['id']!r}") for s in scopes]
    refs += [(n["scope"], scope_ids, f"scope of node {n['id']!r}") for n in nodes]
    refs += [(end, node_ids, f"edge {e['src']!r} -> {e['dst']!r}")
             for e in edges for end in (e["src"], e["dst"])]
    for name, known, what in refs:
        if name not in known:
            raise ValueError(f"{what} names unknown {name!r}")
    children: dict[str | None, list[str]] = defaultdict(list)
    members: dict[str, list[str]] = defaultdict(list)
    for scope in scopes:
        children[scope["parent"]].append(scope["id"])
    for node in nodes:
        members[AFTER if node["scope"] is None else node["scope"]].append(node["id"])
    return children, members


def _layout(scopes: list[dict], nodes: list[dict], edges: list[dict]) -> _Placer:
    """Compute a box for every scope and node."""
    children, members = _group(scopes, nodes, edges)
    level = _levels([n["id"] for n in nodes], edges, set(members[AFTER]))
    label_w = {s["id"]: _text_width(_scope_label(s), SCOPE_FONT, weight="bold") + 0.25
               for s in scopes + [_AFTER_SCOPE]}
    text_w = [max(_text_width(n["id"], ID_FONT, weight="bold"),
                  _text_width(n["op"], OP_FONT, family="monospace")) for n in nodes]
    placer = _Placer(children, members, level, label_w, node_w=max([0.7] + text_w) + 0.3)
    y = 0.0
    for root in children[None]:  # top-level scopes stack downwards in their own bands
        y = placer.place(root, y).y1 + ROW_GAP
    if len(placer.scopes) < len(scopes):
        raise ValueError("scope parents form a cycle")
    if members[AFTER]:  # top-aligned, right of the model scopes
        after = placer.place(AFTER, 0.0)
        model_x1 = max((placer.scopes[r].x1 for r in children[None]), default=after.x0)
        dx = max(0.0, model_x1 + 2 * PAD - after.x0)  # clear of any wide scope label
        placer.scopes[AFTER] = after.shifted(dx)
        placer.nodes.update({n: placer.nodes[n].shifted(dx) for n in members[AFTER]})
    return placer


Curve = tuple[tuple[float, float], ...]  # cubic Bézier: start, two controls, end


def _point(curve: Curve, t: float) -> tuple[float, float]:
    """Point at parameter ``t`` on a cubic Bézier."""
    u = 1.0 - t
    weights = (u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t)
    x = sum(w * pt[0] for w, pt in zip(weights, curve, strict=True))
    return x, sum(w * pt[1] for w, pt in zip(weights, curve, strict=True))


def _curve(p: tuple, q: tuple, detour: float) -> Curve:
    """Build an S-shaped edge that leaves and enters horizontally, bulged down by ``detour``."""
    reach = max(0.4, 0.5 * abs(q[0] - p[0]))
    return p, (p[0] + reach, p[1] + detour), (q[0] - reach, q[1] + detour), q


def _cost(curve: Curve, obstacles: list[_Box], bounds: _Box) -> float:
    """How many samples of the curve fall on other nodes or outside the picture."""
    steps = max(24, int(abs(curve[3][0] - curve[0][0]) / 0.08))  # dense enough to catch corners
    samples = [_point(curve, i / steps) for i in range(1, steps)]
    return sum(any(b.contains(x, y, 0.05) for b in obstacles) + 5 * (not bounds.contains(x, y))
               for x, y in samples)


def _label_spot(curve: Curve, avoid: list[_Box]) -> tuple[float, float]:
    """Find a point on the curve for a port label, clear of nodes, headers and labels."""
    spots = [_point(curve, t) for t in (0.5, 0.6, 0.4, 0.7, 0.3)]
    return next((s for s in spots if not any(box.contains(*s, 0.12) for box in avoid)), spots[0])


def _draw_edges(ax: Axes, edges: list[dict], boxes: dict[str, _Box], avoid: list[_Box],
                bounds: _Box) -> None:
    """Arrows from a node's right side into ports spread along the target's left side."""
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MplPath

    incoming: dict[str, list[dict]] = defaultdict(list)
    for edge in edges:
        incoming[edge["dst"]].append(edge)
    avoid = avoid + list(boxes.values())  # port labels also avoid each other, appended below
    for dst, into in incoming.items():
        into = sorted(into, key=lambda e: boxes[e["src"]].y0)  # entering arrows don't cross
        for i, edge in enumerate(into):
            src, box = boxes[edge["src"]], boxes[dst]
            p = (src.x1, (src.y0 + src.y1) / 2)
            q = (box.x0, box.y0 + NODE_H * (i + 1) / (len(into) + 1))
            if q[0] <= p[0]:  # self-loops and back edges of cycles arc over their nodes
                top = min(src.y0, box.y0) - 0.45
                curve = (p, (p[0] + 0.3, top), (q[0] - 0.3, top), q)
            else:  # detour only as far as needed to stop the edge running under another node
                others = [b for n, b in boxes.items() if n not in (edge["src"], dst)]
                curves = [_curve(p, q, d) for d in _DETOURS]
                curve = min(curves, key=lambda c: _cost(c, others, bounds))
            path = MplPath(curve, [MplPath.MOVETO] + [MplPath.CURVE4] * 3)
            ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=11, lw=1.1,
                                         color="#374151", shrinkA=0, shrinkB=0, zorder=4))
            if _edge_label(edge):
                avoid.append(_draw_port(ax, _edge_label(edge), _label_spot(curve, avoid)))


def _edge_label(edge: dict) -> str:
    """What an edge's label says: the named output it leaves (`values →`) and the port it
    enters other than `in`; empty for a plain `src: a, dst: b`."""
    output, port = edge.get("output"), edge.get("port", "in")
    into = port if port != "in" else ""
    return f"{output} → {into}".rstrip() if output else into


def _draw_port(ax: Axes, port: str, at: tuple[float, float]) -> _Box:
    """Label an edge with its ports; return the area the label covers."""
    ax.text(*at, port, fontsize=PORT_FONT, ha="center", va="center", zorder=6, parse_math=False,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "#d1d5db", "lw": 0.6})
    half = _text_width(port, PORT_FONT) / 2 + 0.05
    return _Box(at[0] - half, at[1] - 0.08, at[0] + half, at[1] + 0.08)


def _draw_scopes(ax: Axes, scopes: list[dict], placer: _Placer) -> list[_Box]:
    """Draw scope boxes, outermost first, and return the areas their labels cover."""
    from matplotlib.colors import to_rgba
    from matplotlib.patches import FancyBboxPatch

    headers = []
    for scope in scopes + [_AFTER_SCOPE]:
        box = placer.scopes.get(scope["id"])
        if box is None:
            continue  # the after-model area when no node runs after the model
        colour = SCOPE_COLOURS.get(scope["kind"], _FALLBACK[1])
        # Faint fills add up, so deeper scopes read darker without hiding anything.
        ax.add_patch(FancyBboxPatch((box.x0, box.y0), box.x1 - box.x0, box.y1 - box.y0, zorder=1,
                                    boxstyle="round,pad=0,rounding_size=0.1",
                                    fc=to_rgba(colour, 0.05), ec=colour, lw=1.2,
                                    ls="--" if scope["id"] == AFTER else "-"))
        ax.text(box.x0 + 0.1, box.y0 + 0.08, _scope_label(scope), fontsize=SCOPE_FONT,
                color=colour, va="top", ha="left", fontweight="bold", zorder=3, parse_math=False)
        label_x1 = box.x0 + placer.label_w[scope["id"]]
        headers.append(_Box(box.x0, box.y0, label_x1, box.y0 + HEADER - 0.05))
    return headers


def _draw_nodes(ax: Axes, nodes: list[dict], boxes: dict[str, _Box]) -> None:
    """Draw each node as a box coloured by kind, its id in bold over its op."""
    from matplotlib.patches import FancyBboxPatch

    text = {"ha": "center", "va": "center", "zorder": 6, "parse_math": False}
    for node in nodes:
        box = boxes[node["id"]]
        fill, edge = NODE_COLOURS.get(node["kind"], _FALLBACK)
        ax.add_patch(FancyBboxPatch((box.x0, box.y0), box.x1 - box.x0, NODE_H, zorder=5,
                                    boxstyle="round,pad=0,rounding_size=0.08",
                                    fc=fill, ec=edge, lw=1.3))
        mid = (box.x0 + box.x1) / 2
        ax.text(mid, box.y0 + NODE_H * 0.36, node["id"], fontsize=ID_FONT, fontweight="bold",
                **text)
        ax.text(mid, box.y0 + NODE_H * 0.7, node["op"], fontsize=OP_FONT, family="monospace",
                color="#374151", **text)


def _legend(ax: Axes, nodes: list[dict]) -> None:
    """Key to the node colours, for the kinds that occur, below the drawing."""
    from matplotlib.patches import Patch

    present = {n["kind"] for n in nodes}
    kinds = [k for k in NODE_COLOURS if k in present] + sorted(present - set(NODE_COLOURS))
    colours = [NODE_COLOURS.get(k, _FALLBACK) for k in kinds]
    handles = [Patch(fc=fc, ec=ec, label=k) for k, (fc, ec) in zip(kinds, colours, strict=True)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles),
              frameon=False, fontsize=8, handlelength=1.4, columnspacing=1.2)


def draw_graph(scopes: list[dict], nodes: list[dict], edges: list[dict], out_stem: Path,
               title: str = "") -> list[Path]:
    """Draw an experiment graph and write ``<out_stem>.png`` and ``<out_stem>.svg``.

    Args:
        scopes: ``{"id", "kind", "parent"}`` dicts (kind: session, trace, generate,
            invoke or step; parent: a scope id or None). An invoke may carry a short
            ``"foreach"`` description shown in its label.
        nodes: ``{"id", "op", "kind", "scope"}`` dicts (kind: read, write, compute,
            metric, save or plot; scope: a scope id, or None to run after the model).
        edges: ``{"src", "dst", "port"}`` dicts between node ids, optionally with
            ``"output"``: the named output of ``src`` the edge reads; ports other than
            ``"in"`` and outputs are labelled on the arrow.
        out_stem: Output path without extension.
        title: Title above the picture.

    Returns:
        The PNG path and the SVG path.

    Raises:
        ValueError: If a parent, scope or edge end names something that does not exist.
    """
    placer = _layout(scopes, nodes, edges)
    boxes = list(placer.scopes.values()) + list(placer.nodes.values())
    bounds = _Box.around(boxes)
    fig = new_figure(bounds.x1 - bounds.x0 + 0.2, bounds.y1 - bounds.y0 + 0.2, layout=None)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(bounds.x0 - 0.1, bounds.x1 + 0.1)
    ax.set_ylim(bounds.y1 + 0.1, bounds.y0 - 0.1)  # inverted: layout y grows downwards
    ax.axis("off")
    if not boxes:
        ax.text(0.5, 0.5, "(empty graph)", transform=ax.transAxes, ha="center", va="center",
                color="#6b7280", style="italic")
    headers = _draw_scopes(ax, scopes, placer)
    _draw_nodes(ax, nodes, placer.nodes)
    _draw_edges(ax, edges, placer.nodes, headers, bounds)
    if nodes:
        _legend(ax, nodes)
    if title:
        ax.set_title(title, fontsize=11, parse_math=False)
    return save_figure(fig, out_stem)
