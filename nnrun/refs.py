"""Values that are resolved per example: a dataset column (`{column: clean}`) and a token match
(`{match: " city"}`), usable wherever a prompt, an answer token or a position is expected.

Invariant: these are plain data (pydantic, frozen, no unknown keys); they are resolved by `bind`
against the dataset and the tokenizer, never evaluated as code.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt

COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Ref(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Ref):
    """The value of a dataset column, one per example: `{column: answer}`."""

    column: str = Field(pattern=COLUMN_PATTERN, description="a column of the experiment's `data`")


class Resampled(Column):
    """Another example's value of a column: `{column: clean, resample: 0}` (an invoke's input for
    resample ablation). Example i takes row σ(i) of a random cyclic permutation σ of the dataset
    drawn with the seed `resample` (Sattolo's algorithm), so never its own row."""

    resample: StrictInt = Field(description="seed of the permutation of the rows")


def resampled_rows(n: int, seed: int) -> list[int]:
    """σ(0..n-1): a seeded cyclic permutation, which has no fixed point (n >= 2)."""
    import random

    rows, rng = list(range(n)), random.Random(seed)
    for i in range(n - 1, 0, -1):   # Sattolo: swap with an index strictly below i
        j = rng.randrange(i)
        rows[i], rows[j] = rows[j], rows[i]
    return rows


class Match(_Ref):
    """The position of a token found in each prompt: `{match: " city"}` or `{match: {column: io}}`.

    The text is searched in the prompt; the position is the token covering its last character
    (`token: last`, the usual choice for a multi-token subject) or its first (`token: first`).
    """

    match: Union[Annotated[str, Field(min_length=1)], Column] = Field(  # noqa: UP007
        description="text to find in the prompt (a token or a substring), or a column holding it")
    occurrence: Literal["first", "last", "only"] = Field(
        "only", description="which occurrence when the text appears several times; `only` "
                            "(default) stops with an error naming the row if it is ambiguous")
    token: Literal["first", "last"] = Field(
        "last", description="for a match spanning several tokens: its first or its last token")


TextOrColumn = Union[str, Column]  # noqa: UP007


def text_label(value: TextOrColumn) -> str:
    """How a text-or-column value is named in messages and metadata."""
    return f"column `{value.column}`" if isinstance(value, Column) else repr(value)
