"""The ``none`` logger: satisfies :class:`eval.records.RunLogger` and does nothing.

The run folder (results.csv, provenance.json, summary.md) is the record; use it when no
external tracker is wanted. ``conf/logger/none.yaml`` builds no logger at all, which is the same.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


class NoneLogger:
    """A :class:`~eval.records.RunLogger` that ignores everything."""

    def log_rows(self, rows: pd.DataFrame) -> None:
        return None

    def finish(self, records: pd.DataFrame, run_dir: Path, summary_markdown: str) -> None:
        return None
