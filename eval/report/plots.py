"""Plots from the tidy table, saved as PNG (matplotlib's object API: no pyplot global state).

- :func:`quality_vs_time`: mean quality against mean inversion+reconstruction time, one panel
  per model x setting, 95% CI bars both ways, the VAE ceiling dashed (paper Fig. 4).

Every bar and band is the 95% interval clipped to what the metric can be
(:func:`eval.report.summary_stats.clipped_interval`: no negative times, no PSNR above the VAE ceiling from
the interval alone) and is left out when fewer than 3 images have a value.
- :func:`convergence`: PSNR and residual against iterations (paper Fig. 3) from a small tidy
  frame with :data:`CONVERGENCE_COLUMNS`; :func:`convergence_from_records` builds that frame
  from a sweep over an inverter's iteration hyperparameter.
- :func:`image_grid`: source images, then each method's reconstruction, one row per image;
  :func:`save_run_images` / :func:`run_image_grid` keep and gather them per run folder
  (``<run_dir>/images/source/<id>.png``, ``<run_dir>/images/reconstruction/<id>.png``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from eval.report.summary_stats import TIME_TOTAL, clipped_interval, label_methods, mean_ci, parse_params, summarize

# Convergence frame: one row per method x iteration x metric (x image, optional).
CONVERGENCE_COLUMNS = ("method", "iteration", "metric", "value")
CONVERGENCE_METRICS = {"psnr": "PSNR (dB)", "residual": "residual (RMS)"}
PANEL_INCHES = (4.5, 3.4)
LEGEND_SPACE = 0.9  # horizontal gap between panels (fraction of a panel's width) for the outside legends
CELL_INCHES = 1.6
DPI = 120
MARKERS = ("o", "s", "^", "D")
LOG_X_RATIO = 20.0  # time axis goes logarithmic when the slowest method is this many times the fastest
IMAGES_DIR = "images"
SOURCE_DIR = "source"
RECON_DIR = "reconstruction"


def _save(fig: Figure, out_path: str | Path) -> Path:
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _colors(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    from matplotlib import colormaps

    size = 10 if len(names) <= 10 else 20  # tab20 (light/dark pairs) keeps up to 20 names apart
    cmap = colormaps[f"tab{size}"]
    return {n: cmap(i % size) for i, n in enumerate(names)}


def _markers(names: Sequence[str]) -> dict[str, str]:
    """A marker per name that, with :func:`_colors`, tells up to 80 names apart."""
    return {n: MARKERS[(i // 20) % len(MARKERS)] for i, n in enumerate(names)}


def error_extent(row: pd.Series) -> np.ndarray | None:
    """matplotlib's asymmetric ``[[below], [above]]`` error of a summary row from its clipped interval
    (``ci_low``/``ci_high``); None (no bar) when the row has no interval."""
    mean, low, high = float(row["mean"]), float(row["ci_low"]), float(row["ci_high"])
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return np.array([[max(mean - low, 0.0)], [max(high - mean, 0.0)]])


def quality_vs_time(
    records: pd.DataFrame, out_path: str | Path, quality: str = "psnr", time: str = TIME_TOTAL
) -> Path:
    """Paper Fig. 4: mean ``quality`` vs mean ``time`` per method, one panel per model x setting."""
    summary = summarize(records)
    panels = list(dict.fromkeys(zip(summary["model"], summary["setting"])))
    if not panels:
        raise ValueError("quality_vs_time: the results table has no rows")
    methods = list(dict.fromkeys(summary["method"]))
    colors, markers = _colors(methods), _markers(methods)
    fig = Figure(figsize=(PANEL_INCHES[0] * len(panels), PANEL_INCHES[1]))
    labelled = label_methods(records)
    for k, (model, setting) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        s = summary[(summary["model"] == model) & (summary["setting"] == setting)]
        for method in dict.fromkeys(s["method"]):
            q = s[(s["method"] == method) & (s["metric"] == quality)]
            t = s[(s["method"] == method) & (s["metric"] == time)]
            if q.empty or t.empty or not math.isfinite(q["mean"].iloc[0]) or not math.isfinite(t["mean"].iloc[0]):
                continue
            ax.errorbar(t["mean"].iloc[0], q["mean"].iloc[0], xerr=error_extent(t.iloc[0]),
                        yerr=error_extent(q.iloc[0]), fmt=markers[method], capsize=3,
                        color=colors[method], elinewidth=0.8, label=method)
        if quality == "psnr":
            ceil = labelled[(labelled["model"] == model) & (labelled["setting"] == setting)
                            & (labelled["metric"] == "psnr_vae_ceiling") & (labelled["status"] == "ok")]
            ceil = ceil.drop_duplicates(subset=["image"])
            if not ceil.empty:
                value = mean_ci(ceil["value"].astype(float))[0]
                ax.axhline(value, linestyle="--", color="gray", label=f"VAE ceiling ({value:.2f})")
        times = s.loc[s["metric"] == time, "mean"].astype(float)
        times = times[np.isfinite(times) & (times > 0)]
        if len(times) > 1 and times.max() / times.min() > LOG_X_RATIO:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels crowd a short decade
        ax.set_title(f"{model} · {setting}", fontsize=9)
        ax.set_xlabel("inversion + reconstruction time [s]" if time == TIME_TOTAL else time)
        ax.set_ylabel("PSNR (dB)" if quality == "psnr" else quality)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.subplots_adjust(wspace=LEGEND_SPACE)
    return _save(fig, out_path)


def convergence(frame: pd.DataFrame, out_path: str | Path, ceiling: float | None = None) -> Path:
    """Paper Fig. 3: mean ± 95% CI of each metric in :data:`CONVERGENCE_METRICS` against iterations.

    The band is clipped (residuals >= 0, PSNR <= ``ceiling``) and left out where n < 3. ``frame`` has :data:`CONVERGENCE_COLUMNS` (``image`` optional, one value per image); the
    residual panel uses a log scale; ``ceiling`` (dB) draws the VAE ceiling on the PSNR panel.
    """
    missing = [c for c in CONVERGENCE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"convergence: frame lacks columns {missing}; needs {list(CONVERGENCE_COLUMNS)}")
    metrics = [m for m in CONVERGENCE_METRICS if m in set(frame["metric"])]
    if not metrics:
        raise ValueError(f"convergence: no rows with metric in {list(CONVERGENCE_METRICS)}")
    colors = _colors(list(dict.fromkeys(frame["method"])))
    fig = Figure(figsize=(PANEL_INCHES[0] * len(metrics), PANEL_INCHES[1]))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        rows = frame[frame["metric"] == metric]
        for method, block in rows.groupby("method", sort=False):
            stats = [(it, *mean_ci(g["value"].astype(float))) for it, g in block.groupby("iteration")]
            its, means = (np.array(v, dtype=float) for v in zip(*[(s[0], s[1]) for s in stats]))
            ax.plot(its, means, marker="o", color=colors[method], label=str(method))
            bands = np.array([clipped_interval("residual_rms" if metric == "residual" else metric, m, h, n,
                                               ceiling) for _, m, h, n in stats], dtype=float)
            ax.fill_between(its, bands[:, 0], bands[:, 1], where=np.isfinite(bands).all(axis=1),
                            color=colors[method], alpha=0.2)
        if metric == "psnr" and ceiling is not None:
            ax.axhline(ceiling, linestyle="--", color="gray", label=f"VAE ceiling ({ceiling:.2f})")
        if metric == "residual":
            ax.set_yscale("log")
        ax.set_xlabel("iterations")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(CONVERGENCE_METRICS[metric])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out_path)


def convergence_from_records(
    records: pd.DataFrame, param: str, residual_metric: str = "residual_rms_mean"
) -> pd.DataFrame:
    """A convergence frame from runs that sweep the inverter hyperparameter ``param`` (e.g. ``max_iters``).

    ``method`` is the inverter name; ``iteration`` the value of ``param`` in ``inverter_params``;
    ``psnr`` and ``residual`` (from ``residual_metric``) per image. Rows without ``param`` are dropped.
    """
    ok = records[(records["status"] == "ok") & records["metric"].isin(["psnr", residual_metric])]
    out = []
    for _, r in ok.iterrows():
        value = parse_params(r.get("inverter_params")).get(param)
        if value is None:
            continue
        out.append({"method": r["inverter"], "iteration": value, "image": r["image"],
                    "metric": "psnr" if r["metric"] == "psnr" else "residual", "value": float(r["value"])})
    return pd.DataFrame(out, columns=[*CONVERGENCE_COLUMNS[:2], "image", *CONVERGENCE_COLUMNS[2:]])


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def image_grid(
    source: torch.Tensor,
    reconstructions: Mapping[str, torch.Tensor],
    out_path: str | Path,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """PNG grid: one row per image, columns ``source`` then each method's reconstruction ([0, 1], (N, 3, H, W))."""
    n = source.shape[0]
    for name, rec in reconstructions.items():
        if rec.shape != source.shape:
            raise ValueError(f"image_grid: {name} has shape {tuple(rec.shape)}, source {tuple(source.shape)}")
    if row_labels is not None and len(row_labels) != n:
        raise ValueError(f"image_grid: {len(row_labels)} row labels for {n} images")
    columns = [("source", source), *reconstructions.items()]
    fig = Figure(figsize=(CELL_INCHES * len(columns), CELL_INCHES * n))
    for i in range(n):
        for j, (name, images) in enumerate(columns):
            ax = fig.add_subplot(n, len(columns), i * len(columns) + j + 1)
            ax.imshow(_to_hwc(images[i]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:  # one line per part of "method · setting" / "inverter+editor", so titles do not overlap
                ax.set_title(name.replace(" · ", "\n").replace("+", "\n+"), fontsize=7)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(str(row_labels[i])[:24], fontsize=7)
    return _save(fig, out_path)


def image_file_name(image_id: str) -> str:
    """File name of an image id in a run's image folders (``/`` in ids becomes ``__``; an id that
    already ends in ``.png`` keeps its one suffix)."""
    name = str(image_id).replace("/", "__").replace("\\", "__")
    return name if name.lower().endswith(".png") else name + ".png"


def _save_png(image: torch.Tensor, path: Path) -> None:
    """One (3, H, W) [0, 1] image as an 8-bit RGB PNG, by :func:`eval.metrics.masked.to_uint8`: the same
    truncation the ``piebench`` metrics score (PnPInversion's ``(x * 255).astype(uint8)``), not
    rounding, so the file reloaded (``uint8 / 255``) scores bit for bit what the tensor scored."""
    from PIL import Image

    from eval.metrics.masked import to_uint8

    path.parent.mkdir(parents=True, exist_ok=True)
    array = to_uint8(image.detach()).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array).save(path)


def save_run_images(run_dir: str | Path, image_id: str, source: torch.Tensor, reconstruction: torch.Tensor) -> None:
    """Keep one image's source and reconstruction ((3, H, W) or (1, 3, H, W) in [0, 1]) as PNGs in ``run_dir``
    (8 bits by truncation, :func:`_save_png`)."""
    base = Path(run_dir) / IMAGES_DIR
    name = image_file_name(image_id)
    _save_png(source.reshape(-1, *source.shape[-3:])[0], base / SOURCE_DIR / name)
    _save_png(reconstruction.reshape(-1, *reconstruction.shape[-3:])[0], base / RECON_DIR / name)


def _load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def run_image_grid(
    run_dirs: Mapping[str, str | Path], out_path: str | Path, max_images: int = 8, kind: str = RECON_DIR
) -> Path | None:
    """Grid of the source and the ``kind`` images (reconstructions, or ``edit``) that every run in
    ``run_dirs`` (method label -> run folder) that saved any saved; runs without such images (a
    method skipped everywhere) are left out. None if none."""
    folders = {m: Path(d) / IMAGES_DIR for m, d in run_dirs.items()}
    folders = {m: f for m, f in folders.items() if any((f / kind).glob("*.png"))}
    names = None
    for folder in folders.values():
        have = {p.name for p in (folder / kind).glob("*.png")}
        have &= {p.name for p in (folder / SOURCE_DIR).glob("*.png")}
        names = have if names is None else names & have
    names = sorted(names or [])[:max_images]
    if not names:
        return None
    first = next(iter(folders.values()))
    source = torch.stack([_load_png(first / SOURCE_DIR / n) for n in names])
    images = {m: torch.stack([_load_png(f / kind / n) for n in names]) for m, f in folders.items()}
    return image_grid(source, images, out_path, row_labels=[n.removesuffix(".png") for n in names])
