"""Tests for nnrun.graph_picture: experiment graphs drawn to PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import pytest

from nnrun.graph_picture import draw_graph

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PATCHING_SCOPES = [
    {"id": "clean_run", "kind": "trace", "parent": None},
    {"id": "patched", "kind": "trace", "parent": None},
    {"id": "point", "kind": "invoke", "parent": "patched", "foreach": "layer × position"},
]
PATCHING_NODES = [
    {"id": "clean_resid", "op": "read", "kind": "read", "scope": "clean_run"},
    {"id": "patch", "op": "write", "kind": "write", "scope": "point"},
    {"id": "logits", "op": "read", "kind": "read", "scope": "point"},
    {"id": "effect", "op": "logit_diff", "kind": "metric", "scope": None},
    {"id": "heatmap", "op": "plot_heatmap", "kind": "plot", "scope": None},
]
PATCHING_EDGES = [
    {"src": "clean_resid", "dst": "patch", "port": "value"},
    {"src": "logits", "dst": "effect", "port": "logits"},
    {"src": "effect", "dst": "heatmap", "port": "in"},
]


def assert_rendered(paths: list[Path], stem: Path, texts: list[str]) -> str:
    """Both files exist; the PNG is a real, non-blank image; the SVG holds ``texts``."""
    png, svg = paths
    assert png == stem.with_name(stem.name + ".png")
    assert svg == stem.with_name(stem.name + ".svg")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert matplotlib.image.imread(png).std() > 0
    content = svg.read_text(encoding="utf-8")
    assert "<svg" in content
    for text in texts:
        assert text in content, text
    assert not [p for p in stem.parent.iterdir() if p.name.startswith(".tmp-")]
    return content


def test_patching_graph(tmp_path: Path) -> None:
    stem = tmp_path / "graph"
    paths = draw_graph(PATCHING_SCOPES, PATCHING_NODES, PATCHING_EDGES, stem, title="patching")
    svg = assert_rendered(paths, stem, [n["id"] for n in PATCHING_NODES])
    # Scope labels, the invoke's iteration space, non-default ports and the legend.
    for text in ("trace: clean_run", "invoke: point", "layer × position", "after the model",
                 "value", "logits", "metric", "plot", "patching"):
        assert text in svg, text
    assert plt.get_fignums() == []


def test_session_with_two_traces_and_isolated_node(tmp_path: Path) -> None:
    scopes = [
        {"id": "sess", "kind": "session", "parent": None},
        {"id": "clean", "kind": "trace", "parent": "sess"},
        {"id": "corrupt", "kind": "trace", "parent": "sess"},
    ]
    nodes = [
        {"id": "clean_logits", "op": "read", "kind": "read", "scope": "clean"},
        {"id": "corrupt_logits", "op": "read", "kind": "read", "scope": "corrupt"},
        {"id": "diff", "op": "subtract", "kind": "compute", "scope": None},
        {"id": "saved", "op": "save_tensors", "kind": "save", "scope": None},
        {"id": "lonely", "op": "noop", "kind": "compute", "scope": "corrupt"},
    ]
    edges = [
        {"src": "clean_logits", "dst": "diff", "port": "a"},
        {"src": "corrupt_logits", "dst": "diff", "port": "b"},
        {"src": "diff", "dst": "saved", "port": "in"},
    ]
    stem = tmp_path / "session"
    paths = draw_graph(scopes, nodes, edges, stem)
    assert_rendered(paths, stem, [n["id"] for n in nodes] + ["session: sess", "trace: corrupt"])


def test_single_node_without_edges(tmp_path: Path) -> None:
    nodes = [{"id": "only", "op": "read", "kind": "read", "scope": None}]
    stem = tmp_path / "single"
    assert_rendered(draw_graph([], nodes, [], stem), stem, ["only"])


def test_empty_graph_with_title(tmp_path: Path) -> None:
    stem = tmp_path / "empty"
    assert_rendered(draw_graph([], [], [], stem, title="nothing yet"), stem, ["nothing yet"])


def test_cycles_and_self_loops_still_draw(tmp_path: Path) -> None:
    nodes = [{"id": n, "op": "f", "kind": "compute", "scope": None} for n in ("a", "b")]
    edges = [{"src": "a", "dst": "b", "port": "in"}, {"src": "b", "dst": "a", "port": "in"},
             {"src": "b", "dst": "b", "port": "again"}]
    stem = tmp_path / "cycle"
    assert_rendered(draw_graph([], nodes, edges, stem), stem, ["a", "b", "again"])


def test_output_is_deterministic(tmp_path: Path) -> None:
    first = draw_graph(PATCHING_SCOPES, PATCHING_NODES, PATCHING_EDGES, tmp_path / "one")
    second = draw_graph(PATCHING_SCOPES, PATCHING_NODES, PATCHING_EDGES, tmp_path / "two")
    assert first[1].read_bytes() == second[1].read_bytes()


@pytest.mark.parametrize(
    ("scopes", "nodes", "edges", "message"),
    [
        ([{"id": "t", "kind": "trace", "parent": "missing"}], [], [], "missing"),
        ([], [{"id": "n", "op": "read", "kind": "read", "scope": "nowhere"}], [], "nowhere"),
        ([], [{"id": "n", "op": "read", "kind": "read", "scope": None}],
         [{"src": "n", "dst": "ghost", "port": "in"}], "ghost"),
        ([{"id": "x", "kind": "trace", "parent": "y"}, {"id": "y", "kind": "trace", "parent": "x"}],
         [], [], "cycle"),
    ],
)
def test_rejects_dangling_references(
    tmp_path: Path, scopes: list[dict], nodes: list[dict], edges: list[dict], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        draw_graph(scopes, nodes, edges, tmp_path / "bad")
