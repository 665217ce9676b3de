"""Hydra's config-group listings (`--help`, tab completion, `glob(...)` sweeps) made cheap.

Hydra answers every "which options does group G have?" with a fresh deep copy of its whole config
repository (ConfigStore included): `nnrun --help` asks about 60 times, which was most of its
run time. Within one command the answer for the same primary config and overrides cannot
change, so one copy per (config name, overrides), and each answer, is kept for the loader's
lifetime.

Invariant: the listing returned is exactly Hydra's own (same repository construction, same
query); only the repeated copying is saved. If Hydra's internals are not the expected ones (a
Hydra other than 1.3), nothing is changed.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

# loader → {(config name, overrides): (its caching repository, {(group, filter): options})};
# weak: a loader's copies go with it
_REPOS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


def reuse_listing_repositories() -> None:
    """Patch ConfigLoaderImpl.get_group_options once per process (idempotent)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    original = ConfigLoaderImpl.get_group_options
    if getattr(original, "_nnrun_reuses_repository", False) \
            or not hasattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo"):
        return

    @functools.wraps(original)
    def get_group_options(self: Any, group_name: str,
                          results_filter: ObjectType | None = ObjectType.CONFIG,
                          config_name: str | None = None,
                          overrides: list[str] | None = None) -> list[str]:
        repos = _REPOS.setdefault(self, {})
        key = (config_name, tuple(overrides or ()))
        if key not in repos:
            _, repo = self._parse_overrides_and_create_caching_repo(
                config_name, list(overrides or ()))
            repos[key] = (repo, {})
        repo, answers = repos[key]
        if (group_name, results_filter) not in answers:  # --help asks each question 2-3 times
            answers[group_name, results_filter] = repo.get_group_options(group_name,
                                                                         results_filter)
        return list(answers[group_name, results_filter])

    get_group_options._nnrun_reuses_repository = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.get_group_options = get_group_options  # type: ignore[method-assign]
