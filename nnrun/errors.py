"""nnrun's exception tree, its exit codes and the located `Issue` record every check reports.

Invariant: a user mistake is always an `NnrunError` carrying every `Issue` found (not just the first);
anything else that escapes is a bug in nnrun and keeps its traceback.

* NnrunError                 exit code
  ├── CommandLineError        2  the command line could not be used (bad override)    (cli.py)
  ├── ConfigError            10  the experiment file does not match the format      (load.py)
  ├── GraphError             11  the graph is malformed: cycle, dangling edge, scope (graph.py)
  ├── CompileError           12  the graph cannot be expressed as an nnsight program (schedule.py)
  ├── ModelError             13  the model cannot be found or loaded                 (models.py)
  ├── RunError               14  the program failed while executing node <id>         (run.py)
  ├── OutputError            15  the run directory could not be written              (outputs.py)
  └── BackendError           16  the remote service, key or model cannot be used     (backends.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One located problem: what is wrong, where, and how to fix it.

    Attributes:
        code: stable snake_case identifier (`unknown_op`, `dangling_edge`, ...); tests and the
            README key on it.
        message: what is wrong, lowercase, no trailing period; says expected versus found.
        path: YAML path of the offending value, e.g. `graph.nodes[3].layer`.
        node: id of the node (or scope) concerned, when there is one.
        hint: how to fix it, imperative ("did you mean `transformer.h.3.mlp`?").
        line: 1-based line in `file`, when the source position is known.
        file: the experiment file the value came from, when known.
    """

    code: str
    message: str
    path: str = ""
    node: str | None = None
    hint: str = ""
    line: int | None = None
    file: str | None = None

    def located(self, file: str | None, line: int | None) -> Issue:
        """Return a copy that carries a source position."""
        return Issue(self.code, self.message, self.path, self.node, self.hint, line, file)

    def format(self) -> str:
        """One or two lines for the terminal: `file:line path (node id): message` + hint."""
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        subject = self.path or "experiment"
        if self.node:
            subject += f" ({'scope' if 'scopes[' in self.path else 'node'} {self.node})"
        text = f"{where}{subject}: {self.message} [{self.code}]"
        return text + (f"\n    hint: {self.hint}" if self.hint else "")


@dataclass
class NnrunError(Exception):
    """Base of every error caused by the user's input or environment (printed without traceback)."""

    summary: str
    issues: list[Issue] = field(default_factory=list)
    exit_code = 1

    def __post_init__(self) -> None:
        super().__init__(self.summary)

    def __str__(self) -> str:
        lines = [self.summary]
        lines += ["  " + issue.format().replace("\n", "\n  ") for issue in self.issues]
        return "\n".join(lines)


class CommandLineError(NnrunError):
    """The command line could not be used: an override Hydra cannot parse, an unknown option."""

    exit_code = 2


class ConfigError(NnrunError):
    """The experiment file does not match the experiment format."""

    exit_code = 10


class GraphError(NnrunError):
    """The graph is malformed (cycle, dangling edge, illegal scope, unknown site)."""

    exit_code = 11


class CompileError(NnrunError):
    """The graph cannot be expressed as a valid nnsight program (e.g. out-of-order access)."""

    exit_code = 12


class ModelError(NnrunError):
    """The model cannot be found, reached offline, or loaded."""

    exit_code = 13


class RunError(NnrunError):
    """The generated program failed while executing a node."""

    exit_code = 14


class OutputError(NnrunError):
    """The run directory could not be written."""

    exit_code = 15


class BackendError(NnrunError):
    """The remote backend cannot be used: no API key, a local model, an unreachable or failing
    service, a model it does not host."""

    exit_code = 16


EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "internal error (a bug in nnrun: please report it with the traceback)": 1,
    **{cls.__name__: cls.exit_code for cls in
       (CommandLineError, ConfigError, GraphError, CompileError, ModelError, RunError, OutputError,
        BackendError)},
    "interrupted (Ctrl-C)": 130,
}


def close_matches(word: str, options, n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The options closest to `word`, best first (difflib); empty when none is close. Every
    did-you-mean hint of nnrun starts here."""
    import difflib

    return difflib.get_close_matches(word, list(options), n=n, cutoff=cutoff)


def guess(word: str, options) -> str:
    """`did you mean `X`? ` (with a trailing space) when an option is close, else ``: the start
    of a hint that goes on to list the options."""
    close = close_matches(word, options)
    return f"did you mean `{close[0]}`? " if close else ""


def did_you_mean(word: str, options: list[str] | tuple[str, ...],
                 otherwise: str | None = None) -> str:
    """A hint naming the closest option; when none is close, `otherwise` (default: every option
    listed)."""
    close = close_matches(word, options)
    if close:
        return f"did you mean `{close[0]}`?"
    return "valid: " + ", ".join(options) if otherwise is None else otherwise


def raise_if_issues(issues: list[Issue], error: type[NnrunError], what: str) -> None:
    """Raise `error` carrying all `issues` (sorted by location) if there are any."""
    if not issues:
        return
    ordered = sorted(issues, key=lambda i: (i.file or "", i.line or 0, i.path))
    noun = "problem" if len(ordered) == 1 else "problems"
    raise error(f"{what} has {len(ordered)} {noun}:", ordered)
