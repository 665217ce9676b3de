"""The experiment format (version 1) as pydantic models; the JSON Schema for editors comes from here.

Invariant: models are frozen and forbid unknown keys, so a typo is an error, never silently ignored.
The node union is built from the node registry: a new node type needs no edit here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from nnrun.data import DataSpec
from nnrun.loops import LOOPS
from nnrun.nodes import REGISTRY
from nnrun.nodes.base import NODE_ID_PATTERN
from nnrun.policy import NAME_MAX, NAME_PATTERN
from nnrun.refs import Column, Resampled

FORMAT_VERSION = 1
ScopeKind = Literal["session", "trace", "generate", "invoke", "step"]
LoopName = Literal[tuple(LOOPS)]  # the registered foreach variables (nnrun.loops)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScopeSpec(_Strict):
    """A context scope: session ⊃ trace/generate ⊃ invoke ⊃ step (one generation step)."""

    id: str = Field(pattern=NODE_ID_PATTERN)
    kind: ScopeKind
    parent: str | None = Field(None, description="enclosing scope id")
    input: str | list[str] | Resampled | Column | None = Field(
        None, description="the invoke's prompt for every example: a string (the same for all), "
                          "a list (one per example: an inline dataset), {column: name} (a "
                          "column of `data`) or {column: name, resample: seed} (another row's "
                          "value, for resample ablation); on a trace/generate: one implicit "
                          "invoke")
    foreach: dict[LoopName, Any] | None = Field(
        None, description="invoke only: expand into one invoke per point of this grid, "
                          "e.g. {layer: all, position: all}; nodes refer to '{layer}'")
    max_new_tokens: StrictInt | None = Field(None, ge=1, description="generate only")
    do_sample: StrictBool | None = Field(
        None, description="generate only: sample the next token (seeded from the run's `seed`) "
                          "instead of taking the most likely one (greedy, the default)")
    temperature: float | None = Field(None, gt=0, allow_inf_nan=False,
                                      description="generate, do_sample only: divides the logits "
                                                  "(default 1.0)")
    top_k: StrictInt | None = Field(None, ge=1, description="generate, do_sample only: sample "
                                    "among the k most likely tokens (default: all)")
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False,
                                description="generate, do_sample only: sample among the most "
                                            "likely tokens holding this much probability "
                                            "(default 1.0: all)")
    steps: StrictInt | None = Field(None, ge=1,
                                    description="step only: how many generation steps")


class EdgeSpec(_Strict):
    """A data edge from a node's output (`src: node`, or `src: node.output` for one of the
    named outputs of a node that has several) to a port of another node (`dst: node.port`)."""

    src: str = Field(description="producing node id; `node.output` picks one of its named "
                                 "outputs (e.g. topk.values)")
    dst: str = Field(description="`node.port`; a bare `node` means its port `in`")

    @property
    def src_node(self) -> str:
        return self.src.split(".", 1)[0]

    @property
    def src_port(self) -> str | None:
        """The named output `src` picks (None: the node's output)."""
        return self.src.split(".", 1)[1] if "." in self.src else None

    @property
    def dst_node(self) -> str:
        return self.dst.split(".", 1)[0]

    @property
    def dst_port(self) -> str:
        return self.dst.split(".", 1)[1] if "." in self.dst else "in"


def _node_union() -> Any:
    params = tuple(t.Params for t in REGISTRY.types())
    if len(params) == 1:  # pydantic rejects a one-member discriminated union
        return params[0]
    return Annotated[Union[params], Field(discriminator="op")]  # noqa: UP007


AnyNode = _node_union()


class GraphSpec(_Strict):
    scopes: list[ScopeSpec] = Field(default_factory=list)
    nodes: list[AnyNode]  # type: ignore[valid-type]
    edges: list[EdgeSpec] = Field(default_factory=list)


class ExperimentSpec(_Strict):
    """One experiment file: metadata, sweepable params and the graph."""

    format: Literal[1] = Field(FORMAT_VERSION, description="experiment format version")
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX,
                      description="names the run directory: letters, digits, `_`, `-`, single dots")
    description: str = ""
    params: dict[str, Any] = Field(
        default_factory=dict, description="sweepable values, referenced as ${params.x}")
    data: DataSpec | None = Field(
        None, description="examples (a JSONL/CSV file or inline rows) whose columns scopes and "
                          "nodes refer to as {column: name}; results gain an `example` axis")
    batch_size: Annotated[StrictInt, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="examples per chunk (one forward pass per chunk); `auto` sizes "
                            "chunks from the model and the foreach grid to bound memory")
    graph: GraphSpec

    @field_validator("format", mode="before")
    @classmethod
    def _format_is_a_number(cls, value: Any) -> Any:
        if isinstance(value, bool):  # `true == 1` in Python: a Literal[1] would accept it
            raise ValueError(f"the format is a version number, found {value!r}")
        return value


EXPERIMENT_KEYS = tuple(ExperimentSpec.model_fields)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of an experiment file, for editor autocompletion."""
    return ExperimentSpec.model_json_schema()


if __name__ == "__main__":  # python -m nnrun.schema > experiment.schema.json
    import json

    print(json.dumps(json_schema(), indent=2))
