"""What an experiment file may contain: read it safely and refuse anything that configures code,
trust, models or paths, before Hydra composes it.

Invariant: an experiment file is data. It is parsed with a safe YAML loader whose alias expansion
is bounded (a YAML "alias bomb" is refused, not expanded), and it may not contain `_target_`,
`hydra.*`, `model.*` (path, trust_remote_code, allow_pickle, ...), `export_path`, `${oc.env:..}`
or an unsafe `name`; those belong on the user's command line or in their own config files. Every
refusal is a located `ConfigError` (file, line, key, where to put it instead).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import yaml

from nnrun.errors import ConfigError, Issue, raise_if_issues

# The experiment `name` names the run directory and appears in generated code: letters, digits,
# `_`, `-`, and dots that are never doubled (no `..`), at most 64 characters, no leading dot/dash.
NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*$"
NAME_MAX = 64
NAME_HINT = ("a name uses letters, digits, `_`, `-` and single dots, starts with a letter or digit "
             f"and has at most {NAME_MAX} characters (it names the run directory)")
MAX_FILE_BYTES = 10 * 1024 * 1024   # experiment files are small; a 10 MB one is an accident
MAX_NODES = 100_000                  # YAML nodes after expanding aliases (a real file: < 2,000)
_ENV_RESOLVER = re.compile(r"\$\{\s*(oc\.env|env)\s*:")
_DEFAULTS_OK = {"model", "/model", "override /model"}


def is_safe_name(name: Any) -> bool:
    return isinstance(name, str) and len(name) <= NAME_MAX and bool(re.match(NAME_PATTERN, name))


def safe_dirname(name: Any) -> str:
    """The name as a directory component: itself when safe, else `invalid-name` (the run then
    fails validation with a clear message, inside the outputs root)."""
    return name if is_safe_name(name) else "invalid-name"


def compose_bounded(text: str, file: str | None = None) -> yaml.Node | None:
    """Parse YAML into a node graph (no Python objects built) and refuse an alias bomb: the
    expanded size must stay under MAX_NODES, and an alias may not contain itself."""
    from nnrun.libyaml import compose

    try:
        root = compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError("the experiment file is not valid YAML:", [Issue(
            "invalid_yaml", _yaml_message(err), "",
            hint="fix the YAML syntax at this line").located(
                file, mark.line + 1 if mark else None)]) from None
    if root is not None:
        _expanded_size(root, {}, set(), file)
    return root


def _yaml_message(err: yaml.YAMLError) -> str:
    """The parser's complaint, with where the construct it was reading began (an unclosed `{`
    is found lines later: the start is what the researcher needs)."""
    problem = str(getattr(err, "problem", None) or err).strip()
    context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and start is not None:
        return f"{problem} ({context}, line {start.line + 1})"
    return problem


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int],
                   file: str | None) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _bomb(node, file, "an alias refers to a node that contains it (recursive alias)")
    active.add(key)
    size = 1
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    for child in children:
        size += _expanded_size(child, memo, active, file)
        if size > MAX_NODES:
            raise _bomb(node, file, f"expanding its aliases gives more than {MAX_NODES:,} values "
                                    "(a YAML alias bomb?)")
    active.discard(key)
    memo[key] = size
    return size


def _bomb(node: yaml.Node, file: str | None, message: str) -> ConfigError:
    return ConfigError("the experiment file is refused:", [Issue(
        "yaml_alias_limit", message, "",
        hint="write the values out, or use fewer anchors/aliases (`&a` / `*a`)").located(
            file, node.start_mark.line + 1)])


def check_experiment_text(text: str, file: str | None = None) -> yaml.Node | None:
    """Raise a ConfigError listing everything in an experiment file that it may not configure;
    return the parsed node graph (None for a file without a document)."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise ConfigError("the experiment file is refused:", [Issue(
            "file_too_large", f"the file is larger than {MAX_FILE_BYTES // 2**20} MB", "",
            hint="put large data in a `data:` file").located(file, None)])
    root = compose_bounded(text, file)
    if root is None:
        return None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError("the experiment file is refused:", [Issue(
            "not_a_mapping", "an experiment file is a mapping (format, name, graph, ...)", "",
            hint="see the experiment format in the README").located(file, 1)])
    issues: list[Issue] = []
    for key_node, value in root.value:
        key = key_node.value
        line = key_node.start_mark.line + 1
        if key in FORBIDDEN_KEYS:
            code, message, hint = FORBIDDEN_KEYS[key]
            issues.append(Issue(code, message, key, hint=hint).located(file, line))
        elif key == "defaults":
            issues += _check_defaults(value, file)
        elif key == "name":
            issues += _check_name(value, file)
    issues += _walk(root, "", file)
    raise_if_issues(issues, ConfigError, f"experiment file {file or ''}".strip())
    return root


