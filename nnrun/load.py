"""Turn a composed config (dict) into a validated `ExperimentSpec`, or a `ConfigError` listing
every problem with its node id, YAML path and, where the file is known, its line.

Invariant: nothing here touches a model; errors are collected, never raised one at a time.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nnrun.errors import ConfigError, Issue, raise_if_issues
from nnrun.nodes import REGISTRY
from nnrun.schema import EXPERIMENT_KEYS, FORMAT_VERSION, ExperimentSpec

YamlPath = tuple[Any, ...]


def load_experiment(config: dict[str, Any], source: Path | None = None) -> ExperimentSpec:
    """Validate the experiment part of a composed config.

    Args:
        config: the resolved config as plain containers (`OmegaConf.to_container(resolve=True)`).
        source: the experiment YAML file, to report line numbers.

    Raises:
        ConfigError: with one `Issue` per problem.
    """
    data = {k: config[k] for k in EXPERIMENT_KEYS if k in config}
    if "graph" not in data:
        raise ConfigError("no experiment selected:", [Issue(
            "no_experiment", "the config has no `graph`", "graph",
            hint="choose one, e.g. `nnrun experiment=patching` (list them: `nnrun --info defaults`)")])
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as err:
        lines = source_lines(source)
        issues = [_issue_from_error(e, data).located(_file(source), _line(lines, e["loc"]))
                  for e in _merge_union_errors(err.errors())]
        raise_if_issues(issues, ConfigError, f"experiment `{data.get('name', '?')}`")
    raise AssertionError("unreachable")


def load_experiment_file(path: Path) -> ExperimentSpec:
    """Load an experiment YAML or JSON file directly (no Hydra; `${params.x}` is resolved)."""
    from omegaconf import OmegaConf

    from nnrun.policy import load_experiment_yaml

    raw = load_experiment_yaml(path)  # refuses alias bombs, `_target_`, `hydra`, `model`, ...
    raw.pop("defaults", None)
    return load_experiment(OmegaConf.to_container(raw, resolve=True), path)


def _field_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The field a (possibly union-member) error location belongs to: `graph.nodes[0].layer`."""
    loc = _strip_union_tags(tuple(loc))
    if len(loc) >= 4 and loc[0] == "graph" and loc[1] in ("nodes", "scopes") \
            and isinstance(loc[2], int):
        return loc[:4]
    return loc


def _merge_union_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One error per field: a value matching none of a union's members yields one error per
    member in pydantic; the researcher needs one line saying what would have been accepted."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for error in errors:
        groups.setdefault((_field_loc(error["loc"]), error["type"] in MERGEABLE), []).append(error)
    merged = []
    for (loc, mergeable), group in groups.items():
        if not mergeable or len(group) == 1:
            merged += group
            continue
        wants = sorted({_expectation(e, str(loc[-1])) for e in group})
        merged.append({**group[0], "loc": loc, "type": "union_mismatch",
                       "msg": "expected " + " or ".join(wants)})
    return merged


LOOP_FIELDS = ("layer", "position")
MERGEABLE = {"int_type", "int_parsing", "int_from_float", "literal_error", "list_type",
             "string_type", "string_pattern_mismatch", "float_type", "float_parsing",
             "bool_type", "bool_parsing"}


def _expectation(error: dict[str, Any], field: str) -> str:
    kind = error["type"]
    if kind == "literal_error":
        return error["ctx"]["expected"]
    if kind == "string_pattern_mismatch" or (kind == "string_type" and field in LOOP_FIELDS):
        return f"a loop variable such as '{{{field}}}'"
    if kind == "list_type":
        return "a list of integers" if field in LOOP_FIELDS else "a list"
    return {"int": "an integer", "float": "a number", "bool": "true/false",
            "string": "a string"}.get(kind.split("_")[0], kind)


