"""The node registry and the built-in node types (one module each).

Adding a node type: write `nnrun/nodes/<op>.py` with a `@register`ed `NodeType`, add one import
line below, add its tests and a README row. Nothing else changes.
"""

from nnrun.nodes import (  # noqa: E402,F401  (model access)  # noqa: E402,F401  # noqa: E402,F401  # noqa: E402,F401  (metrics)  # noqa: E402,F401  (sinks)
    add,
    argmax,
    decode,
    log_softmax,
    logit_diff,
    logit_lens,  # noqa: E402,F401  (model access)
    mean,
    normalize,
    plot_heatmap,
    plot_line,
    prob,
    rank,
    read,
    save,
    scale,
    select_position,
    sem,
    softmax,
    std,
    subtract,
    topk,
    write,
)
from nnrun.nodes.base import REGISTRY, NodeParams, NodeType, Port, Stmt, register

REGISTRY.freeze()

__all__ = ["REGISTRY", "NodeParams", "NodeType", "Port", "Stmt", "register"]
