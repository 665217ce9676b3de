"""Tests for nnrun.plots: heatmaps and line plots written as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import pytest
import torch

from nnrun.plots import heatmap, line

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_outputs(paths: list[Path], stem: Path) -> None:
    """Both files exist at the expected names; the PNG is a real, non-blank image."""
    png, svg = paths
    assert png == stem.with_name(stem.name + ".png")
    assert svg == stem.with_name(stem.name + ".svg")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert matplotlib.image.imread(png).std() > 0
    assert "<svg" in svg.read_text(encoding="utf-8")
    assert not [p for p in stem.parent.iterdir() if p.name.startswith(".tmp-")]


def _heatmap(values: torch.Tensor, stem: Path, **overrides: object) -> list[Path]:
    rows, cols = values.shape
    kwargs = {
        "row_label": "layer",
        "col_label": "position",
        "row_ticks": [str(i) for i in range(rows)],
        "col_ticks": [f"{i}: tok{i}" for i in range(cols)],
        "title": "Activation patching",
        "colorbar_label": "logit difference",
        "out_stem": stem,
    }
    kwargs.update(overrides)
    return heatmap(values, **kwargs)


def test_heatmap_writes_png_and_svg(tmp_path: Path) -> None:
    stem = tmp_path / "figs" / "patching.layer.5"  # dots in the stem must survive
    paths = _heatmap(torch.randn(6, 9), stem)
    assert_valid_outputs(paths, stem)


def test_heatmap_svg_keeps_text_searchable(tmp_path: Path) -> None:
    _, svg = _heatmap(torch.randn(2, 3), tmp_path / "h", title="price in $ and $")
    text = svg.read_text(encoding="utf-8")
    assert "0: tok0" in text
    assert "price in $ and $" in text  # "$" rendered literally, not as mathtext


def test_heatmap_all_zero(tmp_path: Path) -> None:
    assert_valid_outputs(_heatmap(torch.zeros(3, 4), tmp_path / "zero"), tmp_path / "zero")


def test_heatmap_nan(tmp_path: Path) -> None:
    values = torch.randn(4, 5)
    values[1, 2] = float("nan")
    assert_valid_outputs(_heatmap(values, tmp_path / "nan"), tmp_path / "nan")


def test_heatmap_all_nan(tmp_path: Path) -> None:
    values = torch.full((2, 2), float("nan"))
    assert_valid_outputs(_heatmap(values, tmp_path / "allnan"), tmp_path / "allnan")


def test_heatmap_many_ticks_and_odd_dtypes(tmp_path: Path) -> None:
    values = torch.randn(12, 120, dtype=torch.float16)[:, ::2]  # half precision, strided
    paths = _heatmap(values, tmp_path / "wide")
    assert_valid_outputs(paths, tmp_path / "wide")


def test_heatmap_default_ticks(tmp_path: Path) -> None:
    paths = _heatmap(torch.randn(3, 3), tmp_path / "d", row_ticks=None, col_ticks=None)
    assert_valid_outputs(paths, tmp_path / "d")


def test_heatmap_rejects_wrong_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dims"):
        heatmap(
            torch.randn(3),
            row_label="r",
            col_label="c",
            row_ticks=None,
            col_ticks=None,
            title="",
            colorbar_label="",
            out_stem=tmp_path / "x",
        )
    with pytest.raises(ValueError, match="tick labels"):
        _heatmap(torch.randn(2, 3), tmp_path / "y", col_ticks=["a", "b"])


def _line(values: torch.Tensor, stem: Path, labels: list[str] | None) -> list[Path]:
    return line(
        values,
        x_label="layer",
        y_label="logit difference",
        x_ticks=[f"L{i}" for i in range(values.shape[-1])],
        series_labels=labels,
        title="Per-layer effect",
        out_stem=stem,
    )


def test_line_one_series(tmp_path: Path) -> None:
    paths = _line(torch.randn(12), tmp_path / "one", None)
    assert_valid_outputs(paths, tmp_path / "one")


def test_line_several_series_has_legend(tmp_path: Path) -> None:
    paths = _line(torch.randn(3, 12), tmp_path / "three", ["clean", "corrupt", "patched"])
    assert_valid_outputs(paths, tmp_path / "three")
    assert "patched" in paths[1].read_text(encoding="utf-8")


def test_line_rejects_mismatched_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="series labels"):
        _line(torch.randn(2, 4), tmp_path / "bad", ["only one"])


def test_no_figures_leak(tmp_path: Path) -> None:
    before = plt.get_fignums()
    for i in range(2):  # a figure left behind by one call shows at once
        _heatmap(torch.randn(2, 2), tmp_path / f"h{i}")
        _line(torch.randn(2, 3), tmp_path / f"l{i}", ["a", "b"])
    assert plt.get_fignums() == before == []
