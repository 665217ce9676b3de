"""Publication-quality heatmaps and line plots from tensors.

Responsibility: turn a 1-D or 2-D tensor of results into a PNG and an SVG figure.

Invariant: every call writes its files (PNG, and SVG unless the run's `plots.svg` is false)
atomically (a reader never sees a partial
image) and leaves no figure behind in matplotlib's global state, so sweeps can call
it hundreds of times. Figures are built on an explicit Agg canvas rather than through
``pyplot``: they are never registered with pyplot's figure manager and the user's
chosen interactive backend is never switched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

from nnrun.atomic import atomic_writer

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PNG_DPI = 150
FORMATS: ContextVar[tuple[str, ...]] = ContextVar("nnrun_figure_formats",
                                                  default=("png", "svg"))
MAX_TICKS = 40
_LONG_TICK = 3  # x tick labels longer than this are rotated so neighbours don't collide
_NAN_COLOUR = "#bdbdbd"


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """Create a figure bound to an Agg canvas, outside pyplot's registry.

    Args:
        width: Width in inches.
        height: Height in inches.
        layout: Matplotlib layout engine; the default keeps colorbars snug beside
            wide heatmaps, where tight_layout leaves them stranded. None for callers
            that position their axes by hand.

    Returns:
        A figure that is freed by garbage collection like any other object.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def formats_from_config(config: dict) -> tuple[str, ...]:
    """The figure formats a run's config asks for: PNG always, SVG when `plots.svg` is true.

    Raises:
        ConfigError: `plots.svg` is not a boolean.
    """
    svg = (config.get("plots") or {}).get("svg", True)
    if not isinstance(svg, bool):
        from nnrun.errors import ConfigError, Issue

        raise ConfigError("the run settings have problems:", [Issue(
            "invalid_plots_svg", f"plots.svg must be true or false, found `{svg}`", "plots.svg",
            hint="plots.svg=false (PNG only) or plots.svg=true (PNG and SVG)")])
    return ("png", "svg") if svg else ("png",)


@contextmanager
def using_formats(formats: tuple[str, ...]):
    """Figures saved inside this block are written in `formats` (a run's `plots.svg`)."""
    token = FORMATS.set(tuple(formats))
    try:
        yield
    finally:
        FORMATS.reset(token)


def save_figure(fig: Figure, out_stem: Path) -> list[Path]:
    """Write ``fig`` as ``<out_stem>.png`` and (unless the run said `plots.svg=false`)
    ``<out_stem>.svg``, atomically.

    Args:
        fig: The finished figure.
        out_stem: Output path without extension; dots in the name are kept.

    Returns:
        The PNG path and the SVG path (if written), in that order.
    """
    import matplotlib

    out_stem = Path(out_stem)
    paths = []
    # Text stays text in the SVG (searchable, editable in a vector editor), and a fixed
    # hash salt and no date make the SVG byte-identical across reruns.
    style = {"svg.fonttype": "none", "svg.hashsalt": "nnrun"}
    with matplotlib.rc_context(style):
        for ext in FORMATS.get():
            # Append rather than with_suffix(): stems like "layer.5" must keep their dot.
            path = out_stem.with_name(f"{out_stem.name}.{ext}")
            metadata = {"Date": None} if ext == "svg" else None
            with atomic_writer(path) as tmp:
                fig.savefig(tmp, format=ext, dpi=PNG_DPI, bbox_inches="tight", metadata=metadata)
            paths.append(path)
    return paths


def plain_text(text: str) -> str:
    """Escape ``$`` so token strings are never parsed as mathtext.

    Args:
        text: Arbitrary user or tokenizer text.

    Returns:
        Text that matplotlib renders literally.
    """
    return str(text).replace("$", r"\$")


def _as_array(values: torch.Tensor | np.ndarray, ndims: tuple[int, ...]) -> np.ndarray:
    """Convert a tensor (any device or dtype) to a float64 NumPy array.

    Args:
        values: A tensor or array.
        ndims: Accepted numbers of dimensions.

    Returns:
        A float64 copy on the CPU.

    Raises:
        ValueError: If the number of dimensions is not accepted.
    """
    import numpy as np

    if hasattr(values, "detach"):
        values = values.detach().to("cpu").double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in ndims:
        allowed = " or ".join(map(str, ndims))
        raise ValueError(f"expected a tensor with {allowed} dims, got shape {array.shape}")
    return array


