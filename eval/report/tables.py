"""Paper-shaped tables (Markdown and CSV) from the tidy results table (``eval.records``).

The numbers come from :mod:`eval.report.summary_stats`: every one is a mean over images with its
95% confidence interval (Student t, over images; never pooled within a batch), clipped to what the
metric can be and left out when fewer than :data:`MIN_N_FOR_INTERVAL` images have a value; methods
and settings are labelled from the table itself (``gnri[max_iters=1]``). A mean is bold only when
the paired verdict against the reference method says ``better`` (:mod:`eval.report.paired`; never
from unpaired intervals); exact-by-construction methods are marked ‡ instead of bolded on their
reconstruction columns and a ``kept (latents)`` column says what each method stores
(:mod:`eval.report.fair`); time cells of runs timed under load are marked †
(:mod:`eval.report.load`). The rules are printed under every table. Rows with status other than
``ok`` are counted, not averaged: a cell shows ``n/a`` when no image has a value and a footnote
gives the reason.

The names of :mod:`eval.report.summary_stats` and :func:`eval.report.markdown.markdown_table` are
importable from here too (``__all__``), as they were before they moved there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from eval.report.fair import EXACT_MARK, EXACT_NOTE, EXACT_UNRANKED, KEPT_HEADER, fair_columns, kept_cell
from eval.report.load import LOAD_MARK, UNDER_LOAD_NOTE
from eval.report.mask_note import no_mask_note
from eval.report.markdown import markdown_table
from eval.report.paired import BETTER, VERDICT_RULE
from eval.report.pairing import is_timing, loaded_methods, paired_verdicts, resolve_reference
from eval.report.paper_numbers import add_paper_columns, comparison_markdown, paper_comparison
from eval.report.scorers import scorer_notes
from eval.report.summary_stats import (
    BOUNDS,
    CEILED,
    CI_LEVEL,
    FAILURE_GAP_DB,
    FAILURE_RATE,
    GROUP,
    MIN_N_FOR_INTERVAL,
    NONNEGATIVE_PREFIXES,
    RATE_SUFFIXES,
    SETTING_FIELDS,
    TIME_TOTAL,
    VAE_ROW,
    add_failure_rate,
    add_total_time,
    clipped_interval,
    label_methods,
    mean_ci,
    metric_bounds,
    parse_params,
    summarize,
    vae_ceiling,
)
from eval.report.verdict_table import VERDICT_METRICS, verdict_markdown
from eval.summary import tiny_banner

__all__ = [
    "BOLD_RULE", "BOUNDS", "CEILED", "CI_LEVEL", "DEFAULT_HIGHER", "EXACT_UNRANKED", "FAILURE_GAP_DB", "FAILURE_RATE",
    "GROUP", "MIN_N_FOR_INTERVAL", "NONNEGATIVE_PREFIXES", "NOT_RANKED", "PAPER_COLUMNS", "RATE_SUFFIXES",
    "SETTING_FIELDS", "TIME_TOTAL", "VAE_ROW", "add_failure_rate", "add_total_time", "clipped_interval",
    "label_methods", "markdown_table", "mean_ci", "metric_bounds", "paper_markdown", "paper_table", "parse_params",
    "summarize", "vae_ceiling", "write_tables",
]

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
    ("structure_distance_standin", "structure dist. (stand-in: world CLIP ViT)", "{:.4g}"),
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
    # task=interpolate, task=edit_chain, task=seed_select: their summary rows (the others stay in summary.csv)
    ("interp_valid_frac", "valid scenes", "{:.2f}"),
    ("interp_clip_either", "CLIP to either", "{:.2f}"),
    ("interp_norm_dev", "off the shell", "{:.3f}"),
    ("interp_norm_dev_ends", "ends off the shell", "{:.3f}"),
    ("interp_lpips_step_mean", "LPIPS step", "{:.4f}"),
    ("interp_psnr_start", "PSNR start (dB)", "{:.2f}"),
    ("interp_psnr_end", "PSNR end (dB)", "{:.2f}"),
    ("chain_final_success", "final edit success", "{:.2f}"),
    ("chain_all_success", "every edit succeeds", "{:.2f}"),
    ("chain_final_bg_drift_psnr", "final bg drift PSNR (dB)", "{:.2f}"),
    ("chain_time_s", "chain time (s)", "{:.3g}"),
    ("rare_concept_accuracy", "accuracy", "{:.3f}"),
    ("rare_concept_accuracy_head", "head", "{:.3f}"),
    ("rare_concept_accuracy_medium", "medium", "{:.3f}"),
    ("rare_concept_accuracy_tail", "tail", "{:.3f}"),
    ("rare_concept_clip", "CLIP", "{:.2f}"),
    ("rare_concept_time_s", "time per concept (s)", "{:.3g}"),
)
NOT_RANKED = ("time_network_call_s", "overhead_ratio_bare")  # the model's, not the method's: never bold
BOLD_RULE = ("**Bold**: better than the reference method by the paired verdict (paired bootstrap interval and "
             "Holm-corrected Wilcoxon test on the images both finished; rule below), never from overlapping unpaired "
             f"intervals; intervals are clipped to the metric's range and omitted for n < {MIN_N_FOR_INTERVAL}; "
             "`n` is the number of images with a result.")
DEFAULT_HIGHER = {"psnr": True, "psnr_vae_ceiling": True, "ssim": True, "clip_score": True}


def paper_table(records: pd.DataFrame) -> pd.DataFrame:
    """Wide table: a row per model x setting x method (plus the VAE ceiling) with ``n`` (images with a
    result) and, per metric, ``<metric>``, ``<metric>_ci95``, ``<metric>_n``, ``<metric>_ci_low`` and
    ``<metric>_ci_high`` (the clipped interval; NaN when n < 3)."""
    summary = summarize(records)
    labelled = label_methods(records)
    summary = pd.concat([summary, vae_ceiling(labelled)], ignore_index=True) if not labelled.empty else summary
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


@dataclass
class _Marking:
    """What marks a cell of the paper table, and which marks the tables used (for the rules under them)."""

    better: set[tuple[str, ...]]  # (model, setting, method, metric) whose paired verdict is ``better``
    fair: pd.DataFrame  # fair_columns, indexed by (model, setting, method)
    loaded: set[tuple[str, str, str]]  # methods timed under load
    higher: dict[str, bool]  # metric -> higher is better, from the summary
    used: dict[str, bool] = field(default_factory=lambda: {"exact": False, "load": False, "kept": False})


def paper_markdown(records: pd.DataFrame, title: str | None = None, reference: str | None = None,
                   verdicts: pd.DataFrame | None = None) -> str:
    """Markdown: one paper-style table per model x setting, footnotes and rules. A cell is bold only where
    the paired verdict of its method against ``reference`` (default: :func:`eval.report.pairing.resolve_reference`)
    is ``better``; ``verdicts`` (:func:`eval.report.pairing.paired_verdicts`) may be passed precomputed."""
    if records.empty:
        return "_no results_\n"
    wide, summary = paper_table(records), summarize(records)
    present = [(m, h, f) for m, h, f in PAPER_COLUMNS if m in wide.columns]
    reference = resolve_reference(records, reference)
    if verdicts is None:
        ranked = [m for m, _, _ in present if m not in NOT_RANKED]
        verdicts = paired_verdicts(records, reference, ranked)
    better = {tuple(k) for k in verdicts.loc[verdicts["verdict"] == BETTER, ["model", "setting", "method", "metric"]]
              .itertuples(index=False)}
    fair_flat = fair_columns(label_methods(records))
    higher = {m: bool(g["higher_is_better"].iloc[0]) for m, g in summary.groupby("metric")}
    marking = _Marking(better, fair_flat.set_index(["model", "setting", "method"]), loaded_methods(records), higher)
    parts = [f"## {title}\n"] if title else []
    banner = tiny_banner(records)
    if banner:
        parts += [banner, ""]
    for (model, setting), block in wide.groupby(["model", "setting"], sort=False):
        table = _setting_table((model, setting), block, summary, present, fair_flat, marking)
        parts += [f"### {model} · {setting}\n", table, ""]
    rules = _rules(summary, wide, reference, verdicts, marking.used)
    return "\n".join(parts + scorer_notes(records) + no_mask_note(records) + rules) + "\n"


def _setting_table(where: tuple[str, str], block: pd.DataFrame, summary: pd.DataFrame,
                   present: list[tuple[str, str, str]], fair_flat: pd.DataFrame, marking: _Marking) -> str:
    """The Markdown table of one model x setting (``where``; ``block``: its rows of :func:`paper_table`): the
    columns it has rows for, each with its direction arrow, the kept-latents column where known, ``n``."""
    model, setting = where
    cols = [(m, h, f) for m, h, f in present if _shown(block, summary, model, setting, m)]
    up = {m: marking.higher.get(m, DEFAULT_HIGHER.get(m, False)) for m, _, _ in cols}
    show_kept = bool(((fair_flat["model"] == model) & (fair_flat["setting"] == setting)
                      & (fair_flat["source"] != "n/a")).any())
    marking.used["kept"] |= show_kept
    header = (["method"] + [f"{h} {'↑' if up[m] else '↓'}" for m, h, _ in cols]
              + ([f"{KEPT_HEADER} ↓"] if show_kept else []) + ["n"])
    body = [_method_row(r, (model, setting, str(r["method"])), cols, show_kept, marking) for _, r in block.iterrows()]
    return markdown_table(header, body)


def _method_row(r: pd.Series, key: tuple[str, str, str], cols: list[tuple[str, str, str]], show_kept: bool,
                marking: _Marking) -> list[str]:
    """One method's cells: its name (‡ when exact by construction), a cell per column (bold where the
    paired verdict says ``better``, † on times taken under load; the VAE row shows PSNR only), its kept
    latents and ``n``."""
    method, fair = key[2], marking.fair
    exact = key in fair.index and bool(fair.loc[key, "exact"])
    is_loaded = key in marking.loaded
    marking.used["exact"] |= exact
    marking.used["load"] |= is_loaded
    cells = [f"{method} {EXACT_MARK}" if exact else method]
    for m, _, fmt in cols:
        text = _cell(r[m], r[f"{m}_ci95"], r[f"{m}_ci_low"], r[f"{m}_ci_high"], fmt)
        if (*key, m) in marking.better and not (exact and m in EXACT_UNRANKED):
            text = f"**{text}**"
        if is_loaded and is_timing(m) and text != "n/a":
            text = f"{text} {LOAD_MARK}"
        cells.append(text if method != VAE_ROW or m == "psnr" else "")
    if show_kept:
        cells.append(kept_cell(float(fair.loc[key, "kept"])) if key in fair.index else "")
    return cells + [str(int(r["n"]))]


def _rules(summary: pd.DataFrame, wide: pd.DataFrame, reference: str | None, verdicts: pd.DataFrame,
           used: dict[str, bool]) -> list[str]:
    """The lines under the tables: footnotes, the interval and bold rules, the reference, and the
    meaning of each mark (‡, kept latents, †) and column (``fail``, ``x network``) the tables used."""
    parts = []
    notes = _footnotes(summary)
    if notes:
        parts += ["Notes:", *notes, ""]
    parts.append(f"Mean ± {int(CI_LEVEL * 100)}% confidence interval over images (Student t). {BOLD_RULE}")
    if not verdicts.empty:
        parts += [f"Reference: `{reference}`.", VERDICT_RULE]
    else:
        parts.append(f"The reference `{reference}` is not among these methods: nothing is bold." if reference else
                     "No reference method in these runs: nothing is bold.")
    if used["exact"]:
        parts.append(EXACT_NOTE + "; such rows are never bold on reconstruction columns.")
    if used["kept"]:
        parts.append(f"`{KEPT_HEADER}`: latent-sized tensors (or per-step state) the method keeps to reconstruct; "
                     "`n/a`: not recorded.")
    if used["load"]:
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
    return parts


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
    paths = [out / "summary.csv", out / "paper_table.csv", out / "paper_table.md"]
    summarize(records).to_csv(paths[0], index=False)
    comparison = paper_comparison(records)  # runs of a paper preset: the paper's numbers beside ours
    add_paper_columns(paper_table(records), comparison).to_csv(paths[1], index=False)
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
