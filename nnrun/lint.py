"""All structural checks of an experiment graph; each returns located `Issue`s, none raises.

Invariant: checks never stop at the first problem, and a node whose inputs are already broken is
not reported again for consequences of that breakage.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nnrun.errors import Issue, did_you_mean
from nnrun.named_outputs import record_output_axes, source_issues

if TYPE_CHECKING:
    from pathlib import Path

    from nnrun.graph import Graph, Node
    from nnrun.model_info import ModelInfo

LOOP_REF = re.compile(r"^\{(\w+)\}$")


@dataclass
class CheckContext:
    """What a node type's `check`/`out_axes` hooks may consult."""

    info: ModelInfo | None
    loop_vars: tuple[str, ...]
    path: str
    node: str
    source: Path | None = None   # the experiment file (files it names are relative to it)


def lint_graph(graph: Graph) -> list[Issue]:
    scope_issues = _scopes(graph)
    issues = _duplicates(graph) + scope_issues + _edges(graph)
    issues += _node_scopes(graph)
    if not any(i.code == "cycle" for i in issues):
        issues += _cycles(graph)
    if not scope_issues:  # each node's own checks need only its scope: report them in one pass
        issues += _node_checks(graph)
    if not issues:
        issues += _infer_axes(graph)
    return issues


def unused_nodes(graph: Graph) -> list[Issue]:
    """Nodes whose value nothing consumes: not sinks (save, plots) nor writes, which have no
    output and are used by what they do. Such a node still runs and its work is thrown away;
    it is almost always a forgotten edge, but a graph that only reads (to look at the program,
    to test the schedule) is legitimate, so this is a warning, kept out of `lint_graph`."""
    used = {src for node in graph.nodes.values() for src in node.sources}
    return [Issue("unused_node", f"nothing consumes the output of `{node.id}` ({node.type.op}): "
                  "it is computed and thrown away", node.path, node.id,
                  "connect its output to a save/plot node, or remove it")
            for node in graph.nodes.values()
            if node.of is None and node.type.has_output and node.id not in used]


def _duplicates(graph: Graph) -> list[Issue]:
    issues = []
    counts = Counter(n.id for n in graph.spec.graph.nodes)
    counts.update(s.id for s in graph.spec.graph.scopes)
    for i, n in enumerate(graph.spec.graph.nodes):
        if counts[n.id] > 1:
            issues.append(Issue("duplicate_id", f"id `{n.id}` is used {counts[n.id]} times",
                                f"graph.nodes[{i}].id", n.id, "give every node and scope its own id"))
    for i, s in enumerate(graph.spec.graph.scopes):
        if counts[s.id] > 1 and s.id not in {n.id for n in graph.spec.graph.nodes}:
            issues.append(Issue("duplicate_id", f"scope id `{s.id}` is used {counts[s.id]} times",
                                f"graph.scopes[{i}].id", s.id))
    return issues


def _scopes(graph: Graph) -> list[Issue]:
    issues = []
    for i, s in enumerate(graph.spec.graph.scopes):
        path = f"graph.scopes[{i}]"
        parent = graph.scopes.get(s.parent) if s.parent else None
        if s.parent and parent is None:
            issues.append(Issue("unknown_scope", f"parent scope `{s.parent}` does not exist",
                                path + ".parent", s.id, _close(s.parent, graph.scopes)))
            continue
        from nnrun.graph import PARENTS

        allowed = PARENTS[s.kind]
        if (parent.kind if parent else None) not in allowed:
            where = f"inside {_a(parent.kind)}" if parent else "at the top level"
            want = " or ".join("at the top level" if a is None else "in " + _a(a) for a in allowed)
            issues.append(Issue("illegal_nesting", f"{_a(s.kind)} cannot be {where}",
                                path + ".parent", s.id, f"put it {want}"))
        issues += _scope_fields(s, path, graph)
    return issues