def _labels(ticks: Sequence[str] | None, n: int, axis: str) -> list[str]:
    """Validate tick labels against an axis length, defaulting to indices.

    Args:
        ticks: One label per position, or None for ``0..n-1``.
        n: Length of the axis.
        axis: Axis name for the error message.

    Returns:
        ``n`` escaped labels.

    Raises:
        ValueError: If the number of labels does not match ``n``.
    """
    if ticks is None:
        return [str(i) for i in range(n)]
    if len(ticks) != n:
        raise ValueError(f"{axis} has {n} positions but {len(ticks)} tick labels were given")
    return [plain_text(t) for t in ticks]


def _set_ticks(ax: Axes, axis: str, labels: list[str]) -> None:
    """Label an axis, thinning to at most ``MAX_TICKS`` evenly spaced ticks.

    Args:
        ax: The axes to label.
        axis: ``"x"`` or ``"y"``.
        labels: One label per position.
    """
    stride = max(1, math.ceil(len(labels) / MAX_TICKS))
    positions = list(range(0, len(labels), stride))
    shown = [labels[i] for i in positions]
    if axis == "x":
        long = any(len(label) > _LONG_TICK for label in shown)
        ax.set_xticks(positions, shown, rotation=45 if long else 0,
                      ha="right" if long else "center", rotation_mode="anchor")
    else:
        ax.set_yticks(positions, shown)


def _clamp(value: float, low: float, high: float) -> float:
    """Limit ``value`` to ``[low, high]``."""
    return min(max(value, low), high)


def heatmap(
    values: torch.Tensor,
    *,
    row_label: str,
    col_label: str,
    row_ticks: Sequence[str] | None,
    col_ticks: Sequence[str] | None,
    title: str,
    colorbar_label: str,
    out_stem: Path,
) -> list[Path]:
    """Draw a signed 2-D result (e.g. patching effect per layer × position).

    Args:
        values: 2-D tensor, rows × columns. NaN cells are drawn grey.
        row_label: Y axis label.
        col_label: X axis label.
        row_ticks: One label per row (None for indices).
        col_ticks: One label per column, e.g. ``"0: the"`` (None for indices).
        title: Figure title.
        colorbar_label: Meaning of the colour scale.
        out_stem: Output path without extension.

    Returns:
        The PNG path and the SVG path.

    Raises:
        ValueError: If ``values`` is not 2-D or a tick list has the wrong length.
    """
    import matplotlib
    import numpy as np

    data = _as_array(values, (2,))
    rows, cols = data.shape
    finite = np.abs(data[np.isfinite(data)])
    # Patching effects are signed: centre white at zero. An all-zero or all-NaN
    # input would give a zero-width colour range, so fall back to ±1.
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad=_NAN_COLOUR)

    fig = new_figure(_clamp(3.0 + 0.35 * cols, 5.0, 18.0), _clamp(2.0 + 0.3 * rows, 3.5, 14.0))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=-limit, vmax=limit,
                      aspect="auto", interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, pad=0.02)
    colorbar.set_label(plain_text(colorbar_label))
    _set_ticks(ax, "x", _labels(col_ticks, cols, "columns"))
    _set_ticks(ax, "y", _labels(row_ticks, rows, "rows"))
    ax.set_xlabel(plain_text(col_label))
    ax.set_ylabel(plain_text(row_label))
    ax.set_title(plain_text(title))
    return save_figure(fig, out_stem)


