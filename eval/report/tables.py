"""Paper-shaped tables (Markdown and CSV) from the tidy results table (``eval.records``).

Every number is a mean over images with its 95% confidence interval (Student t, over images;
never pooled within a batch), clipped to what the metric can be (:func:`clipped_interval`: no
negative times or NFE, rates in [0, 1], no PSNR above the VAE ceiling from the interval alone) and
left out when fewer than :data:`MIN_N_FOR_INTERVAL` images have a value. A mean is bold only when
the paired verdict against the reference method says ``better`` (:mod:`eval.report.paired`; never
from unpaired intervals); exact-by-construction methods are marked ‡ instead of bolded on their
reconstruction columns and a ``kept (latents)`` column says what each method stores
(:mod:`eval.report.fair`); time cells of runs timed under load are marked †
(:mod:`eval.report.load`). The rules are printed under every table. Rows with status other than
``ok`` are counted, not averaged: a cell shows ``n/a`` when no image has a value and a footnote
gives the reason.

Methods and settings are labelled from the table itself: ``method`` is the inverter name plus
the hyperparameters that differ between runs of that inverter (``gnri[max_iters=1]``), and
``setting`` the schedule name plus whatever differs between runs of it (steps, guidance, schedule
fields), so a sweep aggregated from a Hydra multirun stays readable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from eval.records import label_checkpoints
from eval.summary import tiny_banner

CI_LEVEL = 0.95
TIME_TOTAL = "time_total_s"  # derived: inversion + reconstruction seconds of one image (paper's time axis)
FAILURE_RATE = "failure_rate"  # derived: 1 per image more than FAILURE_GAP_DB under the VAE ceiling (or failed), else 0
FAILURE_GAP_DB = 3.0
VAE_ROW = "VAE ceiling"
# (metric, header, format) of the paper table, in column order; absent metrics are dropped (a
# reconstruction run has no edit columns, an edit run no reconstruction PSNR).
PAPER_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("psnr", "PSNR (dB)", "{:.2f}"),
    ("psnr_gap_to_vae", "gap to VAE (dB)", "{:.2f}"),
    (FAILURE_RATE, f"fail (> {FAILURE_GAP_DB:g} dB)", "{:.2f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("lpips_vgg", "LPIPS-VGG", "{:.4f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("clip_score", "CLIP", "{:.2f}"),
    ("edit_success", "edit success", "{:.2f}"),
    ("bg_psnr", "bg PSNR (dB)", "{:.2f}"),
    ("bg_ssim", "bg SSIM", "{:.4f}"),
    ("bg_lpips", "bg LPIPS", "{:.4f}"),
    ("bg_mse", "bg MSE", "{:.4g}"),
    ("structure_distance", "structure dist.", "{:.4g}"),
    ("lpips_to_source", "LPIPS to source", "{:.4f}"),
    ("clip_whole", "CLIP target", "{:.2f}"),
    ("clip_edited", "CLIP edited region", "{:.2f}"),
    ("recon_psnr", "recon PSNR (dB)", "{:.2f}"),
    (TIME_TOTAL, "time (s)", "{:.3g}"),
    ("time_invert_s", "invert (s)", "{:.3g}"),
    ("time_network_call_s", "network call (s)", "{:.3g}"),
    ("overhead_ratio", "x network", "{:.3g}"),
    ("overhead_ratio_bare", "x bare", "{:.3g}"),
    ("time_edit_s", "edit (s)", "{:.3g}"),
    ("nfe_forward", "NFE", "{:.4g}"),
    ("nfe_backward", "VJP", "{:.4g}"),
)
NOT_RANKED = ("time_network_call_s", "overhead_ratio_bare")  # the model's, not the method's: never bold
MIN_N_FOR_INTERVAL = 3  # fewer images than this: no interval is shown (the t interval is meaningless)
BOLD_RULE = ("**Bold**: better than the reference method by the paired verdict (paired bootstrap interval and "
             "Holm-corrected Wilcoxon test on the images both finished; rule below), never from overlapping unpaired "
             f"intervals; intervals are clipped to the metric's range and omitted for n < {MIN_N_FOR_INTERVAL}; "
             "`n` is the number of images with a result.")
# Reconstruction-quality columns on which an exact-by-construction method (eval.report.fair) is marked, never bold.
EXACT_UNRANKED = ("psnr", "psnr_gap_to_vae", FAILURE_RATE, "ssim", "lpips", "lpips_vgg", "clip_score", "recon_psnr")
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
DEFAULT_HIGHER = {"psnr": True, "psnr_vae_ceiling": True, "ssim": True, "clip_score": True}
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


def _vae_ceiling(df: pd.DataFrame) -> pd.DataFrame:
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


def paper_table(records: pd.DataFrame) -> pd.DataFrame:
    """Wide table: a row per model x setting x method (plus the VAE ceiling) with ``n`` (images with a
    result) and, per metric, ``<metric>``, ``<metric>_ci95``, ``<metric>_n``, ``<metric>_ci_low`` and
    ``<metric>_ci_high`` (the clipped interval; NaN when n < 3)."""
    summary = summarize(records)
    labelled = label_methods(records)
    summary = pd.concat([summary, _vae_ceiling(labelled)], ignore_index=True) if not labelled.empty else summary
    wanted = [m for m, _, _ in PAPER_COLUMNS if m in set(summary["metric"])]
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for _, r in summary[summary["metric"].isin(wanted)].iterrows():
        key = (r["model"], r["setting"], r["method"])
        row = rows.setdefault(key, dict(zip(("model", "setting", "method"), key)))
        m = r["metric"]
        row[m], row[f"{m}_ci95"], row[f"{m}_n"] = r["mean"], r["ci95"], r["n"]
        row[f"{m}_ci_low"], row[f"{m}_ci_high"] = r["ci_low"], r["ci_high"]
    images = _images_per_row(labelled)
    for key, row in rows.items():
        row["n"] = images.get(key, max((row.get(f"{m}_n", 0) for m in wanted), default=0))
    cols = ["model", "setting", "method", "n"] + [
        f"{m}{s}" for m in wanted for s in ("", "_ci95", "_n", "_ci_low", "_ci_high")]
    return pd.DataFrame(list(rows.values()), columns=cols)


def _images_per_row(labelled: pd.DataFrame) -> dict[tuple[str, str, str], int]:
    """(model, setting, method) -> distinct images with at least one ok row."""
    if labelled.empty:
        return {}
    ok = labelled[labelled["status"] == "ok"]
    counts = ok.groupby(["model", "setting", "method"], sort=False)["image"].nunique()
    return {tuple(k): int(v) for k, v in counts.items()}


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub pipe table (no dependency on ``tabulate``)."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in body]
    return "\n".join(lines)


def _cell(mean: float, half: float, low: float, high: float, fmt: str) -> str:
    """``mean ± half``, or ``mean [low, high]`` where clipping made the interval asymmetric; the mean
    alone without an interval (n < 3) or a zero-width one."""
    if not math.isfinite(mean):
        return "n/a"
    if not (math.isfinite(low) and math.isfinite(high)) or high - low <= 0:
        return fmt.format(mean)
    if math.isclose(mean - low, half, rel_tol=1e-9) and math.isclose(high - mean, half, rel_tol=1e-9):
        return f"{fmt.format(mean)} ± {fmt.format(half)}"
    return f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def paper_markdown(records: pd.DataFrame, title: str | None = None, reference: str | None = None,
                   verdicts: pd.DataFrame | None = None) -> str:
    """Markdown: one paper-style table per model x setting, footnotes and rules. A cell is bold only where
    the paired verdict of its method against ``reference`` (default: :func:`eval.report.pairing.resolve_reference`)
    is ``better``; ``verdicts`` (:func:`eval.report.pairing.paired_verdicts`) may be passed precomputed."""
    from eval.report.fair import EXACT_MARK, EXACT_NOTE, KEPT_HEADER, fair_columns, kept_cell
    from eval.report.load import LOAD_MARK, UNDER_LOAD_NOTE
    from eval.report.paired import BETTER, VERDICT_RULE
    from eval.report.pairing import is_timing, loaded_methods, paired_verdicts, resolve_reference

    if records.empty:
        return "_no results_\n"
    wide, summary = paper_table(records), summarize(records)
    present = [(m, h, f) for m, h, f in PAPER_COLUMNS if m in wide.columns]
    higher = {m: bool(g["higher_is_better"].iloc[0]) for m, g in summary.groupby("metric")}
    reference = resolve_reference(records, reference)
    if verdicts is None:
        ranked = [m for m, _, _ in present if m not in NOT_RANKED]
        verdicts = paired_verdicts(records, reference, ranked)
    better = {tuple(k) for k in verdicts.loc[verdicts["verdict"] == BETTER, ["model", "setting", "method", "metric"]]
              .itertuples(index=False)}
    labelled = label_methods(records)
    fair_flat = fair_columns(labelled)
    fair = fair_flat.set_index(["model", "setting", "method"])
    loaded = loaded_methods(records)
    parts = [f"## {title}\n"] if title else []
    banner = tiny_banner(records)
    if banner:
        parts += [banner, ""]
    marks = {"exact": False, "load": False, "kept": False}
    for (model, setting), block in wide.groupby(["model", "setting"], sort=False):
        cols = [(m, h, f) for m, h, f in present if _shown(block, summary, model, setting, m)]
        up = {m: higher.get(m, DEFAULT_HIGHER.get(m, False)) for m, _, _ in cols}
        show_kept = bool(((fair_flat["model"] == model) & (fair_flat["setting"] == setting)
                          & (fair_flat["source"] != "n/a")).any())
        marks["kept"] |= show_kept
        header = (["method"] + [f"{h} {'↑' if up[m] else '↓'}" for m, h, _ in cols]
                  + ([f"{KEPT_HEADER} ↓"] if show_kept else []) + ["n"])
        body = []
        for _, r in block.iterrows():
            method, key = str(r["method"]), (model, setting, str(r["method"]))
            exact = key in fair.index and bool(fair.loc[key, "exact"])
            is_loaded = key in loaded
            marks["exact"] |= exact
            marks["load"] |= is_loaded
            cells = [f"{method} {EXACT_MARK}" if exact else method]
            for m, _, fmt in cols:
                text = _cell(r[m], r[f"{m}_ci95"], r[f"{m}_ci_low"], r[f"{m}_ci_high"], fmt)
                if (*key, m) in better and not (exact and m in EXACT_UNRANKED):
                    text = f"**{text}**"
                if is_loaded and is_timing(m) and text != "n/a":
                    text = f"{text} {LOAD_MARK}"
                cells.append(text if method != VAE_ROW or m == "psnr" else "")
            if show_kept:
                cells.append(kept_cell(float(fair.loc[key, "kept"])) if key in fair.index else "")
            body.append(cells + [str(int(r["n"]))])
        parts += [f"### {model} · {setting}\n", markdown_table(header, body), ""]
    notes = _footnotes(summary)
    if notes:
        parts += ["Notes:", *notes, ""]
    parts.append(f"Mean ± {int(CI_LEVEL * 100)}% confidence interval over images (Student t). {BOLD_RULE}")
    if not verdicts.empty:
        parts += [f"Reference: `{reference}`.", VERDICT_RULE]
    else:
        parts.append(f"The reference `{reference}` is not among these methods: nothing is bold." if reference else
                     "No reference method in these runs: nothing is bold.")
    if marks["exact"]:
        parts.append(EXACT_NOTE + "; such rows are never bold on reconstruction columns.")
    if marks["kept"]:
        parts.append(f"`{KEPT_HEADER}`: latent-sized tensors (or per-step state) the method keeps to reconstruct; "
                     "`n/a`: not recorded.")
    if marks["load"]:
        parts.append(f"{LOAD_MARK} {UNDER_LOAD_NOTE}: the machine's load average exceeded what a lone run reaches "
                     "(eval/machine.py); these times are not compared.")
    if FAILURE_RATE in wide.columns:
        parts.append(f"`fail`: the share of images more than {FAILURE_GAP_DB:g} dB under the VAE ceiling (or on which "
                     "the method failed): a mean PSNR hides them.")
    if "overhead_ratio" in wide.columns:
        parts.append("`x network`: inversion time / the seconds spent inside the network during that inversion (the "
                     "same calls, the same run; forward and backward): 1 is the network alone, the rest is the "
                     "method's and the harness's own cost, so it never reads below 1. `network call`: the bare "
                     "network's seconds per forward pass, timed apart in the same run (what an ideal loop would "
                     "cost); `x bare`: inversion time / (NFE x network call + VJP x bare backward), the older ratio.")
    return "\n".join(parts) + "\n"


def _shown(block: pd.DataFrame, summary: pd.DataFrame, model: str, setting: str, metric: str) -> bool:
    """A column is shown if it has rows for this model x setting; ``nfe_backward`` only if any is non-zero."""
    if metric == "nfe_backward":
        return bool((block[metric].fillna(0) != 0).any())
    s = summary[(summary["model"] == model) & (summary["setting"] == setting) & (summary["metric"] == metric)]
    return not s.empty


def _footnotes(summary: pd.DataFrame) -> list[str]:
    """One line per metric that was unavailable, and per method x metric with failed/skipped images."""
    notes = []
    unavailable = summary[summary["n_unavailable"] > 0]
    for metric, block in unavailable.groupby("metric", sort=False):
        n, rows = int(block["n_unavailable"].sum()), int(block["n_rows"].sum())
        notes.append(f"- `{metric}` unavailable: {block['reason'].iloc[0]} ({n} of {rows} images, left out of the means)")
    infinite = summary[summary["n_infinite"] > 0] if "n_infinite" in summary.columns else summary.iloc[:0]
    for _, r in infinite.iterrows():
        notes.append(f"- {r['model']} · {r['setting']} · {r['method']}: `{r['metric']}` infinite on {int(r['n_infinite'])} "
                     f"of {int(r['n_rows'])} images (e.g. identical images' PSNR), left out of the mean")
    bad = summary[(summary["n_failed"] + summary["n_skipped"]) > 0]
    for _, r in bad.drop_duplicates(subset=["model", "setting", "method"]).iterrows():
        notes.append(
            f"- {r['model']} · {r['setting']} · {r['method']}: {r['n_failed']} failed, {r['n_skipped']} skipped "
            f"of {r['n_rows']} images ({r['reason']})"
        )
    return notes


def write_tables(records: pd.DataFrame, out_dir: str | Path, title: str | None = None,
                 reference: str | None = None, verdicts: pd.DataFrame | None = None) -> list[Path]:
    """Write ``summary.csv``, ``paper_table.csv`` and ``paper_table.md`` (with the paired verdicts against
    ``reference``, :mod:`eval.report.verdict_table`) into ``out_dir``; returns the paths.

    Runs of a paper preset (config ``paper_preset``) also get the paper's numbers beside theirs
    (:mod:`eval.report.paper_numbers`): ``<metric>_paper`` / ``<metric>_difference`` columns in
    ``paper_table.csv``, a section in ``paper_table.md`` and ``paper_comparison.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from eval.report.paper_numbers import add_paper_columns, comparison_markdown, paper_comparison

    paths = [out / "summary.csv", out / "paper_table.csv", out / "paper_table.md"]
    summarize(records).to_csv(paths[0], index=False)
    comparison = paper_comparison(records)  # runs of a paper preset: the paper's numbers beside ours
    add_paper_columns(paper_table(records), comparison).to_csv(paths[1], index=False)
    from eval.report.pairing import paired_verdicts, resolve_reference
    from eval.report.verdict_table import VERDICT_METRICS, verdict_markdown

    reference = resolve_reference(records, reference)
    verdicts = paired_verdicts(records, reference) if verdicts is None else verdicts
    shown = verdicts[verdicts["metric"].isin([m for m, _ in VERDICT_METRICS])]
    section = verdict_markdown(records, reference, shown)
    paths[2].write_text(paper_markdown(records, title, reference, verdicts) + ("\n" + section if section else "")
                        + ("\n" + comparison_markdown(comparison) if not comparison.empty else ""), encoding="utf-8")
    if not comparison.empty:
        paths.append(out / "paper_comparison.csv")
        comparison.to_csv(paths[-1], index=False)
    return paths
