"""``summary.md``: a run's tidy table (:mod:`eval.records`) as Markdown a person reads first.

One row per model / schedule / inverter, one column per metric: the mean over images with
status ``ok`` and their count ``n``; arrows give each metric's better direction. Below it, the
images that were not ok (failed / skipped) and the unavailable metrics, counted with reasons.
A run on a tiny random-weight model (adapter name starting with ``tiny``) opens with a banner:
its numbers exercise the pipeline and say nothing about image quality.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from eval.records import label_checkpoints

GROUP = ["model", "schedule", "inverter"]
SUMMARY_FILE = "summary.md"
TINY_PREFIX = "tiny"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def tiny_banner(df: pd.DataFrame) -> str | None:
    """The warning for tiny random-weight adapters, or None."""
    tiny = sorted({a for a in df.get("adapter", pd.Series(dtype=str)) if str(a).startswith(TINY_PREFIX)})
    if not tiny:
        return None
    return (
        f"> **Tiny random-weight model ({', '.join(tiny)}).** These numbers check that the "
        "benchmark runs end to end; they are not image quality and must not be compared with papers."
    )


def means_table(df: pd.DataFrame) -> str:
    """Mean (n) of every metric over ok rows, one row per model/schedule/inverter (a model name
    covering several checkpoints is split by checkpoint)."""
    df = label_checkpoints(df)
    metrics = list(dict.fromkeys(df["metric"]))
    better = df.drop_duplicates("metric").set_index("metric")["higher_is_better"].to_dict()
    ok = df[df["status"] == "ok"]
    stats = ok.groupby(GROUP + ["metric"])["value"].agg(["mean", "count"])
    header = GROUP + [f"{m} {'↑' if better[m] else '↓'}" for m in metrics]
    rows = []
    for key, _ in df.groupby(GROUP, sort=True):
        cells = list(key)
        for m in metrics:
            if (*key, m) in stats.index:
                mean, n = stats.loc[(*key, m)]
                cells.append(f"{_fmt(float(mean))} (n={int(n)})")
            else:
                cells.append("—")
        rows.append(cells)
    return markdown_table(header, rows)


def problems_table(df: pd.DataFrame) -> str | None:
    """Failed/skipped images (counted once per image) and unavailable metrics, with reasons."""
    rows = []
    for status in ("failed", "skipped"):
        part = df[df["status"] == status].drop_duplicates(GROUP + ["image", "reason"])
        for (*key, reason), grp in part.groupby(GROUP + ["reason"], sort=True):
            rows.append([*key, status, f"{grp['image'].nunique()} image(s)", reason])
    part = df[df["status"] == "unavailable"].drop_duplicates(GROUP + ["metric", "reason"])
    for (*key, metric, reason), _ in part.groupby(GROUP + ["metric", "reason"], sort=True):
        rows.append([*key, "unavailable", f"metric {metric}", reason])
    if not rows:
        return None
    return markdown_table(GROUP + ["status", "what", "reason"], rows)


def load_note(df: pd.DataFrame) -> str | None:
    """A line naming the runs timed under load (:mod:`eval.report.load`): their times are not the machine's."""
    from eval.report.load import LOAD_MARK, UNDER_LOAD_NOTE, under_load

    flagged = df[under_load(df).to_numpy()] if not df.empty else df
    if flagged.empty:
        return None
    groups = ", ".join("/".join(map(str, k)) for k in flagged.groupby(GROUP, sort=True).groups)
    return (f"> {LOAD_MARK} {UNDER_LOAD_NOTE}: {groups}: the load average exceeded what a lone run reaches "
            "(eval/machine.py); these times are not the machine's and are not compared.")


def summarize(df: pd.DataFrame, note: str | None = None, reference: str | None = None) -> str:
    """The whole ``summary.md`` text for a results table; with ``reference`` (a sweep's), the paired
    verdicts of every method against it follow (:mod:`eval.report.verdict_table`)."""
    parts = ["# Inversion benchmark summary", ""]
    banner = tiny_banner(df)
    if banner:
        parts += [banner, ""]
    if note:
        parts += [f"> {note}", ""]
    if df.empty:
        return "\n".join(parts + ["No results.", ""])
    first = df.iloc[0]
    runs = ", ".join(sorted(set(map(str, df["run_id"]))))
    parts += [
        f"Run {runs}; commit {first.get('git_commit', '?')}; device {first.get('device', '?')}, "
        f"dtype {first.get('dtype', '?')}; {df['image'].nunique()} image(s). "
        "Cells: mean over images with status ok (n = their count); ↑/↓: better direction.",
        "",
        means_table(df),
        "",
    ]
    loaded = load_note(df)
    if loaded:
        parts += [loaded, ""]
    problems = problems_table(df)
    parts += ["## Not ok", "", problems if problems else "Every image and metric is ok.", ""]
    if reference:
        from eval.report.verdict_table import verdict_markdown  # lazy: eval.report.tables imports this module

        verdicts = verdict_markdown(df, reference)
        parts += [verdicts] if verdicts else [f"No method to compare with the reference `{reference}`.", ""]
    return "\n".join(parts)


def write_summary(df: pd.DataFrame, run_dir: str | Path, note: str | None = None, reference: str | None = None) -> Path:
    """Write ``summary.md`` into ``run_dir`` (with paired verdicts against ``reference`` if given); returns its path."""
    path = Path(run_dir) / SUMMARY_FILE
    path.write_text(summarize(df, note, reference), encoding="utf-8")
    return path


def _mean(df: pd.DataFrame, metric: str) -> float | None:
    values = df[(df["metric"] == metric) & (df["status"] == "ok")]["value"].astype(float)
    return float(values.mean()) if not values.empty else None


def terminal_summary(df: pd.DataFrame, run_dir: str | Path) -> str:
    """Three lines for the terminal at the end of a run: what ran and how many images were ok,
    the headline means, and where the results are."""
    items = df.drop_duplicates("image")
    first = items.iloc[0] if not items.empty else None
    what = f"{first['model']}/{first['schedule']}/{first['inverter']}" if first is not None else "run"
    per_item = df.groupby("image")["status"].agg(lambda s: "ok" if (s == "ok").any() else s.iloc[0])
    counts = per_item.value_counts().to_dict()
    line1 = (f"{what}: {len(per_item)} item(s): {counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed, "
             f"{counts.get('skipped', 0)} skipped")
    parts = []
    for metric, label, unit in (("psnr", "PSNR", " dB"), ("psnr_gap_to_vae", "gap to VAE", " dB"),
                                ("time_invert_s", "invert", " s"), ("overhead_ratio", "x network", ""),
                                ("nfe_forward", "NFE", ""), ("edit_success", "edit success", ""),
                                ("clip_whole", "CLIP", ""), ("exact_image_psnr", "exact PSNR", " dB"),
                                ("chain_all_success", "chain success", ""), ("chain_time_s", "chain", " s"),
                                ("rare_concept_accuracy", "concept accuracy", ""), ("rare_concept_clip", "CLIP", ""),
                                ("rare_concept_time_s", "per concept", " s"), ("interp_valid_frac", "valid scenes", ""),
                                ("interp_lpips_step_mean", "LPIPS step", "")):
        value = _mean(df, metric)
        if value is not None:
            parts.append(f"{label} {_fmt(value)}{unit}")
    line2 = "  means: " + (", ".join(parts) if parts else "no ok values")
    folder = Path(run_dir)
    line3 = f"  results: {folder / 'results.csv'}  summary: {folder / SUMMARY_FILE}"
    return "\n".join([line1, line2, line3])