def attention_grid(
    patterns: torch.Tensor,
    *,
    row_ticks: Sequence[str],
    col_ticks: Sequence[str],
    tokens: Sequence[str] | None,
    title: str,
    out_stem: Path,
) -> list[Path]:
    """Draw attention patterns as a grid: one query × key map per (row, column), e.g. layer ×
    head, each with the tokens on both axes and one shared 0..1 colour scale.

    Args:
        patterns: 4-D tensor (rows, columns, query, key) of attention weights.
        row_ticks: One label per grid row (e.g. the layers).
        col_ticks: One label per grid column (e.g. the heads).
        tokens: One label per query/key position (None for indices).
        title: Figure title.
        out_stem: Output path without extension.

    Returns:
        The PNG path and the SVG path.
    """
    import numpy as np

    data = _as_array(patterns, (4,))
    rows, cols, n_query, n_key = data.shape
    query_labels = _labels(tokens, n_query, "queries")
    key_labels = _labels(tokens, n_key, "keys")
    size = _clamp(0.18 * max(n_query, n_key) + 0.8, 1.6, 4.0)
    fig = new_figure(size * cols + 1.5, size * rows + 0.8)
    grid = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for r in range(rows):
        for c in range(cols):
            ax = grid[r][c]
            image = ax.imshow(np.ma.masked_invalid(data[r, c]), cmap="Blues", vmin=0, vmax=1,
                              aspect="equal", interpolation="nearest")
            _set_ticks(ax, "x", key_labels)
            _set_ticks(ax, "y", query_labels)
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(plain_text(col_ticks[c]), fontsize=9)
            if c == 0:
                ax.set_ylabel(plain_text(row_ticks[r]), fontsize=9)
    fig.colorbar(image, ax=grid, shrink=0.6, label="attention weight (query row → key column)")
    fig.suptitle(plain_text(title))
    return save_figure(fig, out_stem)


def line(
    values: torch.Tensor,
    *,
    x_label: str,
    y_label: str,
    x_ticks: Sequence[str] | None,
    series_labels: list[str] | None,
    title: str,
    out_stem: Path,
    band: torch.Tensor | None = None,
) -> list[Path]:
    """Draw one or more series over a shared x axis (e.g. a metric per layer).

    Args:
        values: 1-D tensor (one series) or 2-D tensor (series × x).
        x_label: X axis label.
        y_label: Y axis label.
        x_ticks: One label per x position (None for indices).
        series_labels: One name per series; a legend is drawn when there are
            several series (None names them ``series 0``, ``series 1``, ...).
        title: Figure title.
        out_stem: Output path without extension.
        band: Optional half-width of an error band around each series (same shape as
            ``values``), e.g. the standard error of a mean over examples.

    Returns:
        The PNG path and the SVG path.

    Raises:
        ValueError: If ``values`` is not 1-D or 2-D, or a label list has the wrong length.
    """
    import numpy as np

    data = np.atleast_2d(_as_array(values, (1, 2)))
    spread = None if band is None else np.atleast_2d(_as_array(band, (1, 2)))
    n_series, n_x = data.shape
    names = _series_names(series_labels, n_series)

    fig = new_figure(_clamp(3.0 + 0.3 * n_x, 5.0, 14.0), 4.0)
    ax = fig.add_subplot()
    xs = np.arange(n_x)
    for i, (series, name) in enumerate(zip(data, names, strict=True)):
        drawn = ax.plot(xs, series, marker="o", markersize=4, linewidth=1.5, label=name)
        if spread is not None:
            ax.fill_between(xs, series - spread[i], series + spread[i], alpha=0.2,
                            color=drawn[0].get_color(), linewidth=0)
    if n_series > 1:
        ax.legend(frameon=False)
    ax.grid(True, alpha=0.3)
    _set_ticks(ax, "x", _labels(x_ticks, n_x, "x"))
    ax.set_xlabel(plain_text(x_label))
    ax.set_ylabel(plain_text(y_label))
    ax.set_title(plain_text(title))
    return save_figure(fig, out_stem)


def _series_names(labels: list[str] | None, n: int) -> list[str]:
    """Validate series names, defaulting to ``series i``.

    Args:
        labels: One name per series, or None.
        n: Number of series.

    Returns:
        ``n`` escaped names.

    Raises:
        ValueError: If the number of names does not match ``n``.
    """
    if labels is None:
        return [f"series {i}" for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"{n} series but {len(labels)} series labels were given")
    return [plain_text(label) for label in labels]
