"""The `experiment` config group: listed from file names, only the selected file is parsed."""

from __future__ import annotations

import pytest
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError

from hydra_plugins.nnrun_sweeps.experiments import (
    SCHEME,
    NnrunExperimentsSearchPath,
    NnrunExperimentsSource,
)
from nnrun.catalog import REFUSED

GOOD = "format: 1\nname: mine\ngraph: {nodes: []}\n"


@pytest.fixture
def source(tmp_path, monkeypatch):
    folder = tmp_path / "experiments"
    folder.mkdir()
    monkeypatch.setenv("NNRUN_EXPERIMENTS", str(folder))
    return NnrunExperimentsSource("test", f"{SCHEME}://"), folder


def test_listing_reads_no_file(source, monkeypatch):
    src, folder = source
    (folder / "mine.yaml").write_text(GOOD)
    (folder / "broken.yaml").write_bytes(b"\xff\xfe{{{")
    (folder / "data.json").write_text("{}")

    def never(*_):
        raise AssertionError("an experiment file was read while listing")

    monkeypatch.setattr("nnrun.policy.load_experiment_yaml", never)
    names = src.list("experiment", ObjectType.CONFIG)
    assert {"mine", "broken", "data", "patching"} <= set(names)
    assert src.list("", ObjectType.GROUP) == ["experiment"]
    assert src.list("experiment", ObjectType.GROUP) == []
    assert src.is_group("experiment") and not src.is_group("model")
    assert src.is_config("experiment/broken") and src.is_config("experiment/mine.yaml")
    assert not src.is_config("model/demo") and not src.is_config("experiment/../mine")


def test_the_selected_file_is_checked_and_global(source):
    src, folder = source
    (folder / "mine.yaml").write_text(GOOD)
    loaded = src.load_config("experiment/mine")
    assert loaded.config.name == "mine" and loaded.header["package"] == "_global_"
    assert loaded.provider == str(folder / "mine.yaml")


def test_a_refused_file_becomes_its_error_only(source):
    src, folder = source
    (folder / "evil.yaml").write_text(GOOD + "hydra:\n  run: {dir: /tmp/x}\n")
    assert list(src.load_config("experiment/evil").config) == [REFUSED]


def test_a_packaged_experiment_wins_over_a_user_file(source):
    src, folder = source
    (folder / "patching.yaml").write_text(GOOD)
    assert src.load_config("experiment/patching").config.name == "patching"


def test_an_unknown_name_is_not_loaded(source):
    src, _ = source
    with pytest.raises(ConfigLoadError):
        src.load_config("experiment/no_such_experiment")


def test_only_nnrun_gets_the_source():
    other, ours = ConfigSearchPathImpl(), ConfigSearchPathImpl()
    other.append("main", "pkg://someone_else.conf")
    ours.append("main", "pkg://nnrun.configs")
    for path in (other, ours):
        NnrunExperimentsSearchPath().manipulate_search_path(path)
    assert [e.path for e in other.get_path()] == ["pkg://someone_else.conf"]
    assert ours.get_path()[-1].path == f"{SCHEME}://"
