"""What each node hook's context offers, as protocols: the one place a node author looks up what
`check`/`out_axes`, `emit`, `definitions` and `write_artifacts` may ask for.

Invariant: every member here is one the stage's real context class provides (checked by
tests/unit/test_contexts.py), and node files use nothing of a context that is not listed here;
a member a node needs is added here and in the class together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: this module stays importable without the stages
    from pathlib import Path

    from nnrun.bind import Binding
    from nnrun.emit import FoldRows, SiteRef
    from nnrun.graph import Graph, Node
    from nnrun.model_info import ModelInfo
    from nnrun.outputs import RunDir

Axes = tuple[str, ...]


@runtime_checkable
class CheckContext(Protocol):
    """`check` and `out_axes` (implemented by `nnrun.lint.CheckContext`)."""

    info: ModelInfo | None       # the model's structure; None when no model is known
    loop_vars: Axes              # the foreach variables (and `step`) around the node's scope
    path: str                    # the node's YAML path, e.g. `graph.nodes[3]` (for an Issue)
    node: str                    # the node's id (for an Issue)
    source: Path | None          # the experiment file: files it names are relative to it


@runtime_checkable
class EmitContext(Protocol):
    """`emit` (implemented by `nnrun.emit.EmitContext`): names, inputs and model references as
    code. Every name comes from the program's one namespace."""

    graph: Graph
    binding: Binding
    node_id: str
    fold: FoldRows | None        # set when emitting for a folded invoke (nnrun.fastpath)

    @property
    def node(self) -> Node: ...

    @property
    def out(self) -> str:
        """The variable this node's value goes into."""

    def var(self, node_id: str) -> str:
        """The variable of another node's value."""

    def fresh(self, base: str) -> str:
        """A new name derived from this node's (e.g. one part per layer)."""

    def loop(self, variable: str) -> str:
        """The name of a foreach loop variable (`layer`, `position`, ...)."""

    def input(self, port: str) -> str:
        """The variable feeding input `port`."""

    def source(self, port: str) -> str:
        """The id of the node feeding `port`."""

    def in_axes(self, port: str) -> Axes:
        """The axes of the value feeding `port`, as this node receives it."""

    def outside(self, port: str) -> bool:
        """Whether the value feeding `port` comes from outside this node's invoke."""

    def literal(self, value: Any) -> str:
        """A number as Python source (non-finite floats included)."""

    def token_ids(self, field_name: str) -> str:
        """Code for this node's token ids of a token field: shape (example,)."""

    def pick_token(self, x: str, field_name: str, axes: Axes, keepdim: bool = False) -> str:
        """`x[..., token]` with the token of `field_name` chosen per example."""

    def stacks_layers(self, layer: Any) -> bool:
        """Whether a `layer` field stacks several layers on a `layer` axis."""

    def site_refs(self, site: str, layer: Any, at: str = "output") -> list[SiteRef]:
        """The model tensors of a site, one per layer."""

    def module_code(self, site: str) -> str:
        """Code naming a whole module (to call it), e.g. the final norm."""

    def example_index(self, outside: bool = False) -> str:
        """The index along a value's `example` axis (per row in a folded invoke)."""

    def index(self, spec: Any) -> str:
        """One index expression along an axis (`all`, an int or a loop variable)."""

    def select(self, code: str, position: Any, after: Any = (), trailing: int = 1,
               outside: bool = False) -> str:
        """`code` read at this node's position(s), per example (per row when folded; then
        `outside` says `code` is a value from outside the invoke)."""

    def target(self, code: str, position: Any, after: Any = ()) -> str:
        """The assignment target writing `code` at this node's position(s), per example."""

    def layer_index_into(self, port: str, layer_code: str | None) -> str:
        """Index of a layer in the input's stacked `layer` axis."""


@runtime_checkable
class DefineContext(Protocol):
    """`definitions` (implemented by `nnrun.emit.DefineContext`); it runs before any name is
    claimed."""

    graph: Graph
    node_id: str

    @property
    def node(self) -> Node: ...

    @property
    def source(self) -> Path | None:
        """The experiment file (None when the experiment came without one)."""

    def inputs_axes(self, port: str) -> list[Axes]:
        """The axes of every value reaching `port`, in edge order."""


@runtime_checkable
class ArtifactContext(Protocol):
    """`write_artifacts` of a sink (implemented by `nnrun.sinks.SinkContext`): the value's axes
    and tick labels, and writers that record each file in the manifest."""

    run: RunDir
    node_id: str
    source_id: str               # the node (or named output, `node.port`) feeding the sink
    axes: Axes
    coords: dict[str, list[str]]
    metadata: dict[str, str]
    spread: Any                  # `sink_mode = "mean"`: the s.e.m. per cell, else None
    n_examples: int | None       # `sink_mode = "mean"`: how many examples the mean is over

    def ticks(self, axis: str | None) -> list[str] | None:
        """Tick labels of an axis, if it has any."""

    def default_title(self) -> str: ...

    def source_label(self) -> str: ...

    def plot_stem(self, name: str) -> Path:
        """`plots/<name>` (without extension) inside the run directory."""

    def as_matrix(self, value: Any, keep: Axes) -> Any:
        """`value` permuted to the `keep` axes; every other axis must have size 1."""

    def write_value(self, name: str, value: Any, axes: Axes | None = None) -> Path:
        """Tensors to tensors/<name>.safetensors, token strings to .json, with metadata."""
