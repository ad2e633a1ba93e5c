"""The per-edit-type part of an edit report: ``edit_types.csv``, ``edit_types.md`` and a grid per type.

For each edit type (:mod:`eval.report.edit_types`): the number of pairs, then the paired verdicts
of every method against the reference on that type's pairs alone (the table of
:func:`eval.report.verdict_table.verdict_markdown`, the same columns as the table over all pairs),
and ``edits_type_<type>.png``: a few pairs of the type, one row each, the target prompt, the
source and each method's edit, read from the PNGs the runs saved (``task.save_images``,
:func:`eval.report.edit_plots.save_edit_images`).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from eval.report.edit_plots import EDIT_DIR
from eval.report.edit_types import EDIT_TYPE, add_edit_types, pairs_per_type, per_type_verdicts
from eval.report.paired import VERDICT_RULE
from eval.report.plots import CELL_INCHES, IMAGES_DIR, SOURCE_DIR, _load_png, _save, _to_hwc, image_file_name
from eval.report.summary_stats import label_methods
from eval.report.verdict_table import VERDICT_METRICS, verdict_markdown

TYPES_CSV = "edit_types.csv"
TYPES_MD = "edit_types.md"
GRID_PAIRS = 3  # pairs shown per edit type
PROMPT_WIDTH = 22  # characters per line of the target prompt in a grid


def edit_types_markdown(records: pd.DataFrame, reference: str | None, verdicts: pd.DataFrame,
                        heading: str = "##") -> str:
    """The section: per type its pair count and verdict table ('' without types)."""
    counts = pairs_per_type(records)
    if not counts:
        return ""
    parts = [f"{heading} Paired verdicts per edit type against `{reference}`", "",
             "Pairs per type: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + ".", ""]
    for kind, n in counts.items():
        parts += [f"{heading}# {kind} ({n} pair{'' if n == 1 else 's'})", ""]
        block = verdicts[verdicts[EDIT_TYPE] == kind].drop(columns=EDIT_TYPE)
        table = verdict_markdown(records[records[EDIT_TYPE] == kind], reference, block, heading=heading + "#",
                                 rules=False) if not block.empty else ""
        # drop the section's own heading line: the type's heading above says it
        parts += ["\n".join(table.splitlines()[2:]) if table else "_no method has a reference on these pairs_", ""]
    parts += [VERDICT_RULE + " Holm's correction runs within each type's table.", ""]
    return "\n".join(parts)


def _target_prompt(caption: str) -> str:
    return str(caption).split(" -> ", 1)[1] if " -> " in str(caption) else str(caption)


def type_grid(rows: Sequence[tuple[str, str]], run_dirs: Mapping[str, str | Path], out_path: str | Path,
              limit: int = GRID_PAIRS) -> Path | None:
    """PNG: one row per (image id, target prompt) in ``rows`` (the first ``limit`` kept), columns the
    target prompt, the source and each method's edit (method label -> run folder); pairs some method
    did not save are left out, methods that saved none of them too. None when no pair is left."""
    folders = {m: Path(d) / IMAGES_DIR for m, d in run_dirs.items()}
    folders = {m: f for m, f in folders.items() if any((f / EDIT_DIR / image_file_name(i)).is_file() for i, _ in rows)}
    kept = [(i, p) for i, p in rows if folders and all((f / EDIT_DIR / image_file_name(i)).is_file()
                                                      and (f / SOURCE_DIR / image_file_name(i)).is_file()
                                                      for f in folders.values())][:limit]
    if not kept:
        return None
    first = next(iter(folders.values()))
    columns = 2 + len(folders)
    fig = Figure(figsize=(CELL_INCHES * columns, CELL_INCHES * len(kept)))
    for r, (image, prompt) in enumerate(kept):
        name = image_file_name(image)
        cells = [("source", _load_png(first / SOURCE_DIR / name))]
        cells += [(m, _load_png(f / EDIT_DIR / name)) for m, f in folders.items()]
        text = fig.add_subplot(len(kept), columns, r * columns + 1)
        text.axis("off")
        text.text(0.0, 0.5, f"{image}\n→ " + "\n".join(textwrap.wrap(prompt, PROMPT_WIDTH)), fontsize=7,
                  va="center", ha="left", transform=text.transAxes)
        if r == 0:
            text.set_title("target prompt", fontsize=7)
        for c, (title, picture) in enumerate(cells):
            ax = fig.add_subplot(len(kept), columns, r * columns + c + 2)
            ax.imshow(_to_hwc(picture), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title.replace(" · ", "\n").replace("+", "\n+"), fontsize=7)
    return _save(fig, out_path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "type"


def type_grids(records: pd.DataFrame, out_dir: str | Path, per_type: int = GRID_PAIRS) -> list[Path]:
    """``edits_type_<type>[_<model>].png`` per edit type (and model, where several), the first
    ``per_type`` pairs (by image id) every method saved."""
    labelled = label_methods(records)
    if labelled.empty or EDIT_TYPE not in labelled.columns:
        return []
    out, paths = Path(out_dir), []
    models = list(dict.fromkeys(labelled["model"]))
    for model, block in labelled.groupby("model", sort=False):
        runs = {f"{r.method} · {r.setting}" if block["setting"].nunique() > 1 else r.method: r.run_dir
                for r in block.drop_duplicates("run_dir").itertuples()} if "run_dir" in block.columns else {}
        for kind, typed in block[block[EDIT_TYPE] != ""].groupby(EDIT_TYPE, sort=False):
            pairs = typed.drop_duplicates("image").sort_values("image")
            rows = [(str(i), _target_prompt(c)) for i, c in zip(pairs["image"], pairs["caption"])]
            suffix = f"_{_slug(str(model))}" if len(models) > 1 else ""
            grid = type_grid(rows, runs, out / f"edits_type_{_slug(str(kind))}{suffix}.png", per_type)
            if grid is not None:
                paths.append(grid)
    return paths


def write_edit_types(records: pd.DataFrame, out_dir: str | Path, reference: str | None) -> tuple[list[Path], str]:
    """Write ``edit_types.csv`` / ``edit_types.md`` and the grids into ``out_dir``; returns the paths
    and the Markdown section ('' and nothing written when no row has an edit type)."""
    typed = add_edit_types(records)
    if not (typed[EDIT_TYPE] != "").any():
        return [], ""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    verdicts = per_type_verdicts(typed, reference, [m for m, _ in VERDICT_METRICS])
    section = edit_types_markdown(typed, reference, verdicts)
    paths = [out / TYPES_CSV, out / TYPES_MD]
    verdicts.to_csv(paths[0], index=False)
    paths[1].write_text(section, encoding="utf-8")
    return paths + type_grids(typed, out), section
