"""Hydra's run mode, read without composing the whole config a second time.

Before it runs anything, Hydra composes the whole config once only to read `hydra.mode`
(`Hydra.get_mode`), then composes it again to run: about 40% of a short `nnrun` command, and of
every test that runs one. In nnrun, `hydra.mode` can only come from the command line: the
packaged configs do not set it and an experiment file may not set `hydra.*` (nnrun.policy refuses
it). So when no override sets it or brings in a config that could, the primary config is
nnrun's own and no extra config directory is searched, the mode is None, which is what Hydra's
composition returns then; in every other case Hydra composes as before.

Invariant: the mode returned is exactly Hydra's own (tests/unit/test_hydra_mode.py compares the
two on a corpus of command lines). If Hydra's internals are not the expected ones (a Hydra other
than 1.3), nothing is changed.
"""

from __future__ import annotations

import functools
from typing import Any

PRIMARY_CONFIG = "config"  # nnrun's primary config (configs/config.yaml)
PRIMARY_SEARCH_PATH = ("main", "pkg://nnrun.configs")  # where it comes from (cli.py's hydra.main)


def may_set_mode(override: str) -> bool:
    """True for an override that sets `hydra.mode` or could bring in a config that does: the
    whole `hydra` node, `hydra.mode` itself, a `hydra/...` group choice, or another place to
    search for configs (`hydra.searchpath`). `hydra.run.dir=...` and the like cannot."""
    key = override.lstrip("+~").split("=", 1)[0].strip()
    return key == "hydra" or key.startswith(("hydra.mode", "hydra/", "hydra.searchpath"))


def mode_is_unset(loader: Any, config_name: str | None, overrides: list[str]) -> bool:
    """True when nothing this command composes can set `hydra.mode`."""
    path = [(element.provider, element.path) for element in loader.config_search_path.get_path()]
    return (config_name == PRIMARY_CONFIG and PRIMARY_SEARCH_PATH in path
            and not any(provider in ("command-line", "main") and where != PRIMARY_SEARCH_PATH[1]
                        for provider, where in path)
            and not any(may_set_mode(o) for o in overrides))


def read_mode_without_composing() -> None:
    """Patch Hydra.get_mode once per process (idempotent)."""
    from hydra._internal.hydra import Hydra

    original = Hydra.get_mode
    if getattr(original, "_nnrun_reads_mode", False) or not hasattr(Hydra, "compose_config"):
        return

    @functools.wraps(original)
    def get_mode(self: Any, config_name: str | None, overrides: list[str]) -> Any:
        loader = getattr(self, "config_loader", None)
        if loader is not None and hasattr(loader, "config_search_path") \
                and mode_is_unset(loader, config_name, overrides):
            return None
        return original(self, config_name=config_name, overrides=overrides)

    get_mode._nnrun_reads_mode = True  # type: ignore[attr-defined]
    Hydra.get_mode = get_mode  # type: ignore[method-assign]