# Top-level keys an experiment file may not set: key → (issue code, what, where it goes instead).
FORBIDDEN_KEYS: dict[str, tuple[str, str, str]] = {
    "hydra": ("forbidden_hydra", "an experiment file may not configure Hydra (callbacks, "
              "launcher, sweeper, run directory, ...)",
              "Hydra settings run code or choose paths: put them on your command line "
              "(hydra.launcher.partition=gpu) or in your own config (`-cd DIR`)"),
    "model": ("forbidden_model_override", "an experiment file may not set the model or how it "
              "is loaded (path, trust_remote_code, allow_pickle, device, ...)",
              "choose the model on your command line (`model=gpt2 model.path=/my/ckpt "
              "model.trust_remote_code=true`) or in your own configs/model/*.yaml"),
    "backend": ("forbidden_backend", "an experiment file may not choose where it runs",
                "choose the backend on your command line (backend=ndif)"),
    "resume": ("forbidden_resume", "an experiment file may not decide whether earlier results "
               "are reused", "pass resume=true (or resume=failed) on your command line"),
    "allow_functions": ("forbidden_allow_functions", "an experiment file may not allow itself "
                        "to run Python code", "read the experiment's function files, then pass "
                        "allow_functions=true on your command line"),
    "memory_budget": ("forbidden_budget", "an experiment file may not set the memory budget",
                      "pass memory_budget=... on your command line"),
    "threads": ("forbidden_threads", "an experiment file may not set how many CPU threads the "
                "machine gives it", "pass threads=N on your command line (default: auto)"),
    "export_path": ("forbidden_path", "an experiment file may not choose where files are "
                    "written", "pass export_path=... on your command line"),
}


def _check_name(node: yaml.Node, file: str | None) -> list[Issue]:
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    if is_safe_name(value):
        return []
    return [Issue("invalid_name", f"name {value!r} is not a safe name" if value is not None
                  else "name must be a plain string", "name",
                  hint=NAME_HINT).located(file, node.start_mark.line + 1)]


def _check_defaults(node: yaml.Node, file: str | None) -> list[Issue]:
    """`defaults` may only hold `_self_` and a model preset (`- override /model: gpt2`)."""
    entries = node.value if isinstance(node, yaml.SequenceNode) else [node]
    issues = []
    for entry in entries:
        ok = isinstance(entry, yaml.ScalarNode) and entry.value == "_self_"
        if isinstance(entry, yaml.MappingNode) and len(entry.value) == 1:
            group, choice = entry.value[0]
            ok = (isinstance(group, yaml.ScalarNode) and group.value.strip() in _DEFAULTS_OK
                  and isinstance(choice, yaml.ScalarNode))
        if not ok:
            issues.append(Issue(
                "forbidden_default", "an experiment's `defaults` may only select a model preset "
                "(`- override /model: NAME`) and `_self_`", "defaults",
                hint="other config groups (hydra/launcher, hydra/callbacks, ...) belong on your "
                     "command line").located(file, entry.start_mark.line + 1))
    return issues


