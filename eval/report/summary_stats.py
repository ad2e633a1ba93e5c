"""What every report table is built from: method and setting labels, derived metrics, and per-group
means with clipped 95% confidence intervals, all from the tidy results table (``eval.records``).

Every number is a mean over images with its confidence interval (Student t, over images; never
pooled within a batch), clipped to what the metric can be (:func:`clipped_interval`: no negative
times or NFE, rates in [0, 1], no PSNR above the VAE ceiling from the interval alone) and left out
when fewer than :data:`MIN_N_FOR_INTERVAL` images have a value. Rows with status other than ``ok``
are counted, not averaged (:func:`summarize`).

Methods and settings are labelled from the table itself (:func:`label_methods`): ``method`` is the
inverter name plus the hyperparameters that differ between runs of that inverter
(``gnri[max_iters=1]``), and ``setting`` the schedule name plus whatever differs between runs of it
(steps, guidance, schedule fields), so a sweep aggregated from a Hydra multirun stays readable.

The rendering modules (:mod:`eval.report.tables`, :mod:`eval.report.paper_numbers`,
:mod:`eval.report.verdict_table`, ...) import this one; it imports none of them.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from eval.records import label_checkpoints

CI_LEVEL = 0.95
TIME_TOTAL = "time_total_s"  # derived: inversion + reconstruction seconds of one image (paper's time axis)
FAILURE_RATE = "failure_rate"  # derived: 1 per image more than FAILURE_GAP_DB under the VAE ceiling (or failed), else 0
FAILURE_GAP_DB = 3.0
VAE_ROW = "VAE ceiling"
MIN_N_FOR_INTERVAL = 3  # fewer images than this: no interval is shown (the t interval is meaningless)
# What a metric's mean can be: exact names first, then name prefixes and suffixes; anything else is unbounded.
BOUNDS: dict[str, tuple[float, float]] = {
    "edit_success": (0.0, 1.0), "latent_ks_stat": (0.0, 1.0), "ssim": (-1.0, 1.0), "bg_ssim": (-1.0, 1.0),
    "clip_score": (0.0, 100.0), "clip_whole": (0.0, 100.0), "clip_edited": (0.0, 100.0),
    "psnr": (0.0, math.inf), "psnr_vae_ceiling": (0.0, math.inf), "bg_psnr": (0.0, math.inf),
    "recon_psnr": (0.0, math.inf), "latent_rmse": (0.0, math.inf), "latent_var": (0.0, math.inf),
    "overhead_ratio": (1.0, math.inf),  # in-run: a method never spends less than its own network calls
    "overhead_ratio_bare": (0.0, math.inf), "non_network_share": (0.0, 1.0),
}
NONNEGATIVE_PREFIXES = ("time_", "nfe_", "lpips", "bg_lpips", "bg_mse", "residual_", "peak_memory", "structure_")
RATE_SUFFIXES = ("_rate", "_success", "_fraction")
CEILED = ("psnr", "recon_psnr")  # PSNRs of reconstructions, which the VAE ceiling bounds
GROUP = ("model", "setting", "method")
SETTING_FIELDS = ("num_steps", "guidance_scale", "true_cfg_scale")


def mean_ci(values: Iterable[float], level: float = CI_LEVEL) -> tuple[float, float, int]:
    """(mean, CI half-width, n) of the finite values; half-width NaN when n < 2."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, 0
    if n < 2:
        return float(x.mean()), math.nan, n
    half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean()), float(half), n


def metric_bounds(metric: str) -> tuple[float, float]:
    """(lowest, highest) value a mean of ``metric`` can take: see :data:`BOUNDS`; (-inf, inf) if unknown."""
    if metric in BOUNDS:
        return BOUNDS[metric]
    if metric.startswith(NONNEGATIVE_PREFIXES) or metric == TIME_TOTAL:
        return 0.0, math.inf
    if metric.endswith(RATE_SUFFIXES):
        return 0.0, 1.0
    return -math.inf, math.inf


