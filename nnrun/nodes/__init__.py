"""The node registry and the built-in node types (one module each).

Adding a node type: write `nnrun/nodes/<op>.py` with a `@register`ed `NodeType`, add its tests and a README
row. Nothing else changes: every module in this package is imported and registers itself.
"""

import importlib
import pkgutil

from nnrun.nodes.base import REGISTRY, NodeParams, NodeType, Port, Stmt, register

# Every module here except the shared helpers defines one op. Imported by name, never as
# `from nnrun.nodes import save`: nnsight gives every Python object a `.save` attribute, so that
# form binds nnsight's method, and the module is never imported (nor its op registered) when
# nnsight was imported first.
_HELPERS = {"base", "contexts", "fields"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module.name}")

REGISTRY.freeze()

__all__ = ["REGISTRY", "NodeParams", "NodeType", "Port", "Stmt", "register"]
