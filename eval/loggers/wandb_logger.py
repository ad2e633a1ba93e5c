"""Weights & Biases logger: disabled by default; ``offline`` or ``online`` are opt-in.

Logs, all derived from the tidy table (:mod:`eval.records`):
- the run config (the ``config`` column's resolved config, plus the provenance columns);
- per image, as its rows arrive: ``image/<metric>`` scalars (status ok only);
- at the end: the whole table as ``results`` (a ``wandb.Table``), the paper-shaped table as
  ``paper_table``, ``summary/<model>/<setting>/<method>/<metric>`` means in the run summary,
  the summary Markdown (as HTML), the quality-vs-time plot, and every PNG in the run folder
  (image grids, plots) as ``wandb.Image``.
``wandb`` is imported lazily, at the first log call of a non-disabled logger. Offline runs are
written under ``dir`` (default: ``$WANDB_DIR`` or the working directory) as
``wandb/offline-run-*``; ``wandb sync`` uploads them later. Online needs ``wandb login``.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from eval.records import PROVENANCE_COLUMNS

MODES = ("disabled", "offline", "online")
PLOTS_DIR = "plots"


def _config_from(rows: pd.DataFrame) -> dict[str, Any]:
    """The resolved config (JSON column) and the provenance of the first row."""
    if rows.empty:
        return {}
    first = rows.iloc[0]
    config: dict[str, Any] = {}
    if isinstance(first.get("config"), str) and first["config"]:
        try:
            config = dict(json.loads(first["config"]))
        except (json.JSONDecodeError, TypeError, ValueError):
            config = {}
    prov = {k: first.get(k) for k in PROVENANCE_COLUMNS if k != "config" and k in rows.columns}
    for key in ("inverter_params", "schedule_params"):
        if isinstance(prov.get(key), str) and prov[key]:
            prov[key] = json.loads(prov[key])
    config["provenance"] = prov
    return config


def image_key(relative: Path) -> str:
    """A PNG's W&B key, two levels at most: ``images/<folder>/<name>`` (``images/source/cat``)."""
    folder = relative.parent.name or "run"
    return f"images/{folder}/{relative.stem}"


@dataclass
class WandbLogger:
    """A :class:`~eval.records.RunLogger` writing to W&B. ``mode``: disabled | offline | online."""

    mode: str = "disabled"
    project: str = "gnri-bench"
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    dir: str | None = None
    log_images: bool = True
    _run: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"logger wandb: mode must be one of {MODES}, got {self.mode!r}")

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    @property
    def run(self) -> Any:
        """The live ``wandb`` run (None before the first log call, or when disabled)."""
        return self._run

    def _start(self, rows: pd.DataFrame) -> Any:
        if self._run is not None:
            return self._run
        import wandb

        if self.dir:
            Path(self.dir).mkdir(parents=True, exist_ok=True)
        try:
            self._run = wandb.init(
                project=self.project, entity=self.entity, name=self.name, group=self.group,
                tags=list(self.tags) or None, dir=self.dir, mode=self.mode, config=_config_from(rows),
                reinit="create_new", settings=wandb.Settings(silent=True, console="off"),
            )
        except wandb.errors.UsageError as err:
            raise RuntimeError(
                f"logger wandb (mode={self.mode}): {err}; run `wandb login` or use logger=wandb_offline"
            ) from err
        return self._run

    def log_rows(self, rows: pd.DataFrame) -> None:
        """Per-image scalars ``image/<metric>`` of the ok rows."""
        if not self.enabled or rows.empty:
            return
        run = self._start(rows)
        ok = rows[rows["status"] == "ok"]
        data = {f"image/{m}": float(v) for m, v in zip(ok["metric"], ok["value"])}
        if data:
            run.log(data)

    def finish(self, records: pd.DataFrame, run_dir: Path, summary_markdown: str) -> None:
        """Tables, summary means, the Markdown summary, plots and PNGs; then close the run."""
        if not self.enabled:
            return
        import wandb

        from eval.report.tables import add_total_time, paper_table, summarize, TIME_TOTAL

        run = self._start(records)
        run_dir = Path(run_dir)
        data: dict[str, Any] = {"summary_markdown": wandb.Html(f"<pre>{html.escape(summary_markdown)}</pre>")}
        if not records.empty:
            data["results"] = wandb.Table(dataframe=records.drop(columns=["config"], errors="ignore").astype(str))
            data["paper_table"] = wandb.Table(dataframe=paper_table(records))
            for _, r in summarize(records).iterrows():
                run.summary[f"summary/{r['model']}/{r['setting']}/{r['method']}/{r['metric']}"] = r["mean"]
            if self.log_images and {"psnr", TIME_TOTAL} <= set(add_total_time(records)["metric"]):
                from eval.report.plots import quality_vs_time

                quality_vs_time(records, run_dir / PLOTS_DIR / "quality_vs_time.png")
        if self.log_images and run_dir.is_dir():
            for png in sorted(run_dir.rglob("*.png")):
                if "wandb" not in png.relative_to(run_dir).parts:
                    data[image_key(png.relative_to(run_dir))] = wandb.Image(str(png))
        run.log(data)
        folder = Path(run.dir).parent if getattr(run, "dir", None) else None
        run.finish()
        self._run = None
        if self.mode == "offline" and folder is not None:
            print(f"wandb: offline run in {folder}; upload it with: wandb sync {folder}", flush=True)
