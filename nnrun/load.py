"""Turn a composed config (dict) into a validated `ExperimentSpec`, or a `ConfigError` listing
every problem with its node id, YAML path and, where the file is known, its line.

Invariant: nothing here touches a model; errors are collected, never raised one at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nnrun.errors import ConfigError, Issue, guess, raise_if_issues
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
    if not data:
        raise ConfigError("no experiment selected:", [Issue(
            "no_experiment", "the config has no `graph`", "graph",
            hint="choose one, e.g. `nnrun experiment=patching` (list them: `nnrun --info defaults`)")])
    lines = source_lines(source)
    issues = [i.located(_file(source), _line(lines, parse_path(i.path)))
              for i in _unknown_keys(config)]
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as err:
        issues += [_issue_from_error(e, data).located(_file(source), _line(lines, e["loc"]))
                   for e in _merge_union_errors(err.errors(), data)]
        spec = None
    if spec is not None:
        issues += [locate(i, source, data) for i in _columns_without_data(spec)]
    raise_if_issues(issues, ConfigError, f"experiment `{data.get('name', '?')}`")
    return spec


def _unknown_keys(config: dict[str, Any]) -> list[Issue]:
    """Top-level keys that are neither part of the experiment nor a run setting of the primary
    config (`seed`, `stage`, ...): a typo such as `descripton:` would otherwise be ignored."""
    known = set(EXPERIMENT_KEYS) | _setting_keys()
    return [Issue("unknown_field", f"unknown key `{key}`", str(key),
                  hint=guess(str(key), sorted(known)) + "experiment keys: "
                  + ", ".join(EXPERIMENT_KEYS))
            for key in config if key not in known]


def _setting_keys() -> set[str]:
    """Top-level keys of nnrun's primary config (configs/config.yaml) and its config groups."""
    from importlib.resources import files

    primary = yaml.safe_load(files("nnrun.configs").joinpath("config.yaml").read_text()) or {}
    groups = {str(next(iter(d))).split("/")[-1].split("@")[0].replace("override ", "").strip()
              for d in primary.get("defaults", []) if isinstance(d, dict)}
    return (set(primary) | groups) - {"defaults", "hydra", "experiment"} | {"nnrun_refused"}


def _columns_without_data(spec: ExperimentSpec) -> list[Issue]:
    """`{column: ...}` needs the experiment's `data`; without it there is nothing to read."""
    if spec.data is not None:
        return []
    from nnrun.pipeline import needed_columns

    return [Issue("no_data", f"column `{name}` is used but the experiment has no `data`",
                  use.path, use.node, "add `data: {file: examples.jsonl}` (or inline `rows:`), "
                  "or give the value itself instead of {column: ...}")
            for name, use in needed_columns(spec).items()]


def load_experiment_file(path: Path) -> ExperimentSpec:
    """Load an experiment YAML or JSON file directly (no Hydra; `${params.x}` is resolved)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from nnrun.policy import load_experiment_yaml

    raw = load_experiment_yaml(path)  # refuses alias bombs, `_target_`, `hydra`, `model`, ...
    raw.pop("defaults", None)
    try:
        config = OmegaConf.to_container(raw, resolve=True)
    except OmegaConfBaseException as err:  # `${params.missing}`, a bad interpolation grammar
        issue = Issue("unresolved_interpolation", str(err).splitlines()[0],
                      str(getattr(err, "full_key", "") or ""),
                      hint="check the ${...} reference (e.g. ${params.x} needs params.x)")
        raise ConfigError("the experiment could not be resolved:", [
            locate(issue, path, OmegaConf.to_container(raw, resolve=False))]) from None
    return load_experiment(config, path)


_SCALAR_TAGS = {"int", "str", "float", "bool", "none", "list", "dict"}


def _is_member_tag(part: Any) -> bool:
    """A union member pydantic names in an error location (`int`, `literal['all']`,
    `constrained-str`, `list[int]`, `Column`, ...); the format's own keys are snake_case."""
    return isinstance(part, str) and (
        part in _SCALAR_TAGS or part[:1].isupper() or "[" in part or "-" in part)


def _split_member(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None, tuple[Any, ...]]:
    """(field, union member, path inside the member) of an error location."""
    loc = tuple(p for p in _strip_union_tags(tuple(loc)) if p != "[key]")
    for i, part in enumerate(loc):
        if _is_member_tag(part):
            return loc[:i], part, loc[i + 1:]
    return loc, None, ()


