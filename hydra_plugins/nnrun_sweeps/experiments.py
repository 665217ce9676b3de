"""The config group `experiment` as a Hydra config source that reads only the selected file.

Hydra lists a group (for `--help`, tab completion, a did-you-mean) by asking each source for the
names in it, and loads a config only when the defaults list selects it. This source answers the
listing from file names (nnrun.catalog) and parses and policy-checks a file only in
`load_config`, so that neither the number nor the size of the experiment files slows the command
line. (Putting every parsed file into Hydra's ConfigStore did: Hydra deep-copies the store for
every group it lists.)

Invariant: `load_config` returns either the checked file or the `nnrun_refused` stand-in (nothing
of a refused file reaches Hydra); the search path gets this source only in nnrun's own app, after
its primary config directory and behind `-cd DIR` (which shadows an experiment of the same name),
and another Hydra app in the same environment never sees nnrun's experiments.
"""

from __future__ import annotations

from typing import Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin

SCHEME = "nnrun-experiments"
GROUP = "experiment"
PROVIDER = "schema"  # see manipulate_search_path
NNRUN_PRIMARY = "pkg://nnrun.configs"  # nnrun.cli's config_path: the sign this app is nnrun


class NnrunExperimentsSource(ConfigSource):
    """`nnrun-experiments://`: the group `experiment`, packaged and user experiment files."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        name = _name(config_path)  # asked for every config Hydra loads: answer others at once
        return name is not None and name in _files()

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> list[str]:
        group = config_path.strip("/")
        if group == "" and results_filter in (None, ObjectType.GROUP):
            return [GROUP]
        if group == GROUP and results_filter in (None, ObjectType.CONFIG):
            return sorted(_files())
        return []

    def load_config(self, config_path: str) -> ConfigResult:
        from nnrun.catalog import checked_node

        path = _files().get(_name(config_path))
        if path is None:
            raise ConfigLoadError(f"Config not found : {config_path}")
        # `_global_` whatever the file's header says: an experiment sets top-level keys
        return ConfigResult(provider=str(path), path=f"{SCHEME}://{path}",
                            config=checked_node(path), header={"package": "_global_"})


class NnrunExperimentsSearchPath(SearchPathPlugin):
    """Adds `nnrun-experiments://` to nnrun's search path, after nnrun's own configs."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if any(element.path == NNRUN_PRIMARY for element in search_path.get_path()):
            # Provider `schema`: Hydra inserts `-cd DIR` just before the first element of that
            # provider (normally its ConfigStore, last), so DIR/experiment/NAME.yaml still
            # shadows an experiment of the same name, as it did when experiments lived there.
            search_path.append(PROVIDER, f"{SCHEME}://")


def _name(config_path: str) -> str | None:
    """`experiment/patching` (or `experiment/patching.yaml`) → `patching`; None elsewhere."""
    group, _, name = config_path.strip("/").rpartition("/")
    if group != GROUP:
        return None
    return name.removesuffix(".yaml")


def _files():
    from nnrun.catalog import experiment_files

    return experiment_files()
