"""The node registry and the built-in node types (one module each).

Adding a node type: write `nnrun/nodes/<op>.py` with a `@register`ed `NodeType`, add one import
line below, add its tests and a README row. Nothing else changes.
"""

from nnrun.nodes.base import REGISTRY, NodeParams, NodeType, Port, Stmt, register

from nnrun.nodes import read, write  # noqa: E402,F401  (model access)
from nnrun.nodes import select_position, mean, std, sem, add, subtract, scale  # noqa: E402,F401
from nnrun.nodes import softmax, log_softmax, argmax, topk, decode  # noqa: E402,F401
from nnrun.nodes import logit_diff, prob, rank, normalize  # noqa: E402,F401  (metrics)
from nnrun.nodes import logit_lens  # noqa: E402,F401  (model access)
from nnrun.nodes import save, plot_heatmap, plot_line  # noqa: E402,F401  (sinks)

REGISTRY.freeze()

__all__ = ["REGISTRY", "NodeParams", "NodeType", "Port", "Stmt", "register"]