def _walk(node: yaml.Node, path: str, file: str | None,
          seen: set[int] | None = None) -> list[Issue]:
    """`_target_` keys and `${oc.env:...}` anywhere (each aliased node checked once)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return []
    seen.add(id(node))
    issues: list[Issue] = []
    if node.tag not in _PLAIN_TAGS and (node.tag.startswith("!") or "python/" in node.tag
                                         or not node.tag.startswith("tag:yaml.org,2002:")):
        issues.append(Issue(
            "forbidden_tag", f"the YAML tag `{node.tag}` asks the loader to build an object; an "
            "experiment file holds plain values only", path,
            hint="remove the tag (`!!python/...`, `!name`)").located(
                file, node.start_mark.line + 1))
    if isinstance(node, yaml.ScalarNode):
        if isinstance(node.value, str) and _ENV_RESOLVER.search(node.value):
            issues.append(Issue(
                "forbidden_env", "an experiment file may not read environment variables "
                "(`${oc.env:...}`): they hold tokens and other secrets", path,
                hint="pass the value on your command line (params.x=...)").located(
                    file, node.start_mark.line + 1))
        return issues
    if isinstance(node, yaml.MappingNode):
        issues += _duplicate_keys(node, path, file)
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            if name.strip() in ("_target_", "_partial_", "_recursive_", "_args_", "_convert_"):
                issues.append(Issue(
                    "forbidden_target", f"`{name}` asks Hydra to import and call Python code; "
                    "an experiment file never runs code", f"{path}.{name}" if path else name,
                    hint="use an op from nnrun's registry (see the README's node table)"
                ).located(file, key.start_mark.line + 1))
            issues += _walk(key, path, file, seen)
            issues += _walk(value, f"{path}.{name}" if path else name, file, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            issues += _walk(item, f"{path}[{i}]", file, seen)
    return issues


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in
               ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}


def _duplicate_keys(node: yaml.MappingNode, path: str, file: str | None) -> list[Issue]:
    """A key given twice in one mapping (YAML keeps the last silently in many loaders)."""
    first: dict[str, int] = {}
    issues = []
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        line = key.start_mark.line + 1
        if key.value in first:
            where = f"{path}.{key.value}" if path else key.value
            issues.append(Issue(
                "duplicate_key", f"`{key.value}` is given twice (first on line "
                f"{first[key.value]})", where, hint="keep one of them").located(file, line))
        first.setdefault(key.value, line)
    return issues


def load_experiment_yaml(path: Path) -> Any:
    """Check an experiment file (YAML or JSON) and return it as an OmegaConf DictConfig."""
    from omegaconf import DictConfig, OmegaConf

    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError("the experiment file is refused:", [Issue(
                "file_too_large", f"the file is larger than {MAX_FILE_BYTES // 2**20} MB", "",
                hint="put large data in a `data:` file").located(str(path), None)])
        data = path.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("the experiment file cannot be read:", [Issue(
            "invalid_encoding", f"byte {data[err.start]:#04x} is not UTF-8 ({err.reason})", "",
            hint="save the file as UTF-8").located(
                str(path), data[:err.start].count(b"\n") + 1)]) from None
    except OSError as err:
        raise ConfigError("the experiment file cannot be read:", [Issue(
            "unreadable_file", str(err), "", hint="check the file").located(str(path), None)]
        ) from None
    if check_experiment_text(text, str(path)) is None:
        raise ConfigError("the experiment file is empty:", [Issue(
            "empty_file", "the file holds no experiment (only comments or nothing)", "",
            hint="see the experiment format in the README").located(str(path), None)])
    try:
        node = OmegaConf.load(io.StringIO(text))
    except Exception as err:  # duplicate keys, non-string keys, ...: a mistake in the file
        raise ConfigError("the experiment file cannot be loaded:", [Issue(
            "invalid_yaml", str(err).splitlines()[0], "", hint="fix the file").located(
                str(path), None)]) from None
    if not isinstance(node, DictConfig):
        raise ConfigError("the experiment file is refused:", [Issue(
            "not_a_mapping", "an experiment file is a mapping (format, name, graph, ...)", "",
            hint="see the experiment format in the README").located(str(path), 1)])
    return node
