"""User functions (the `function` node's trusted code): find the file an experiment names, check
it without running it, read its source once with its sha256, and refuse to run it unless the
command line said `allow_functions=true`.

Invariants: checking never imports or executes the file (it is parsed with `ast`); a function
file is a `.py` file in the experiment file's folder or below it, so the code that runs is the
code beside the experiment (in its repository), never a path elsewhere on the machine; the text
copied into the program is the text whose sha256 the manifest records.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nnrun.errors import ConfigError, Issue, guess, raise_if_issues

OPT_IN = "allow_functions"
MAX_BYTES = 1 << 20        # a function file is small; a megabyte of code is an accident
RESERVED_PREFIX = "nnrun_"  # names of the code nnrun generates around a user's function
# Names whose use would behave differently once the code is copied into the program.
_COPY_SENSITIVE = {
    "__file__": "it would name the program, not your file; compute paths from an argument or "
                "an absolute path",
    "__name__": "the code is copied into the program (and the exported script, where "
                "`__name__ == '__main__'`); remove the `if __name__ == ...` block",
}


@dataclass(frozen=True)
class FunctionFile:
    """A function file as it was read: where, its text and the sha256 of its bytes."""

    path: Path
    shown: str          # the path as the experiment gives it (relative to its folder)
    text: str
    sha256: str


def split_fn(fn: str) -> tuple[str, str]:
    """`path/to/file.py:name` → (path, name).

    Raises:
        ValueError: not of that form (said so to the user by pydantic).
    """
    path, sep, name = fn.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise ValueError(f"`fn` is FILE.py:FUNCTION (a Python file relative to the experiment "
                         f"file, and a function defined in it), found {fn!r}")
    return path, name


def resolve(fn: str, source: Path | None, where: str, node: str) -> tuple[Path | None, list[Issue]]:
    """The file `fn` names, inside the experiment file's folder, or the issues saying why not."""
    shown, _ = split_fn(fn)
    if source is None:
        return None, [Issue("function_without_file", "a function file is found relative to the "
                            "experiment file, and this experiment has none", where, node,
                            "run an experiment file (experiments/NAME.yaml)")]
    parts = PurePosixPath(shown.replace("\\", "/"))
    if parts.is_absolute() or shown.startswith("~") or ":" in shown or ".." in parts.parts:
        return None, [Issue("function_path", f"{shown!r} is not a path inside the experiment's "
                            "folder", where, node, "give a path relative to the experiment "
                            "file, without `..` (e.g. functions/mine.py), and keep the file "
                            "beside the experiment")]
    folder = Path(source).resolve().parent
    path = (folder / parts).resolve()
    if not path.is_relative_to(folder):
        return None, [Issue("function_path", f"{shown!r} leads outside the experiment's folder "
                            f"(to {path})", where, node, "copy the file into the experiment's "
                            "folder instead of linking to it")]
    if not path.is_file():
        return None, [Issue("function_not_found", f"no file {shown!r} beside the experiment "
                            f"file ({folder})", where, node,
                            "a path relative to the experiment file's folder")]
    return path, []


def read(fn: str, source: Path | None) -> FunctionFile:
    """The function file's text and sha256 (read once per content: the same bytes serve the
    program and the manifest).

    Raises:
        ConfigError: the file cannot be found or read.
    """
    path, issues = resolve(fn, source, "fn", "")
    raise_if_issues(issues, ConfigError, "function file")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    key = (str(path), digest)
    if key not in _READ:
        _READ[key] = FunctionFile(path, split_fn(fn)[0], data.decode("utf-8"), digest)
    return _READ[key]


_READ: dict[tuple[str, str], FunctionFile] = {}


def check_file(fn: str, source: Path | None, where: str, node: str,
               reserved: set[str]) -> list[Issue]:
    """Every problem of the function file, found by parsing it (never importing it): it is not
    there, not UTF-8 or too large, has a syntax error, does not define the function, uses a name
    whose meaning changes once copied, or binds a name the program uses itself (`reserved`)."""
    path, issues = resolve(fn, source, where, node)
    if path is None:
        return issues
    shown, name = split_fn(fn)

    def issue(code: str, message: str, hint: str = "") -> list[Issue]:
        return [Issue(code, f"{shown}: {message}", where, node, hint)]
    if path.stat().st_size > MAX_BYTES:
        return issue("function_file", f"the file is larger than {MAX_BYTES // 1024} KB",
                     "keep the functions an experiment uses in a small file of their own")
    try:
        tree = ast.parse(path.read_bytes().decode("utf-8"), filename=shown)
    except UnicodeDecodeError:
        return issue("function_file", "the file is not UTF-8", "save it as UTF-8")
    except SyntaxError as err:
        return issue("function_syntax", f"line {err.lineno}: {err.msg}", "fix the Python syntax")
    return _defines(tree, name, issue) + _copyable(tree, issue) + _clashes(tree, reserved, issue)