def clipped_interval(
    metric: str, mean: float, half: float, n: int, ceiling: float | None = None
) -> tuple[float, float]:
    """The interval ``mean ± half`` clipped to :func:`metric_bounds` and, for a reconstruction PSNR, to
    the VAE ``ceiling`` (never below the mean itself); (nan, nan) when ``n`` < :data:`MIN_N_FOR_INTERVAL`
    or the half-width is not finite."""
    if n < MIN_N_FOR_INTERVAL or not (math.isfinite(mean) and math.isfinite(half)):
        return math.nan, math.nan
    low, high = metric_bounds(metric)
    if metric in CEILED and ceiling is not None and math.isfinite(ceiling):
        high = min(high, max(ceiling, mean))
    return max(mean - half, min(low, mean)), min(mean + half, max(high, mean))


def parse_params(text: Any) -> dict[str, Any]:
    """A JSON object column value (``inverter_params``, ...) as a dict; {} if empty or not an object."""
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _label_column(records: pd.DataFrame, key: str, sources: Sequence[str]) -> pd.Series:
    """For each distinct ``key`` value, label rows ``key[k=v,...]`` by the fields of ``sources`` that vary."""
    sub = records[[key, *sources]].astype(str)
    labels: dict[tuple[str, ...], str] = {}
    for name, block in sub.drop_duplicates().groupby(key, sort=False):
        flat = []
        for row in block.itertuples(index=False):
            d: dict[str, Any] = {}
            for src, value in zip(sources, row[1:]):
                d.update(parse_params(value) if src.endswith("_params") else {src: value})
            flat.append(d)
        settings = pd.DataFrame(flat).drop(columns=["name", "_target_", "_partial_"], errors="ignore")
        varying = [k for k in settings.columns if settings[k].astype(str).nunique() > 1]
        for row, d in zip(block.itertuples(index=False), flat):
            parts = [f"{k}={d.get(k)}" for k in varying]
            labels[tuple(row)] = f"{name}[{','.join(parts)}]" if parts else str(name)
    return pd.Series([labels[tuple(r)] for r in sub.itertuples(index=False)], index=records.index)


