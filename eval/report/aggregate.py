"""Aggregate several run folders (e.g. a Hydra multirun directory) into one table and its plots.

Every ``results.csv`` found under the given paths is read with :func:`eval.records.read_records`
and concatenated (each row keeps its ``run_id``; ``run_dir`` is added). A folder holds one job; a
job run again into the same folder resumes it: its rows are keyed by unit (``unit_key``) and
each unit is counted once, whichever run computed it. Files written before unit keys existed keep
only their newest run (with a warning), so that no image is counted twice. Means and 95% confidence
intervals are over images, per model x setting x method (:mod:`eval.report.summary_stats`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from eval.records import RESULTS_FILE, read_records
from eval.report.edit_plots import edit_tradeoff, run_edit_grid
from eval.report.edit_type_report import write_edit_types
from eval.report.leaderboard import GAP, write_leaderboard
from eval.report.pairing import paired_verdicts, resolve_reference
from eval.report.scorers import add_scorers
from eval.report.plots import convergence, convergence_from_records, quality_vs_time, run_image_grid
from eval.report.summary_stats import TIME_TOTAL, add_total_time, label_methods, mean_ci
from eval.report.tables import write_tables

COMBINED_FILE = "results_all.csv"
VERDICTS_FILE = "paired_verdicts.csv"


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``results.csv`` under ``paths`` (a file itself, or searched recursively), sorted, unique."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file():
            found.add(p.resolve())
        elif p.is_dir():
            found.update(f.resolve() for f in p.rglob(RESULTS_FILE))
        else:
            raise FileNotFoundError(f"aggregate: {p} does not exist")
    return sorted(found)


def load_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """All rows of all ``results.csv`` under ``paths``, with a ``run_dir`` column."""
    files = find_results(paths)
    frames = []
    for f in files:
        df = read_records(f)
        if not df.empty:
            frames.append(newest_run_only(df, f).assign(run_dir=str(f.parent)))
    if not frames:
        where = [str(p) for p in files] or "the given paths"
        raise ValueError(f"aggregate: no rows in any {RESULTS_FILE} under {where}")
    return pd.concat(frames, ignore_index=True)


UNIT_FIELDS = ("model", "schedule", "inverter", "inverter_params", "schedule_params", "checkpoint", "image",
               "caption", "guidance_scale", "true_cfg_scale", "seed", "batch_size", "metric")


def newest_run_only(records: pd.DataFrame, source: Path) -> pd.DataFrame:
    """One table's rows, each unit once: a file with unit keys (written by the resumable store)
    holds each unit once already, across the runs that resumed it; an older file without them
    (a job's ``results.csv``, or a committed ``results_all.csv.gz`` of many jobs) keeps, per
    unit (:data:`UNIT_FIELDS`: model, schedule, inverter and its parameters, image, ... metric),
    the row of its newest run (``run_id``s sort by start time)."""
    if "unit_key" in records.columns and records["unit_key"].astype(str).ne("").all():
        return records.drop_duplicates(["unit_key", "metric"], keep="last")
    fields = [f for f in UNIT_FIELDS if f in records.columns]
    ordered = records.assign(_run=records["run_id"].astype(str)).sort_values("_run", kind="stable")
    kept = ordered.drop_duplicates(fields, keep="last").drop(columns="_run").sort_index()
    if len(kept) < len(records):
        warnings.warn(f"aggregate: {source} has no unit keys; {len(records) - len(kept)} rows repeat a unit "
                      "of a newer run and were dropped", stacklevel=2)
    return kept


@dataclass
class AggregateOutput:
    """Paths of what :func:`aggregate` wrote."""

    combined: Path
    tables: list[Path]
    plots: list[Path] = field(default_factory=list)


def aggregate(
    paths: Iterable[str | Path], out_dir: str | Path, title: str | None = None, sweep_param: str | None = None,
    reference: str | None = None,
) -> AggregateOutput:
    """Write the combined rows, ``summary.csv``, ``paper_table.{csv,md}`` and plots into ``out_dir``.

    Paired verdicts against ``reference`` (None: the runs' configured ``reference``, else ``ddim`` if
    present, :func:`eval.report.pairing.resolve_reference`) go into ``paper_table.md`` and
    ``paired_verdicts.csv``; the leaderboard into ``leaderboard.md``, ``leaderboard.csv`` and
    ``leaderboard_<regime>.png`` (:mod:`eval.report.leaderboard`; reconstruction runs with a gap to
    the VAE ceiling only).

    ``quality_vs_time.png`` is drawn when PSNR and times are present; with ``sweep_param`` (an
    inverter hyperparameter swept across the runs, e.g. ``max_iters``) also ``convergence.png``;
    ``reconstructions_<model>.png`` per model whose runs kept their images
    (:func:`eval.report.plots.save_run_images`). Edit runs (``task=edit``) add the paper's editing
    figure ``edit_tradeoff.png`` (CLIP score against LPIPS to the source; background PSNR
    against edit success in ``edit_background.png``) and ``edits_<model>.png`` (source, then each
    method's edit). Edit pairs with an edit type (:mod:`eval.report.edit_types`) add the verdicts per
    type (``edit_types.csv``, ``edit_types.md``, also appended to ``paper_table.md``) and a grid per
    type, ``edits_type_<type>.png`` (:mod:`eval.report.edit_type_report`).
    """
    records = add_scorers(load_results(paths))  # each row names the model that scored it
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    combined = out / COMBINED_FILE
    records.to_csv(combined, index=False)
    reference = resolve_reference(records, reference)
    verdicts = paired_verdicts(records, reference)
    result = AggregateOutput(combined, write_tables(records, out, title, reference, verdicts))
    if not verdicts.empty:
        result.tables.append(out / VERDICTS_FILE)
        verdicts.to_csv(result.tables[-1], index=False)
    by_type, section = write_edit_types(records, out, reference)
    if section:  # edit runs: the verdicts per edit type under the table over all pairs
        table = out / "paper_table.md"
        table.write_text(table.read_text(encoding="utf-8") + "\n" + section, encoding="utf-8")
    result.tables.extend(p for p in by_type if p.suffix != ".png")
    result.plots.extend(p for p in by_type if p.suffix == ".png")
    metrics = set(add_total_time(records)["metric"])
    if GAP in metrics:
        board = write_leaderboard(records, out, reference, title)
        result.tables.extend(p for p in board if p.suffix != ".png")
        result.plots.extend(p for p in board if p.suffix == ".png")
    if {"psnr", TIME_TOTAL} <= metrics:
        result.plots.append(quality_vs_time(records, out / "quality_vs_time.png"))
    if sweep_param:
        frame = convergence_from_records(records, sweep_param)
        if frame.empty:
            raise ValueError(f"aggregate: no run has inverter parameter {sweep_param!r} with psnr/residual rows")
        ceiling = records[(records["metric"] == "psnr_vae_ceiling") & (records["status"] == "ok")]
        ceiling = ceiling.drop_duplicates(subset=["model", "image"])["value"].astype(float)
        value = mean_ci(ceiling)[0] if records["model"].nunique() == 1 and not ceiling.empty else None
        result.plots.append(convergence(frame, out / "convergence.png", ceiling=value))
    labelled = label_methods(records)
    for model, block in labelled.groupby("model", sort=False):
        runs = {f"{r.method} · {r.setting}" if block["setting"].nunique() > 1 else r.method: r.run_dir
                for r in block.drop_duplicates("run_dir").itertuples()}
        grids = (run_image_grid(runs, out / f"reconstructions_{model}.png"),
                 run_edit_grid(runs, out / f"edits_{model}.png"))
        result.plots.extend(g for g in grids if g is not None)
    for name, y, x in (("edit_tradeoff", "clip_whole", "lpips_to_source"), ("edit_background", "bg_psnr", "edit_success")):
        if {x, y} <= metrics:
            fig = edit_tradeoff(records, out / f"{name}.png", y=y, x=x)
            if fig is not None:
                result.plots.append(fig)
    return result
