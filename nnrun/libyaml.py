"""YAML parsed by libyaml's C parser where PyYAML has it: 10-20× faster than the pure-Python
parser, which was about a quarter of a short `nnrun` command (Hydra reads a dozen config files,
nnrun parses the experiment file to check it and to map its paths to lines).

Only the parser changes, never what a document means: the C parser hands its events to the same
Python resolver and constructor (as PyYAML's own CSafeLoader does). Where PyYAML was built without
libyaml, nothing changes. A document the C parser refuses is parsed again by the pure-Python one,
so that nnrun's messages quote the same error text and line everywhere.
"""

from __future__ import annotations

import functools
from typing import Any

import yaml

HAVE_LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))


def compose(text: str) -> yaml.Node | None:
    """`yaml.compose(text, Loader=yaml.SafeLoader)`, on the C parser when there is one."""
    if HAVE_LIBYAML:
        try:
            return yaml.compose(text, Loader=yaml.CSafeLoader)
        except yaml.YAMLError:
            pass  # the pure parser raises it again, with the message nnrun's errors quote
    return yaml.compose(text, Loader=yaml.SafeLoader)


def parse_configs_with_libyaml() -> None:
    """Make OmegaConf.load (every config file Hydra reads) use the C parser in front of
    OmegaConf's own loader (its float resolver, duplicate-key check and constructors).
    Patches omegaconf._utils.get_yaml_loader once per process (idempotent)."""
    from omegaconf import _utils

    original = _utils.get_yaml_loader
    if getattr(original, "_nnrun_libyaml", False) or not HAVE_LIBYAML:
        return

    @functools.wraps(original)
    def get_yaml_loader() -> Any:
        pure = original()  # OmegaConf's loader class: SafeLoader + its resolvers and constructors

        class OmegaConfCLoader(yaml.cyaml.CParser, pure):  # the C parser's methods come first
            def __init__(self, stream: Any) -> None:
                yaml.cyaml.CParser.__init__(self, stream)
                yaml.constructor.SafeConstructor.__init__(self)
                yaml.resolver.Resolver.__init__(self)

        return OmegaConfCLoader

    get_yaml_loader._nnrun_libyaml = True  # type: ignore[attr-defined]
    _utils.get_yaml_loader = get_yaml_loader
