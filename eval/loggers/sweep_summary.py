"""A Hydra callback: when a multirun ends, one summary for the whole sweep.

Registered in ``conf/config.yaml`` (``hydra.callbacks.sweep_summary``); Hydra calls
:meth:`SweepSummary.on_multirun_end` in the launching process after every job has returned,
whatever the launcher (basic, joblib, submitit, Ray). It reads every job's ``results.csv`` under
the sweep folder (:func:`eval.report.aggregate.load_results`), writes ``summary.md`` there (with the
paired verdicts against the sweep's ``reference``, :mod:`eval.report.verdict_table`), and,
when the sweep's logger is W&B (offline or online), logs one run named ``sweep-summary`` in the
sweep's group (the group every job of the sweep logged into) with the paper-shaped table and the
summary. It never raises: a sweep's results matter more than its summary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def sweep_group_of(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep's jobs (run.py uses the same rule): ``<date>_<time>`` folder names."""
    sweep = Path(sweep_dir).resolve()
    return f"{sweep.parent.name}_{sweep.name}"


class SweepSummary(Callback):
    """Writes ``<sweep dir>/summary.md`` and logs the sweep's W&B summary table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._summarize(config)
        except Exception:  # noqa: BLE001 - never fail a finished sweep
            log.exception("the sweep summary could not be written")

    def _summarize(self, config: DictConfig) -> None:
        from eval.report.aggregate import find_results, load_results
        from eval.summary import summarize, write_summary

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not find_results([sweep_dir]):
            return
        from eval.report.pairing import resolve_reference

        records = load_results([sweep_dir])
        reference = resolve_reference(records, config.get("reference"))
        path = write_summary(records, sweep_dir, reference=reference)
        log.info("sweep summary: %s (%d jobs)", path, records["run_dir"].nunique())
        logger = config.get("logger")
        if not logger or "WandbLogger" not in str(logger.get("_target_", "")) or logger.get("mode") == "disabled":
            return
        from eval.loggers.wandb_logger import WandbLogger

        options = OmegaConf.to_container(logger, resolve=False)
        options = {k: v for k, v in options.items() if k in ("mode", "project", "entity", "tags")}  # type: ignore[union-attr]
        summary_logger = WandbLogger(**options, name="sweep-summary", group=sweep_group_of(sweep_dir),
                                     dir=str(sweep_dir), log_images=False)
        summary_logger.finish(records.drop(columns=["run_dir"]), sweep_dir, summarize(records, reference=reference))
