"""The paired verdict table (Markdown): every method against the reference, per regime.

One table per model x setting, one row per method, one column per metric of
:data:`VERDICT_METRICS` that the rows have: ``Δ [95% interval] · p (Holm) · verdict``. Rows timed
under load are marked † and get no timing verdict; exact-by-construction methods ‡
(:mod:`eval.report.fair`). The rule (:data:`eval.report.paired.VERDICT_RULE`) is printed under it.
"""

from __future__ import annotations

import math

import pandas as pd

from eval.report.fair import EXACT_MARK, EXACT_NOTE, EXACT_UNRANKED, fair_columns
from eval.report.load import LOAD_MARK, UNDER_LOAD_NOTE
from eval.report.markdown import markdown_table
from eval.report.paired import BETTER, NO_DIFFERENCE, VERDICT_RULE, WORSE
from eval.report.pairing import is_timing, paired_verdicts
from eval.report.summary_stats import FAILURE_RATE, TIME_TOTAL, label_methods

# (metric, header) in column order; absent metrics are dropped. psnr_gap_to_vae is psnr's mirror
# (the same ceiling per image): its verdict is psnr's, so it is not repeated here.
VERDICT_METRICS: tuple[tuple[str, str], ...] = (
    ("psnr", "PSNR"), (FAILURE_RATE, "fail rate"), ("lpips", "LPIPS"), ("ssim", "SSIM"), ("clip_score", "CLIP"),
    ("edit_success", "edit success"), ("bg_psnr", "bg PSNR"), ("bg_lpips", "bg LPIPS"), ("clip_whole", "CLIP target"),
    ("structure_distance", "structure dist."), ("structure_distance_standin", "structure dist. (stand-in)"),
    ("lpips_to_source", "LPIPS to source"),
    (TIME_TOTAL, "time"), ("time_invert_s", "invert time"), ("time_edit_s", "edit time"),
    ("overhead_ratio", "x network"),
)
DIGITS = 3


def _num(x: float) -> str:
    return f"{x:+.{DIGITS}g}" if math.isfinite(x) else "n/a"


def verdict_cell(row: pd.Series, bold: bool = True) -> str:
    """``Δ [low, high] · p · verdict`` of one comparison (the interval and p only where computed);
    ``better`` in bold unless ``bold`` is False (exact-by-construction rows)."""
    parts = [_num(float(row["mean_diff"]))]
    if math.isfinite(float(row["ci_low"])):
        parts[0] += f" [{_num(float(row['ci_low']))}, {_num(float(row['ci_high']))}]"
    if math.isfinite(float(row["p_holm"])):
        parts.append(f"p={float(row['p_holm']):.2g}")
    text = str(row["verdict"])
    parts.append(f"**{text}**" if text == BETTER and bold else text)
    return " · ".join(parts)


def verdict_counts(verdicts: pd.DataFrame, metric: str) -> dict[str, int]:
    """How many comparisons on ``metric`` got each verdict."""
    return verdicts[verdicts["metric"] == metric]["verdict"].value_counts().to_dict()


def verdict_markdown(records: pd.DataFrame, reference: str | None, verdicts: pd.DataFrame | None = None,
                     heading: str = "##", rules: bool = True) -> str:
    """The verdict section for ``records`` against ``reference`` ('' when there is nothing to compare);
    without ``rules`` the tables alone (no counts, marks' notes or verdict rule under them)."""
    if verdicts is None:
        verdicts = paired_verdicts(records, reference, [m for m, _ in VERDICT_METRICS])
    if verdicts.empty:
        return ""
    fair = fair_columns(label_methods(records)).set_index(["model", "setting", "method"])
    parts = [f"{heading} Paired verdicts against `{reference}`", ""]
    any_load = any_exact = False
    for (model, setting), block in verdicts.groupby(["model", "setting"], sort=False):
        shown = [(m, h) for m, h in VERDICT_METRICS if m in set(block["metric"])]
        refs = ", ".join(f"`{r}`" for r in dict.fromkeys(block["reference"]))
        up = block.drop_duplicates("metric").set_index("metric")["higher_is_better"].astype(bool)
        header = ["method", "n"] + [f"{h} {'↑' if up[m] else '↓'}" for m, h in shown]
        body = []
        for method, mblock in block.groupby("method", sort=False):
            cells = mblock.set_index("metric")
            exact = (model, setting, method) in fair.index and bool(fair.loc[(model, setting, method), "exact"])
            any_exact |= exact
            row = [f"{method} {EXACT_MARK}" if exact else method, str(int(cells["n_pairs"].max()))]
            for m, _ in shown:
                if m not in cells.index:
                    row.append("—")
                    continue
                loaded = bool(cells.loc[m, "under_load"])
                any_load |= loaded
                mark = f" {LOAD_MARK}" if loaded and is_timing(m) else ""
                row.append(verdict_cell(cells.loc[m], not (exact and m in EXACT_UNRANKED)) + mark)
            body.append(row)
        parts += [f"{heading}# {model} · {setting} (reference {refs})", "", markdown_table(header, body), ""]
    if not rules:
        return "\n".join(parts)
    counts = verdict_counts(verdicts, "psnr")
    if counts:
        parts.append(f"PSNR against `{reference}`: {counts.get(BETTER, 0)} better, {counts.get(WORSE, 0)} worse, "
                     f"{counts.get(NO_DIFFERENCE, 0)} with no detectable difference, "
                     f"{sum(counts.values()) - sum(counts.get(k, 0) for k in (BETTER, WORSE, NO_DIFFERENCE))} other.")
    if any_load:
        parts.append(f"{LOAD_MARK} {UNDER_LOAD_NOTE}: the machine's load exceeded what a lone run reaches "
                     "(eval/machine.py); its times are not compared.")
    if any_exact:
        parts.append(EXACT_NOTE + "; their reconstruction verdicts are not bold.")
    parts += [VERDICT_RULE, ""]
    return "\n".join(parts)
