"""The graph picture cache (verified copies), PNG-only figures, the threads rule and phases."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from nnrun import picture_cache, threads
from nnrun.errors import ConfigError
from nnrun.plots import formats_from_config, new_figure, save_figure, using_formats
from nnrun.timings import Phases


def fake_render(stem: Path, calls: list):
    def render():
        calls.append(stem)
        paths = []
        for ext in ("png", "svg"):
            path = stem.with_name(f"{stem.name}.{ext}")
            path.write_bytes(f"{ext} picture".encode())
            paths.append(path)
        return paths
    return render


def test_picture_is_drawn_once_then_copied(tmp_path, monkeypatch):
    monkeypatch.setenv("NNRUN_CACHE", str(tmp_path / "cache"))
    calls: list = []
    for run in ("a", "b", "c"):
        (tmp_path / run).mkdir()
        stem = tmp_path / run / "graph"
        paths = picture_cache.cached_picture("graph-1", stem, fake_render(stem, calls))
        assert [p.read_bytes() for p in paths] == [b"png picture", b"svg picture"]
    assert len(calls) == 1


def test_a_corrupt_cache_file_is_drawn_again_never_copied(tmp_path, monkeypatch):
    monkeypatch.setenv("NNRUN_CACHE", str(tmp_path / "cache"))
    calls: list = []
    (tmp_path / "a").mkdir()
    picture_cache.cached_picture("g", tmp_path / "a" / "graph", fake_render(tmp_path / "a" /
                                                                            "graph", calls))
    cached = next(picture_cache.cache_dir().glob("*.png"))
    cached.write_bytes(b"png pictur\0")          # same size, other bytes
    (tmp_path / "b").mkdir()
    stem = tmp_path / "b" / "graph"
    paths = picture_cache.cached_picture("g", stem, fake_render(stem, calls))
    assert len(calls) == 2 and paths[0].read_bytes() == b"png picture"
    cached.write_bytes(b"png")                   # truncated
    (tmp_path / "c").mkdir()
    stem = tmp_path / "c" / "graph"
    picture_cache.cached_picture("g", stem, fake_render(stem, calls))
    assert len(calls) == 3


def test_the_key_covers_formats():
    assert picture_cache.picture_key("g", ("png",)) != picture_cache.picture_key(
        "g", ("png", "svg"))


def test_png_only_when_svg_is_off(tmp_path):
    fig = new_figure(2, 2)
    with using_formats(formats_from_config({"plots": {"svg": False}})):
        paths = save_figure(fig, tmp_path / "f")
    assert [p.name for p in paths] == ["f.png"] and not (tmp_path / "f.svg").exists()
    assert formats_from_config({}) == ("png", "svg")
    with pytest.raises(ConfigError):
        formats_from_config({"plots": {"svg": "yes"}})


def plan(rows: int, tokens: int, hidden: int = 128, layers: int = 4, device: str = "cpu"):
    invoke = SimpleNamespace(points=[()] * rows, lengths=(tokens,))
    return SimpleNamespace(binding=SimpleNamespace(invokes={"i": invoke}), batch_size=1,
                           graph=SimpleNamespace(info=SimpleNamespace(hidden_size=hidden,
                                                                      n_layers=layers)),
                           model=SimpleNamespace(device=device))


def test_threads_auto_is_one_for_small_passes_and_the_free_cores_for_big_ones(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert threads.choose_threads("auto", plan(1, 12)) == 1           # patching_single
    assert threads.choose_threads("auto", plan(2184, 14)) == 2        # demo patching, idle
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (4.0, 4.0, 4.0))
    assert threads.choose_threads("auto", plan(2184, 14)) == 1        # the other core is busy
    assert threads.choose_threads(3, plan(1, 12)) == 3
    for bad in (0, -1, "many", True):
        with pytest.raises(ConfigError):
            threads.parse_threads(bad)


def test_phases_add_up():
    phases = Phases()
    with phases("a"):
        pass
    with phases("a"):
        pass
    phases.add("b", 1.5)
    assert set(phases.rounded()) >= {"a", "b"} and phases.seconds["b"] == 1.5


def test_an_experiment_file_may_not_set_threads():
    from nnrun.policy import check_experiment_text

    with pytest.raises(ConfigError) as err:
        check_experiment_text("format: 1\nname: t\nthreads: 2\n", "e.yaml")
    assert err.value.issues[0].code == "forbidden_threads"