def _issue_from_error(error: dict[str, Any], data: dict[str, Any]) -> Issue:
    loc, kind = _strip_union_tags(error["loc"]), error["type"]
    node = _node_id(loc, data)
    path = format_path(loc)
    found = error.get("input")
    if kind == "union_tag_invalid":
        op = error["ctx"]["tag"]
        return Issue("unknown_op", f"unknown op `{op}`", path + ".op", node, REGISTRY.suggest(op))
    if kind == "union_tag_not_found":
        return Issue("missing_op", "node has no `op`", path, node, REGISTRY.suggest(""))
    if kind == "extra_forbidden":
        return Issue("unknown_field", f"unknown field `{loc[-1]}`", path, node,
                     _field_hint(loc, data))
    if kind == "missing":
        return Issue("missing_field", f"required field `{loc[-1]}` is missing", path, node)
    if loc == ("name",) and kind in ("string_pattern_mismatch", "string_too_long"):
        from nnrun.policy import NAME_HINT

        return Issue("invalid_name", f"name {found!r} is not a safe name", path, None, NAME_HINT)
    if loc == ("format",):
        return Issue("unsupported_format", f"experiment format {found!r} is not supported",
                     path, None, f"this nnrun reads format {FORMAT_VERSION}; "
                     f"set `format: {FORMAT_VERSION}` or upgrade nnrun")
    return Issue("invalid_value", f"{error['msg'].lower()} (found {found!r})", path, node)


def _strip_union_tags(loc: tuple[Any, ...]) -> YamlPath:
    """Drop the op name pydantic inserts after `nodes[i]` in discriminated-union locations."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if i >= 3 and loc[i - 2:i] and loc[i - 2] == "nodes" and isinstance(loc[i - 1], int) \
                and part in REGISTRY.ops():
            continue
        out.append(part)
    return tuple(out)


def _node_id(loc: YamlPath, data: dict[str, Any]) -> str | None:
    """The id of the node or scope a location points into, read from the raw data."""
    if len(loc) >= 3 and loc[0] == "graph" and loc[1] in ("nodes", "scopes") \
            and isinstance(loc[2], int):
        try:
            item = data["graph"][loc[1]][loc[2]]
            return str(item.get("id")) if isinstance(item, dict) and "id" in item else None
        except (KeyError, IndexError, TypeError):
            return None
    return None


def _field_hint(loc: YamlPath, data: dict[str, Any]) -> str:
    """Suggest a valid field name for an unknown one inside a node."""
    if len(loc) < 4 or loc[1] != "nodes":
        return "remove it; see the experiment format in the README"
    try:
        op = data["graph"]["nodes"][loc[2]]["op"]
        fields = sorted(REGISTRY.get(op).Params.model_fields)
    except (KeyError, IndexError, TypeError):
        return "remove it"
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    prefix = f"did you mean `{close[0]}`? " if close else ""
    return prefix + f"`{op}` takes: " + ", ".join(fields)


def format_path(loc: YamlPath) -> str:
    """`('graph', 'nodes', 3, 'layer')` → `graph.nodes[3].layer`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _file(source: Path | None) -> str | None:
    return str(source) if source else None


def source_lines(source: Path | None) -> dict[YamlPath, int]:
    """Map every YAML path in `source` to its 1-based line (empty if unknown or unparsable)."""
    if source is None or not Path(source).is_file():
        return {}
    try:
        root = yaml.compose(Path(source).read_text())
    except yaml.YAMLError:
        return {}
    lines: dict[YamlPath, int] = {}
    _walk(root, (), lines, set())
    return lines


def _walk(node: Any, path: YamlPath, lines: dict[YamlPath, int], seen: set[int]) -> None:
    if node is None or id(node) in seen:  # an aliased node is walked once (no alias bombs)
        return
    seen.add(id(node))
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[path + (key.value,)] = key.start_mark.line + 1
            _walk(value, path + (key.value,), lines, seen)
            lines[path + (key.value,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, seen)


def _line(lines: dict[YamlPath, int], loc: YamlPath) -> int | None:
    """Line of the deepest known prefix of `loc`."""
    loc = _strip_union_tags(tuple(loc))
    for end in range(len(loc), 0, -1):  # never the document root: a key not in the file has no line
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def parse_path(path: str) -> YamlPath:
    """`graph.nodes[2].layer` → `('graph', 'nodes', 2, 'layer')`."""
    import re

    return tuple(int(index) if index else name
                 for name, index in re.findall(r"([A-Za-z_][\w]*)|\[(\d+)\]", path))


def line_of(source: Path | None, path: str) -> int | None:
    """Line of a dotted/indexed path such as `graph.nodes[2].layer` in `source`."""
    return _line(source_lines(source), parse_path(path))


def locate(issue: Issue, source: Path | None, data: dict[str, Any]) -> Issue:
    """Add the file, line and node id of `issue.path` (for issues found outside the loader)."""
    node = issue.node or _node_id(parse_path(issue.path), data)
    located = Issue(issue.code, issue.message, issue.path, node, issue.hint)
    return located.located(_file(source), line_of(source, issue.path))