def _defines(tree: ast.Module, name: str, issue) -> list[Issue]:
    from nnrun.emit import bound_names

    found = [st for st in tree.body if getattr(st, "name", None) == name]
    if any(isinstance(st, ast.AsyncFunctionDef) for st in found):
        return issue("function_async", f"`{name}` is an async function", "define it with `def`")
    if found or name in bound_names(tree):
        return []
    defined = [st.name for st in tree.body if isinstance(st, ast.FunctionDef)]
    return issue("function_undefined", f"defines no function `{name}` at its top level",
                 guess(name, defined) + "functions defined: "
                 + (", ".join(defined) or "none"))


def _copyable(tree: ast.Module, issue) -> list[Issue]:
    """Constructs that change meaning when the file's text becomes part of the program."""
    issues = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            issues += issue("function_unsupported", f"line {node.lineno}: `from __future__` "
                            "imports", "remove it: the file's code is copied into the program, "
                            "where such an import cannot stand in the middle")
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and \
                any(a.name == "*" for a in node.names):
            issues += issue("function_unsupported", f"line {node.lineno}: `import *`",
                            "import the names you use (`from torch import nn`)")
        elif isinstance(node, ast.Name) and node.id in _COPY_SENSITIVE:
            issues += issue("function_unsupported", f"line {node.lineno}: `{node.id}`",
                            _COPY_SENSITIVE[node.id])
    return issues


def _clashes(tree: ast.Module, reserved: set[str], issue) -> list[Issue]:
    """Top-level names that would replace one of the program's own."""
    taken = [n for n in own_names(tree) if n in reserved or n.startswith(RESERVED_PREFIX)]
    if not taken:
        return []
    return issue("function_name_clash", "binds " + ", ".join(f"`{n}`" for n in taken)
                 + ", which the program defines itself", "rename them in your file (names "
                 f"starting with `{RESERVED_PREFIX}` are nnrun's)")


def own_names(tree: ast.Module) -> list[str]:
    """The top-level names a file binds, but for modules imported under their own name
    (`import torch` binds the very module the program and any other file use: no clash)."""
    from nnrun.emit import bound_names

    return list(bound_names(tree, plain_imports=False))


def program_names() -> set[str]:
    """The top-level names of a program and its exported script, other than a user's: `run`,
    `finish`, `PASSES`, the node types' shared helpers and the export's entry point."""
    import string

    from nnrun.emit import bound_names
    from nnrun.export import MAIN
    from nnrun.nodes import REGISTRY

    fields = {f for _, f, _, _ in string.Formatter().parse(MAIN) if f}
    names = {"torch", "itertools", "run", "finish", "PASSES"}
    names.update(bound_names(MAIN.format(**dict.fromkeys(fields, None))))
    for node_type in REGISTRY.types():
        names.update(bound_names(node_type.preamble) if node_type.preamble else ())
    return names


def graph_clashes(graph) -> list[Issue]:
    """Two different function files may not bind the same top-level name: both are copied into
    one program, where the second would replace the first's."""
    seen: dict[str, tuple[Path, str]] = {}
    issues = []
    for node in _function_nodes(graph):
        shown = split_fn(node.params.fn)[0]
        path, _ = resolve(node.params.fn, graph.source, "", node.id)
        if path is None:
            continue
        for name in own_names(ast.parse(path.read_bytes())):
            first, first_shown = seen.setdefault(name, (path, shown))
            if first != path:
                issues.append(Issue("function_name_clash", f"`{name}` is defined in both "
                                    f"{first_shown} and {shown}", node.path + ".fn", node.id,
                                    "rename one of them: both files become one program"))
    return issues


def _function_nodes(graph) -> list:
    return [n for n in graph.nodes.values() if n.type.op == "function"]


def require_opt_in(graph, config: dict[str, Any]) -> None:
    """Refuse to run user code unless the command line allowed it.

    Raises:
        ConfigError: a function node without `allow_functions=true`, naming each node and file.
    """
    nodes = _function_nodes(graph)
    allowed = config.get(OPT_IN, False)
    if not isinstance(allowed, bool):
        raise ConfigError("the run settings have problems:", [Issue(
            "invalid_allow_functions", f"{OPT_IN} must be true or false, found `{allowed}`",
            OPT_IN, hint=f"{OPT_IN}=true")])
    if nodes and not allowed:
        where = f" ({graph.source})" if graph.source else ""
        raise ConfigError("this experiment runs your own Python code:", [Issue(
            "functions_not_allowed", f"node `{n.id}` calls {n.params.fn}, code from a file "
            f"beside the experiment{where}; nnrun runs such code only when asked",
            n.path + ".fn", n.id, f"read the file, then pass {OPT_IN}=true on the command line "
            "(an experiment file cannot set it)") for n in nodes])
    raise_if_issues(graph_clashes(graph), ConfigError, f"experiment `{graph.spec.name}`")


def record(graph) -> dict[str, Any]:
    """The manifest's `functions`: per function node, the file, its sha256 and the function."""
    out = {}
    for node in _function_nodes(graph):
        file = read(node.params.fn, graph.source)
        out[node.id] = {"path": file.shown, "sha256": file.sha256,
                        "name": split_fn(node.params.fn)[1], "resolved": str(file.path)}
    return {"functions": out} if out else {}
