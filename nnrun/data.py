"""Load an experiment's dataset (a JSONL or CSV file, or inline rows) and check it row by row.

Invariant: a `Dataset` holds well-formed rows only: every row is a mapping with every column the
experiment refers to, and every problem is reported with the file and row (line) number, before
any weights are loaded. Nothing here touches a tokenizer or a model.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from nnrun.errors import ConfigError, Issue, guess, raise_if_issues

MAX_ROWS = 1_000_000  # a data file larger than this is refused before it is read into memory


class DataSpec(BaseModel):
    """`data:` in an experiment: where the examples come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str | None = Field(None, description="a .jsonl or .csv file, relative to the "
                                               "experiment file, or absolute")
    rows: list[dict[str, Any]] | None = Field(None, description="inline examples: a list of "
                                                                "mappings column → value")
    limit: StrictInt | None = Field(None, ge=1, description="use only the first `limit` rows")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.file is None) == (self.rows is None):
            raise ValueError("give exactly one of `file` or `rows`")
        return self


@dataclass(frozen=True)
class ColumnUse:
    """How the experiment uses a column: `text` or `int`, and where (YAML path, node id)."""

    kind: str
    path: str = "data"
    node: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Examples as rows (column → value); `where(i)` names row i in messages."""

    rows: tuple[dict[str, Any], ...]
    source: str                      # the file path, or "inline"
    lines: tuple[int, ...] = ()      # 1-based line of each row in the file (JSONL/CSV)

    def __len__(self) -> int:
        return len(self.rows)

    def columns(self) -> list[str]:
        return sorted({k for row in self.rows for k in row})

    def where(self, i: int) -> str:
        """`data/ioi.jsonl:12 (row 11)` or `data.rows[11]`."""
        if self.lines:
            return f"{self.source}:{self.lines[i]} (row {i})"
        return f"data.rows[{i}]"


def single_example() -> Dataset:
    """The implicit dataset of an experiment without `data`: one example, no columns."""
    return Dataset(({},), "none")


def prompt_lists(scopes) -> Dataset | None:
    """Without `data`: the examples that the scopes' prompt lists give (`input: [...]`, one
    prompt per example; every list the same length), or None (one implicit example).

    Raises:
        ConfigError: two scopes list different numbers of prompts.
    """
    lists = [(i, s) for i, s in enumerate(scopes) if isinstance(s.input, list)]
    if not lists:
        return None
    first, n = lists[0][1], len(lists[0][1].input)
    issues = [Issue("bad_input", f"scope `{s.id}` lists {len(s.input)} prompts but scope "
                    f"`{first.id}` lists {n}: one prompt per example", f"graph.scopes[{i}].input",
                    s.id, "give every scope the same number of prompts, or use `data` and "
                          "{column: name}")
              for i, s in lists if len(s.input) != n]
    raise_if_issues(issues, ConfigError, "the prompt lists do not match")
    return Dataset(tuple({} for _ in range(n)), "input lists")


def load_dataset(spec: DataSpec, experiment_file: Path | None,
                 needed: dict[str, ColumnUse]) -> Dataset:
    """Read the rows and check that every needed column is present and well typed in every row.

    Args:
        needed: column → how and where the graph uses it.

    Raises:
        ConfigError: unreadable file, malformed rows, missing columns, wrong types — every one.
    """
    if spec.rows is not None:
        if not spec.rows:
            raise ConfigError("the dataset is empty:", [Issue(
                "data_empty", "`rows` is an empty list", "data.rows",
                hint="give at least one row, e.g. rows: [{clean: ..., answer: ...}]")])
        dataset = Dataset(tuple(spec.rows), "inline")
    else:
        dataset = _read_file(_resolve(spec.file, experiment_file))
    if spec.limit is not None:
        dataset = Dataset(dataset.rows[:spec.limit], dataset.source, dataset.lines[:spec.limit])
    issues = _check_rows(dataset, needed)
    raise_if_issues(issues, ConfigError, f"dataset {dataset.source}")
    return dataset


def _resolve(name: str, experiment_file: Path | None) -> Path:
    path = Path(name).expanduser()
    if not path.is_absolute() and experiment_file is not None:
        beside = Path(experiment_file).parent / path
        path = beside if beside.exists() or not path.exists() else path
    if not path.is_file():
        raise ConfigError("the dataset cannot be read:", [Issue(
            "data_not_found", f"no file {str(path)!r}", "data.file",
            hint="a path relative to the experiment file, or an absolute path")])
    return path


def _read_file(path: Path) -> Dataset:
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ConfigError("the dataset cannot be read:", [Issue(
            "data_format", f"{path.name}: unknown format {suffix!r}", "data.file",
            hint="use a .jsonl file (one JSON object per line) or a .csv file with a header")])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("the dataset cannot be read:", [Issue(
            "data_unreadable", f"{path}: {err}", "data.file")]) from None
    rows, lines, issues = (_jsonl_rows if suffix == ".jsonl" else _csv_rows)(text, str(path))
    raise_if_issues(issues, ConfigError, f"dataset {path}")
    if not rows:
        raise ConfigError("the dataset is empty:", [Issue(
            "data_empty", f"{path} has no rows", "data.file")])
    return Dataset(tuple(rows), str(path), tuple(lines))


def _jsonl_rows(text: str, name: str):
    rows, lines, issues = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(rows) >= MAX_ROWS:
            issues.append(Issue("data_too_large", f"{name} has more than {MAX_ROWS:,} rows",
                                "data.file", hint="split the file or set data.limit"))
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            issues.append(Issue("data_row_invalid", f"{name}:{number}: not valid JSON "
                                f"({err.msg} at column {err.colno})", "data.file"))
            continue
        if not isinstance(row, dict):
            issues.append(Issue("data_row_invalid", f"{name}:{number}: a row must be a JSON "
                                f"object, found {type(row).__name__}", "data.file"))
            continue
        rows.append(row)
        lines.append(number)
    return rows, lines, issues


def _csv_rows(text: str, name: str):
    reader = csv.DictReader(text.splitlines())
    rows, lines, issues = [], [], []
    for row in reader:
        number = reader.line_num
        if None in row or any(v is None for v in row.values()):
            issues.append(Issue("data_row_invalid", f"{name}:{number}: the row has "
                                f"{'more' if None in row else 'fewer'} fields than the header",
                                "data.file"))
            continue
        rows.append(dict(row))
        lines.append(number)
        if len(rows) > MAX_ROWS:
            issues.append(Issue("data_too_large", f"{name} has more than {MAX_ROWS:,} rows",
                                "data.file", hint="split the file or set data.limit"))
            break
    return rows, lines, issues


def _check_rows(dataset: Dataset, needed: dict[str, ColumnUse]) -> list[Issue]:
    issues: list[Issue] = []
    known = set(dataset.columns())
    for column, use in needed.items():
        if column not in known:
            hint = guess(column, sorted(known)) + "columns: " + (", ".join(sorted(known)) or "none")
            issues.append(Issue("unknown_column", f"column `{column}` is not in the dataset "
                                f"{dataset.source}", use.path, use.node, hint))
            continue
        for i, row in enumerate(dataset.rows):
            problem = _cell_problem(row.get(column), use.kind)
            if problem:
                issues.append(Issue("data_row_invalid", f"{dataset.where(i)}: column `{column}` "
                                    f"{problem}", use.path, use.node))
                break  # one report per column: the rest are usually the same mistake
    return issues


def _cell_problem(value: Any, kind: str) -> str | None:
    if value is None:
        return "is missing"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return f"must be an integer, found {value!r}"
        try:
            int(value)
        except ValueError:
            return f"must be an integer, found {value!r}"
        return None
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, found {value!r}"
    return None