def _merge_union_errors(errors: list[dict[str, Any]],
                        data: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The errors of the union member the value was meant for, or one error per field saying
    what would have been accepted: pydantic reports one error per member that failed."""
    plain: list[dict[str, Any]] = []
    groups: dict[tuple[Any, ...], list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = {}
    for error in errors:
        field, member, rest = _split_member(error["loc"])
        if member is None:
            plain.append({**error, "loc": field})
        else:
            groups.setdefault(field, []).append((member, rest, error))
    merged = plain
    for field, group in groups.items():
        chosen = _one_member(field, group, _value_at(data, field))
        nested = [e for e in chosen if _split_member(e["loc"])[1] is not None]
        merged += [e for e in chosen if e not in nested]
        merged += _merge_union_errors(nested, data) if nested else []  # a union in a member
    return merged


def _one_member(field: tuple[Any, ...], group: list, value: Any) -> list[dict[str, Any]]:
    by_member: dict[str, list[dict[str, Any]]] = {}
    for member, rest, error in group:
        by_member.setdefault(member, []).append({**error, "loc": field + rest, "member": member})
    if isinstance(value, dict):   # meant for a model member ({column: x}, {match: " x"})
        models = {m: errs for m, errs in by_member.items() if m[:1].isupper()}
        if models:
            return min(models.values(), key=lambda errs: (len(errs), -_overlap(errs, value)))
    if isinstance(value, list):   # meant for the list member: report its items
        lists = [errs for m, errs in by_member.items() if m.startswith("list")]
        if lists:
            return lists[0]
    # A scalar of the right type that breaks a member's constraint (`>= 1`, finite): say that.
    typed = [errs for m, errs in by_member.items() if not m[:1].isupper() and all(
        e["type"] not in MERGEABLE and e["type"] != "model_type" for e in errs)]
    if typed:
        return typed[0]
    scalar = [e for m, errs in by_member.items() for e in errs if e["type"] in MERGEABLE]
    wants = sorted({_expectation(e, str(field[-1])) for e in scalar})
    if isinstance(value, (dict, list)) or any(m[:1].isupper() for m in by_member):
        wants += [f"{{{m.lower()}: ...}}" for m in by_member if m[:1].isupper()]
    first = group[0][2]
    return [{**first, "loc": field, "type": "union_mismatch",
             "msg": "expected " + " or ".join(dict.fromkeys(wants))}]


def _overlap(errors: list[dict[str, Any]], value: dict[str, Any]) -> int:
    """How many of the given keys the member knows (fewer unknown-field errors)."""
    unknown = {e["loc"][-1] for e in errors if e["type"] == "extra_forbidden"}
    return len(set(value) - unknown)


def _value_at(data: dict[str, Any] | None, loc: tuple[Any, ...]) -> Any:
    value: Any = data
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


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
                     _field_hint(loc, data, error.get("member")))
    if kind == "missing":
        return Issue("missing_field", f"required field `{loc[-1]}` is missing", path, node)
    if loc == ("name",) and kind in ("string_pattern_mismatch", "string_too_long"):
        from nnrun.policy import NAME_HINT

        return Issue("invalid_name", f"name {found!r} is not a safe name", path, None, NAME_HINT)
    if loc == ("format",):
        return Issue("unsupported_format", f"experiment format {found!r} is not supported",
                     path, None, f"this nnrun reads format {FORMAT_VERSION}; "
                     f"set `format: {FORMAT_VERSION}` or upgrade nnrun")
    msg = error["msg"]  # pydantic's, lowercase first letter only (it may quote a pattern)
    return Issue("invalid_value", f"{msg[:1].lower()}{msg[1:]} (found {found!r})", path, node,
                 _foreach_key_hint(loc, kind, found))


def _foreach_key_hint(loc: YamlPath, kind: str, found: Any) -> str:
    """A foreach key is checked against the loop names (its values are checked later, by lint):
    a literal error there is a misspelt loop variable."""
    if kind != "literal_error" or loc[:2] != ("graph", "scopes") or loc[3:4] != ("foreach",):
        return ""
    from nnrun.errors import did_you_mean
    from nnrun.loops import LOOPS

    return did_you_mean(str(found), list(LOOPS))


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


def _field_hint(loc: YamlPath, data: dict[str, Any], member: str | None = None) -> str:
    """Suggest a valid field name for an unknown one (in a node, scope, edge, `data`, ...)."""
    owner, fields = _owner_fields(loc[:-1], data, member)
    if not fields:
        return "remove it; see the experiment format in the README"
    return guess(str(loc[-1]), fields) + f"{owner} takes: " + ", ".join(fields)


def _owner_fields(loc: YamlPath, data: dict[str, Any], member: str | None):
    """What the mapping at `loc` is (for the hint) and the fields it accepts."""
    from nnrun.data import DataSpec
    from nnrun.refs import Column, Match
    from nnrun.schema import EdgeSpec, GraphSpec, ScopeSpec

    if member in ("Column", "Match"):
        model = {"Column": Column, "Match": Match}[member]
        return f"`{{{member.lower()}: ...}}`", sorted(model.model_fields)
    if len(loc) == 3 and loc[:2] == ("graph", "nodes"):
        try:
            op = data["graph"]["nodes"][loc[2]]["op"]
            return f"`{op}`", sorted(REGISTRY.get(op).Params.model_fields)
        except (KeyError, IndexError, TypeError):
            return "", []
    table = {(): ("an experiment", ExperimentSpec), ("graph",): ("`graph`", GraphSpec),
             ("data",): ("`data`", DataSpec)}
    if len(loc) == 3 and loc[:2] == ("graph", "scopes"):
        return "a scope", sorted(ScopeSpec.model_fields)
    if len(loc) == 3 and loc[:2] == ("graph", "edges"):
        return "an edge", sorted(EdgeSpec.model_fields)
    if tuple(loc) in table:
        owner, model = table[tuple(loc)]
        return owner, sorted(model.model_fields)
    return "", []


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
    from nnrun.libyaml import compose

    try:
        root = compose(Path(source).read_text())
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
