"""nnrun.hydra_mode: Hydra's run mode is read without composing the config, and it is exactly
the mode Hydra's own composition gives, on a corpus of command lines (those that may set it are
composed as before)."""

from __future__ import annotations

import pytest
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from nnrun import cli
from nnrun.hydra_mode import may_set_mode, read_mode_without_composing

COMMAND_LINES = [
    [],
    ["experiment=patching"],
    ["experiment=patching", "stage=validate", "hydra.run.dir=/tmp/x", "params.layer=1"],
    ["hydra.sweep.dir=/tmp/s", "hydra.job.chdir=false", "+params.new=3"],
    ["hydra.mode=MULTIRUN", "experiment=patching"],
    ["hydra.mode=RUN"],
    ["hydra/launcher=basic"],
    ["hydra.searchpath=[pkg://nnrun.configs]"],
]


@pytest.fixture
def hydra():
    """Hydra as `nnrun` builds it: nnrun's primary config, its experiments source and sweeper."""
    from nnrun.sweeps.plugins import register_plugins

    register_plugins()
    cli._register_resolvers()
    cli._register_experiments()
    read_mode_without_composing()
    GlobalHydra.instance().clear()
    with initialize_config_module("nnrun.configs", version_base="1.3"):
        yield GlobalHydra.instance().hydra


@pytest.mark.parametrize("overrides", COMMAND_LINES, ids=lambda o: " ".join(o) or "none")
def test_the_mode_is_hydras_own(hydra, overrides):
    composed = type(hydra).get_mode.__wrapped__(hydra, config_name="config",
                                                 overrides=list(overrides))
    assert hydra.get_mode(config_name="config", overrides=list(overrides)) == composed


def test_only_command_lines_that_may_set_the_mode_are_composed(hydra, monkeypatch):
    composed = []

    def compose_config(self, **kwargs):
        composed.append(kwargs["overrides"])
        raise RuntimeError("composed")  # get_mode answers None for a config that fails

    monkeypatch.setattr(type(hydra), "compose_config", compose_config)
    for overrides in COMMAND_LINES[:4]:
        assert hydra.get_mode(config_name="config", overrides=list(overrides)) is None
    assert composed == []
    for overrides in COMMAND_LINES[4:]:
        assert hydra.get_mode(config_name="config", overrides=list(overrides)) is None
    assert hydra.get_mode(config_name="my_config", overrides=[]) is None
    assert composed == COMMAND_LINES[4:] + [[]]


@pytest.mark.parametrize("override,may", [
    ("hydra.mode=MULTIRUN", True), ("+hydra.mode=RUN", True), ("++hydra.mode=RUN", True),
    ("hydra=foo", True), ("hydra/launcher=submitit_slurm", True), ("~hydra.mode", True),
    ("hydra.searchpath=[file:///x]", True),
    ("hydra.run.dir=/x", False), ("hydra.sweep.subdir=a", False), ("params.mode=1", False),
    ("experiment=patching", False), ("mode=x", False)])
def test_which_overrides_may_set_the_mode(override, may):
    assert may_set_mode(override) is may