def _scope_fields(s, path: str, graph: Graph) -> list[Issue]:
    issues = []
    if s.foreach is not None and s.kind != "invoke":
        issues.append(Issue("illegal_foreach", f"`foreach` is only allowed on an invoke, not "
                            f"{_a(s.kind)}", path + ".foreach", s.id, "add an invoke scope inside it"))
    elif s.foreach:
        issues += _foreach_values(s, path + ".foreach", graph.info)
    if s.max_new_tokens is not None and s.kind != "generate":
        issues.append(Issue("illegal_field", "`max_new_tokens` belongs on a generate scope",
                            path + ".max_new_tokens", s.id))
    issues += _sampling_fields(s, path)
    if s.kind == "generate" and s.max_new_tokens is None:
        issues.append(Issue("missing_field", "a generate scope needs `max_new_tokens`",
                            path, s.id, "e.g. max_new_tokens: 5"))
    if s.kind == "step" and s.steps is None:
        issues.append(Issue("missing_field", "a step scope needs `steps`", path, s.id))
    if s.kind == "invoke" and s.input is None and not (s.foreach or {}).get("prompt"):
        issues.append(Issue("missing_input", "this invoke has no `input` prompt", path, s.id,
                            "set input: \"...\" or foreach: {prompt: [...]}"))
    orphans = any(c.parent and c.parent not in graph.scopes for c in graph.scopes.values())
    if s.kind in ("trace", "generate") and s.input is None and not orphans and not any(
            c.parent == s.id for c in graph.scopes.values()):
        issues.append(Issue("missing_input", f"this {s.kind} has no input and no invoke", path,
                            s.id, "set input: \"...\" or add an invoke scope with parent: " + s.id))
    return issues


SAMPLING_FIELDS = ("do_sample", "temperature", "top_k", "top_p")


def _sampling_fields(s, path: str) -> list[Issue]:
    """Sampling settings belong on a generate scope, and only mean something when it samples."""
    given = [f for f in SAMPLING_FIELDS if getattr(s, f) is not None]
    if given and s.kind != "generate":
        return [Issue("illegal_field", f"`{f}` belongs on a generate scope", f"{path}.{f}", s.id)
                for f in given]
    settings = [f for f in given if f != "do_sample"]
    if settings and not s.do_sample:
        return [Issue("sampling_without_do_sample", f"`{f}` is a sampling setting, but this "
                      "scope decodes greedily", f"{path}.{f}", s.id,
                      "add `do_sample: true` (or remove the setting)") for f in settings]
    return []


def _foreach_values(s, path: str, info: ModelInfo | None) -> list[Issue]:
    """Each foreach variable's spec (`layer: all | int | [ints]` within the model, ...), checked
    by its entry in `nnrun.loops` before the examples are read, like a node's `layer`."""
    from nnrun.loops import LOOPS

    issues = []
    for var, spec in s.foreach.items():
        issues += LOOPS[var].check(spec, info, f"{path}.{var}", s.id)
    return issues


def _edges(graph: Graph) -> list[Issue]:
    issues = []
    for j, e in enumerate(graph.spec.graph.edges):
        path = f"graph.edges[{j}]"
        src, dst = graph.nodes.get(e.src_node), graph.nodes.get(e.dst_node)
        if src is None:
            issues.append(Issue("dangling_edge", f"edge source `{e.src_node}` is not a node",
                                path + ".src", e.src_node, _close(e.src_node, _user_ids(graph))))
        elif not src.type.has_output:
            issues.append(Issue("invalid_edge", f"`{src.id}` ({src.type.op}) has no output",
                                path + ".src", src.id, "connect from a node that produces a value"))
        else:
            issues += source_issues(e, src, path + ".src")
        if dst is None:
            issues.append(Issue("dangling_edge", f"edge target `{e.dst_node}` is not a node",
                                path + ".dst", e.dst_node, _close(e.dst_node, _user_ids(graph))))
        elif e.dst_port not in dst.type.inputs:
            ports = ", ".join(dst.type.inputs) or "none"
            issues.append(Issue("unknown_port", f"`{dst.type.op}` has no input port "
                                f"`{e.dst_port}`", path + ".dst", dst.id, f"its ports: {ports}"))
    # A broken edge already explains a missing input; do not report the consequence again.
    aimed = {(e.dst_node, e.dst_port) for e in graph.spec.graph.edges}
    unsure = any(i.code in ("unknown_port", "dangling_edge") and i.path.endswith(".dst")
                 for i in issues)
    for node in graph.nodes.values():
        issues += _ports(node, aimed, unsure)
    return issues


def _user_ids(graph: Graph) -> list[str]:
    """The experiment's own node ids (not the named outputs, nnrun.named_outputs)."""
    return [nid for nid, node in graph.nodes.items() if node.of is None]


def _ports(node: Node, aimed: set, unsure: bool) -> list[Issue]:
    issues = []
    for port, spec in node.type.inputs.items():
        got = node.inputs.get(port, [])
        if spec.required and not got and not unsure and (node.id, port) not in aimed:
            target = node.id if port == "in" else f"{node.id}.{port}"
            issues.append(Issue("missing_input", f"input port `{port}` is not connected",
                                node.path, node.id, f"add an edge {{src: ..., dst: {target}}}"))
        if len(got) > 1 and not spec.variadic:
            issues.append(Issue("duplicate_input", f"port `{port}` has {len(got)} edges "
                                f"({', '.join(got)})", node.path, node.id, "keep one"))
    return issues


