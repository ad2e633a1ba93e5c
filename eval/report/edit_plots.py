"""Editing figures from the tidy table and the run folders' images (PNG, matplotlib's object API).

- :func:`edit_tradeoff`: the paper's editing figure (arXiv 2312.12540, Fig. 5): mean CLIP score
  (agreement with the target prompt, up) against mean LPIPS to the source (agreement with the
  image, left), one point per method with 95% CI bars (circles: prompt swap, squares: P2P; bars
  clipped to the metric's range and left out for n < 3, :func:`eval.report.plots.error_extent`), one
  panel per model x setting. Methods are the tidy table's ``<inverter>+<editor>`` labels
  (:func:`eval.report.summary_stats.label_methods`).
  Any two metrics can be plotted (e.g. ``bg_psnr`` when CLIP weights are unavailable).
- :func:`save_edit_images` keeps one pair's source, reconstruction and edit in a run folder
  (``images/source``, ``images/reconstruction``, ``images/edit``) as the 8-bit images the
  ``piebench`` metrics score (truncated, :func:`eval.metrics.masked.to_uint8`); :func:`edit_grid` draws the
  source then each method's edit, one row per pair, and :func:`run_edit_grid` gathers them
  from several run folders.
- :func:`interpolation_strip`: the frames of one interpolation path side by side.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch
from matplotlib.figure import Figure

from eval.report.plots import (
    CELL_INCHES,
    IMAGES_DIR,
    LEGEND_SPACE,
    PANEL_INCHES,
    RECON_DIR,
    SOURCE_DIR,
    _colors,
    _save,
    _save_png,
    _to_hwc,
    error_extent,
    image_file_name,
    image_grid,
    run_image_grid,
)
from eval.report.summary_stats import summarize

EDIT_DIR = "edit"
EDITOR_MARKERS = {"prompt_swap": "o", "p2p": "s"}  # marker per editor (the method label's "+<editor>")
AXIS_LABELS = {
    "clip_whole": "CLIP score (target prompt) ↑",
    "clip_edited": "CLIP score, edited region ↑",
    "lpips_to_source": "LPIPS to source ↓",
    "bg_psnr": "background PSNR (dB) ↑",
    "bg_lpips": "background LPIPS ↓",
    "edit_success": "edit success ↑",
}


def edit_tradeoff(
    records: pd.DataFrame, out_path: str | Path, y: str = "clip_whole", x: str = "lpips_to_source"
) -> Path | None:
    """Mean ``y`` against mean ``x`` per method (paper Fig. 5); None when no method has both."""
    summary = summarize(records)
    panels = list(dict.fromkeys(zip(summary["model"], summary["setting"])))
    points = []
    for model, setting in panels:
        s = summary[(summary["model"] == model) & (summary["setting"] == setting)]
        for method in dict.fromkeys(s["method"]):
            px, py = s[(s["method"] == method) & (s["metric"] == x)], s[(s["method"] == method) & (s["metric"] == y)]
            if px.empty or py.empty or not (math.isfinite(px["mean"].iloc[0]) and math.isfinite(py["mean"].iloc[0])):
                continue
            points.append((model, setting, method, px.iloc[0], py.iloc[0]))
    if not points:
        return None
    panels = list(dict.fromkeys((p[0], p[1]) for p in points))
    colors = _colors(list(dict.fromkeys(p[2] for p in points)))
    fig = Figure(figsize=(PANEL_INCHES[0] * len(panels), PANEL_INCHES[1]))
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for model, setting, method, px, py in (p for p in points if (p[0], p[1]) == panel):
            marker = EDITOR_MARKERS.get(str(method).rsplit("+", 1)[-1].split("[")[0], "o")
            ax.errorbar(px["mean"], py["mean"], xerr=error_extent(px), yerr=error_extent(py),
                        fmt=marker, capsize=3, color=colors[method], label=method)
        ax.set_title(f"{panel[0]} · {panel[1]}", fontsize=9)
        ax.set_xlabel(AXIS_LABELS.get(x, x))
        ax.set_ylabel(AXIS_LABELS.get(y, y))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.subplots_adjust(wspace=LEGEND_SPACE)
    return _save(fig, out_path)


def save_edit_images(run_dir: str | Path, image_id: str, source: torch.Tensor, reconstruction: torch.Tensor,
                     edit: torch.Tensor) -> None:
    """Keep one pair's images ((3, H, W) or (1, 3, H, W) in [0, 1]) as PNGs in ``run_dir``.

    The files hold exactly what the ``piebench`` convention scores: each image is made 8-bit by
    :func:`eval.metrics.masked.to_uint8` (truncation, PnPInversion's ``(x * 255).astype(uint8)``, the
    rule :func:`eval.metrics.masked.to_8bit` scores with), never rounded. So PnPInversion's evaluator
    (or :func:`eval.metrics.masked.pie_psnr` etc.) run on the reloaded PNGs (``uint8 / 255``) gives the
    background metrics of the rows bit for bit (tests/test_scored_images.py).
    """
    base, name = Path(run_dir) / IMAGES_DIR, image_file_name(image_id)
    for folder, image in ((SOURCE_DIR, source), (RECON_DIR, reconstruction), (EDIT_DIR, edit)):
        _save_png(image.reshape(-1, *image.shape[-3:])[0], base / folder / name)


def edit_grid(source: torch.Tensor, edits: Mapping[str, torch.Tensor], out_path: str | Path,
              row_labels: Sequence[str] | None = None) -> Path:
    """PNG grid: one row per pair, columns ``source`` then each method's edit ((N, 3, H, W) in [0, 1])."""
    return image_grid(source, edits, out_path, row_labels)


def run_edit_grid(run_dirs: Mapping[str, str | Path], out_path: str | Path, max_images: int = 8) -> Path | None:
    """:func:`edit_grid` of the pairs every run in ``run_dirs`` (method label -> run folder) that
    saved any edit saved; None if none."""
    return run_image_grid(run_dirs, out_path, max_images, kind=EDIT_DIR)


def interpolation_strip(frames: torch.Tensor, out_path: str | Path, weights: Sequence[float] | None = None) -> Path:
    """The frames (N, 3, H, W) in [0, 1] of one interpolation path in a row, titled by weight."""
    n = frames.shape[0]
    if weights is not None and len(weights) != n:
        raise ValueError(f"interpolation_strip: {len(weights)} weights for {n} frames")
    fig = Figure(figsize=(CELL_INCHES * n, CELL_INCHES))
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(_to_hwc(frames[i]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if weights is not None:
            ax.set_title(f"w={weights[i]:.2f}", fontsize=8)
    return _save(fig, out_path)
