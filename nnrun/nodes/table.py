"""`table`: write a value as a table (CSV and JSON), one row per cell with its axes' labels."""

from __future__ import annotations

import csv
import io
import itertools
import json
from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, Port, register


@register
class Table(NodeType):
    op = "table"
    kind = "save"
    summary = ("write the input as tables/<id>.csv and .json: one row per cell, a column per "
               "axis (its labels) and the value ([token, probability] pairs: two columns)")
    inputs = {"in": Port("numbers, strings, or [token, probability] pairs (topk_tokens)")}
    is_sink = True
    has_output = False

    class Params(NodeParams):
        op: Literal["table"] = "table"

    def write_artifacts(self, p, value, ctx):
        rows = table_rows(value, ctx.axes, ctx.coords)
        (ctx.run.path / "tables").mkdir(exist_ok=True)
        # write_text: atomic, redacted, recorded in the manifest with its sha256
        return [ctx.run.write_text(f"tables/{p.id}.{ext}", text, "table", p.id)
                for ext, text in (("csv", _csv(rows)), ("json", json.dumps(rows, indent=1)))]


def table_rows(value, axes: tuple[str, ...], coords: dict[str, list[str]]) -> list[dict]:
    """One dict per cell of `value` (nested lists or a tensor with `axes`)."""
    nested = value.tolist() if hasattr(value, "tolist") else value
    rows = []
    for index in itertools.product(*(range(n) for n in _shape(nested, len(axes)))):
        cell = nested
        for i in index:
            cell = cell[i]
        row = {a: _label(coords, a, i) for a, i in zip(axes, index)}
        if isinstance(cell, list) and len(cell) == 2:
            row.update(token=cell[0], probability=cell[1])
        else:
            row["value"] = cell
        rows.append(row)
    return rows


def _shape(nested, depth: int) -> list[int]:
    shape = []
    for _ in range(depth):
        shape.append(len(nested))
        nested = nested[0]
    return shape


def _label(coords: dict[str, list[str]], axis: str, i: int):
    labels = coords.get(axis)
    return labels[i] if labels and i < len(labels) else i


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