def label_methods(records: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``records`` with ``method`` and ``setting`` columns (see module docstring); a model
    name that covers several checkpoints is split by checkpoint (:func:`eval.records.label_checkpoints`)."""
    out = label_checkpoints(records).copy()
    if out.empty:
        out["method"], out["setting"] = pd.Series(dtype=str), pd.Series(dtype=str)
        return out
    inv_src = [c for c in ("inverter_params",) if c in out.columns]
    set_src = [c for c in ("schedule_params", *SETTING_FIELDS) if c in out.columns]
    out["method"] = _label_column(out, "inverter", inv_src) if inv_src else out["inverter"].astype(str)
    out["setting"] = _label_column(out, "schedule", set_src) if set_src else out["schedule"].astype(str)
    return out


def add_total_time(records: pd.DataFrame) -> pd.DataFrame:
    """Append ``time_total_s`` rows (invert + reconstruct of the same run and image) where both are ok."""
    parts = ("time_invert_s", "time_reconstruct_s")
    if TIME_TOTAL in set(records["metric"]):
        return records
    times = records[records["metric"].isin(parts) & (records["status"] == "ok")]
    keys = [c for c in ("run_id", "model", "schedule", "inverter", "image") if c in records.columns]
    both = times.groupby(keys, sort=False)["metric"].transform("nunique") == len(parts)
    times = times[both]
    if times.empty:
        return records
    total = times.groupby(keys, sort=False)["value"].sum()
    first = times.drop_duplicates(subset=keys).set_index(keys)
    first = first.assign(metric=TIME_TOTAL, value=total, higher_is_better=False, reason="").reset_index()
    return pd.concat([records, first[records.columns]], ignore_index=True)


def add_failure_rate(records: pd.DataFrame) -> pd.DataFrame:
    """Append ``failure_rate`` rows: per image 1 where the reconstruction is more than
    :data:`FAILURE_GAP_DB` under the VAE ceiling or the method failed on it, else 0; its mean is the
    share of catastrophic images that a mean PSNR hides. Skipped and unavailable images have none."""
    if FAILURE_RATE in set(records["metric"]):
        return records
    gaps = records[(records["metric"] == "psnr_gap_to_vae") & records["status"].isin(("ok", "failed"))]
    if gaps.empty:
        return records
    value = gaps["value"].astype(float)
    failed = (gaps["status"] == "failed") | (value > FAILURE_GAP_DB) | ~np.isfinite(value)
    rows = gaps.assign(metric=FAILURE_RATE, value=failed.astype(float), status="ok", reason="",
                       higher_is_better=False)
    return pd.concat([records, rows[records.columns]], ignore_index=True)


def summarize(records: pd.DataFrame, by: Sequence[str] = GROUP) -> pd.DataFrame:
    """One row per ``by`` x metric: mean, ci95, n (ok images), n_rows, counts per status, a reason."""
    df = add_failure_rate(add_total_time(label_methods(records)))
    keys = [*by, "metric"]
    cols = [*keys, "mean", "ci95", "ci_low", "ci_high", "n", "n_rows", "n_failed", "n_skipped", "n_unavailable",
            "n_infinite", "higher_is_better", "reason"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    value = df["value"].astype(float)
    infinite = (df["status"] == "ok") & np.isinf(value)  # e.g. the PSNR of two identical images
    value = value.where((df["status"] == "ok") & np.isfinite(value))
    bad_reason = df["reason"].astype(str).where((df["status"] != "ok") & (df["reason"].astype(str) != ""))
    work = df[keys].assign(
        value=value, failed=df["status"] == "failed", skipped=df["status"] == "skipped",
        unavailable=df["status"] == "unavailable", infinite=infinite, hib=df["higher_is_better"].astype(bool),
        why=bad_reason,
    )
    g = work.groupby(keys, sort=False, dropna=False)
    out = g.agg(mean=("value", "mean"), sd=("value", "std"), n=("value", "count"), n_rows=("value", "size"),
                n_failed=("failed", "sum"), n_skipped=("skipped", "sum"), n_unavailable=("unavailable", "sum"),
                n_infinite=("infinite", "sum"), higher_is_better=("hib", "first"), reason=("why", "first")).reset_index()
    n = out["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        tcrit = np.where(n > 1, stats.t.ppf(0.5 + CI_LEVEL / 2, np.maximum(n - 1, 1)), np.nan)
        out["ci95"] = tcrit * out["sd"].to_numpy(dtype=float) / np.sqrt(n)
    out["reason"] = out["reason"].fillna("")
    ceilings = out[out["metric"] == "psnr_vae_ceiling"].set_index(list(by))["mean"]
    low, high = [], []
    for r in out.itertuples(index=False):
        key = tuple(getattr(r, k) for k in by)
        ceiling = ceilings.get(key if len(by) > 1 else key[0]) if r.metric in CEILED else None
        lo, hi = clipped_interval(r.metric, r.mean, r.ci95, int(r.n), _scalar(ceiling))
        low.append(lo)
        high.append(hi)
    out["ci_low"], out["ci_high"] = low, high
    return out[cols]


def _scalar(value: Any) -> float | None:
    """A float from a lookup that may have found nothing, one value or several (the first)."""
    if value is None:
        return None
    if isinstance(value, pd.Series):
        return float(value.iloc[0]) if len(value) else None
    return float(value)


def vae_ceiling(df: pd.DataFrame) -> pd.DataFrame:
    """Mean VAE-ceiling PSNR per (model, setting), each image counted once."""
    ceil = df[(df["metric"] == "psnr_vae_ceiling") & (df["status"] == "ok")]
    ceil = ceil.drop_duplicates(subset=["model", "setting", "image"])
    rows = []
    for (model, setting), block in ceil.groupby(["model", "setting"], sort=False):
        mean, half, n = mean_ci(block["value"].astype(float))
        low, high = clipped_interval("psnr_vae_ceiling", mean, half, n)
        rows.append({"model": model, "setting": setting, "method": VAE_ROW, "metric": "psnr", "mean": mean,
                     "ci95": half, "ci_low": low, "ci_high": high, "n": n, "n_rows": len(block), "n_failed": 0, "n_skipped": 0, "n_unavailable": 0, "n_infinite": 0,
                     "higher_is_better": True, "reason": ""})
    return pd.DataFrame(rows)
