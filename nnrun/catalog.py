"""Which experiments exist and where their files are: name → file, from file names alone.

Invariant: listing experiments never reads an experiment file; only the experiment that is
selected is parsed and checked (`checked_node`), so the cost of `nnrun --help`, tab completion or
a run does not grow with the number or size of the files. A packaged experiment wins over a user
file of the same name (`-cd DIR` with DIR/experiment/NAME.yaml shadows it); the user's folder is
`./experiments` or $NNRUN_EXPERIMENTS, read afresh on every call (tests change both in-process).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nnrun.errors import ConfigError

REFUSED = "nnrun_refused"  # the config key a refused experiment file is replaced by
USER_SUFFIXES = (".yaml", ".json")  # in this order: x.yaml wins over x.json


def experiment_files() -> dict[str, Path]:
    """Every selectable experiment: name → file, packaged ones first (they win a name clash)."""
    found: dict[str, Path] = {}
    for path in packaged_files() + user_files():
        found.setdefault(path.stem, path)
    return found


def path_of(name: str) -> Path | None:
    """The file of one experiment, without listing the others' folder contents twice."""
    return experiment_files().get(name) if name else None


def packaged_files() -> list[Path]:
    from importlib.resources import as_file, files

    folder = files("nnrun.configs.experiment")
    with as_file(folder) as real:  # a real folder for editable and wheel installs alike
        return sorted(Path(real).glob("*.yaml"))


def user_files() -> list[Path]:
    folder = Path(os.environ.get("NNRUN_EXPERIMENTS", "experiments"))
    if not folder.is_dir():
        return []
    return [p for suffix in USER_SUFFIXES for p in sorted(folder.glob(f"*{suffix}"))]


def checked_node(path: Path) -> Any:
    """The experiment file as a config node, or, when it is refused (not valid YAML, an alias
    bomb, `_target_`, `hydra.*`, `model.*`, an unsafe name, ...), a stand-in holding only the
    error: nothing of a refused file reaches Hydra, and the error is reported only when that
    experiment is selected (a broken file never stops the other experiments)."""
    from omegaconf import OmegaConf

    from nnrun.policy import load_experiment_yaml

    try:
        return load_experiment_yaml(path)
    except ConfigError as err:
        return OmegaConf.create({REFUSED: {"summary": err.summary, "issues": [
            dict(vars(i)) for i in err.issues]}})