def _node_scopes(graph: Graph) -> list[Issue]:
    issues = []
    for node in graph.nodes.values():
        if node.of is not None:
            continue  # a named output shares its node's scope: reported once, for the node
        path = node.path + ".scope"
        if node.scope is not None and node.scope not in graph.scopes:
            issues.append(Issue("unknown_scope", f"scope `{node.scope}` does not exist", path,
                                node.id, _close(node.scope, graph.scopes)))
            continue
        if node.type.touches_model and graph.invoke_of(node.scope) is None:
            where = f"scope `{node.scope}`" if node.scope else "no scope"
            issues.append(Issue("needs_invoke", f"`{node.type.op}` touches the model but runs in "
                                f"{where}", path, node.id, "set `scope:` to an invoke, or to a "
                                "trace that has an `input`"))
        if node.type.is_sink and node.scope is not None:
            issues.append(Issue("illegal_scope", f"`{node.type.op}` runs after the model; remove "
                                "its `scope`", path, node.id))
        issues += _step_position(graph, node)
    return issues


def _step_position(graph: Graph, node) -> list[Issue]:
    """After the first generation step the model sees only the new token (the earlier ones
    are cached), so a model access in a step scope can only be at the last position."""
    position = getattr(node.params, "position", "last")
    # A write at every position edits the prompt at the first step, then each new token.
    allowed = ("last", "all") if not node.type.has_output else ("last",)
    if not node.scope or graph.scopes[node.scope].kind != "step" or position in allowed:
        return []
    return [Issue("step_position", f"position `{position}` in the generation step scope "
                  f"`{node.scope}`: after the first step each forward pass holds only the new "
                  "token", node.path + ".position", node.id,
                  f"use position: {' or '.join(allowed)} in a step scope; read prompt "
                  "positions in the invoke's own scope (it runs at the first step)")]


def _cycles(graph: Graph) -> list[Issue]:
    from nnrun.graph import topological_order

    order, cycle = topological_order(graph)
    if cycle:
        loop = " → ".join(cycle)
        return [Issue("cycle", f"the edges form a cycle: {loop}", graph.nodes[cycle[0]].path,
                      cycle[0], "remove one of these edges")]
    graph.order = order
    return []


def _node_checks(graph: Graph) -> list[Issue]:
    issues = []
    for node in graph.nodes.values():
        if node.scope is not None and node.scope not in graph.scopes:
            continue  # reported as unknown_scope
        ctx = CheckContext(graph.info, graph.loop_axes(node.scope), node.path, node.id,
                           graph.source)
        issues += node.type.check(node.params, ctx)
        if node.type.touches_model and graph.invoke_of(node.scope) is None:
            continue  # reported as needs_invoke: its loop variables are those of a missing scope
        issues += _loop_refs(node, ctx.loop_vars)
    return issues


def _loop_refs(node: Node, loop_vars: tuple[str, ...]) -> list[Issue]:
    issues = []
    for name, value in node.params:
        m = LOOP_REF.match(value) if isinstance(value, str) else None
        if m and m.group(1) not in loop_vars:
            have = "foreach variables in scope: " + (", ".join(loop_vars) or "none here")
            issues.append(Issue("unknown_loop_variable", f"`{value}` is not a loop variable of "
                                f"this node's scope", f"{node.path}.{name}", node.id,
                                did_you_mean(m.group(1), loop_vars, otherwise=have)))
    return issues


def _infer_axes(graph: Graph) -> list[Issue]:
    """Compute each node's axes per loop point and after leaving its loops. A node downstream
    of one whose axes could not be inferred is not checked (it would only repeat the cause)."""
    issues = []
    broken: set[str] = set()
    for nid in graph.order:
        node = graph.nodes[nid]
        if node.of is not None and node.of not in broken:
            continue  # a named output: its axes came with its node's (record_output_axes)
        if broken & set(node.sources):
            broken.add(nid)
            graph.point_axes[nid] = graph.axes[nid] = ()
            continue
        in_axes = graph.input_axes(nid)
        ctx = CheckContext(graph.info, graph.loop_axes(node.scope), node.path, node.id,
                           graph.source)
        try:
            point = node.type.out_axes(node.params, in_axes, ctx)
            if node.type.outputs:
                point = record_output_axes(graph, node, point)
        except ValueError as err:
            issues.append(Issue("axis_mismatch", str(err), node.path, node.id))
            broken.add(nid)
            point = ()
        graph.point_axes[nid] = point
        graph.axes[nid] = graph.loop_axes(node.scope) + point
    return issues


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _close(name: str, options) -> str:
    return did_you_mean(name, list(options), otherwise="existing: " + ", ".join(options))
