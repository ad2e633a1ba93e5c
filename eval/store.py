"""A run folder's ``results.csv`` as a resumable store of finished units.

Contract (issue "Sweeps that scale and survive"):

- every row carries its unit's content key (``unit_key``); a unit is finished when all of its
  rows are in the file (its row count is known from the metric set, which is part of the key);
- a unit's rows are written with one ``write`` and an ``fsync``: a kill (SIGINT, SIGTERM,
  SIGKILL) loses at most the unit in flight, and a half-written last line is dropped on reading
  (:func:`eval.records.read_records`), never parsed as data;
- :meth:`ResultsStore.begin` (rank 0) consolidates what earlier runs left: complete units of the
  current plan stay, incomplete ones are dropped, rows of other settings move to
  ``results.stale.csv`` (with a warning), and per-rank files of an interrupted data-parallel run
  are merged; ``resume=false`` moves the old table to ``results.previous.csv`` and starts afresh;
- with N processes each rank appends to ``results.rank<r>.csv``; :meth:`ResultsStore.finish`
  waits for every rank and rank 0 writes one ``results.csv`` in plan order (atomic rename), so
  the table equals a single-process run's in every non-timing value.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from eval.distributed import Shard
from eval.records import RESULTS_FILE, read_records, to_frame
from eval.units import Unit

log = logging.getLogger(__name__)
STALE_FILE = "results.stale.csv"
PREVIOUS_FILE = "results.previous.csv"
RANK_GLOB = "results.rank*.csv"


def rank_file(rank: int) -> str:
    return f"results.rank{rank}.csv"


def atomic_write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` through a temporary file and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            frame.to_csv(handle, index=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_unit(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append one unit's rows with a single write + fsync (header when the file is new)."""
    if not rows:
        return
    header = not path.exists() or path.stat().st_size == 0
    text = to_frame(rows).to_csv(index=False, header=header)
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class ResultsStore:
    """The results of one run folder for one plan of units (see the module docstring)."""

    def __init__(self, out_dir: Path | None, shard: Shard | None = None) -> None:
        self.out_dir = out_dir
        self.shard = shard or Shard()
        self.rows: list[dict[str, Any]] = []  # this process's new rows (also the table without out_dir)

    @property
    def table_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / RESULTS_FILE

    @property
    def write_path(self) -> Path | None:
        if self.out_dir is None:
            return None
        return self.out_dir / (RESULTS_FILE if self.shard.world_size == 1 else rank_file(self.shard.rank))

    def begin(self, units: Sequence[Unit], rows_per_unit: int, resume: bool = True) -> set[str]:
        """Prepare the folder (rank 0) and return the keys of the finished units."""
        if self.out_dir is None:
            return set()
        if self.shard.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                self._start_afresh()
            self.consolidate(units, rows_per_unit)
        self.shard.barrier()
        table = read_records(self.table_path)  # type: ignore[arg-type]
        return set(table["unit_key"].astype(str)) if not table.empty else set()

    def _start_afresh(self) -> None:
        assert self.out_dir is not None and self.table_path is not None
        if self.table_path.exists():
            os.replace(self.table_path, self.out_dir / PREVIOUS_FILE)
            log.info("resume=false: the old table is kept as %s", PREVIOUS_FILE)
        for stale in self.out_dir.glob(RANK_GLOB):
            stale.unlink()

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Record one finished unit."""
        if self.write_path is not None:
            append_unit(self.write_path, rows)
        self.rows.extend(rows)

    def consolidate(self, units: Sequence[Unit], rows_per_unit: int) -> pd.DataFrame:
        """Merge results.csv and rank files into results.csv: the plan's complete units, in plan
        order, once each; other settings' rows go to ``results.stale.csv``. Rank 0 only."""
        assert self.out_dir is not None and self.table_path is not None
        sources = [self.table_path, *sorted(self.out_dir.glob(RANK_GLOB))]
        frames = [f for f in (read_records(p) for p in sources if p.exists()) if not f.empty]
        if not frames:
            return to_frame([])
        rows = pd.concat(frames, ignore_index=True).drop_duplicates(["unit_key", "metric"], keep="first")
        order = {u.key: u.index for u in units}
        index = rows["unit_key"].astype(str).map(order)
        stale = rows[index.isna()]
        if not stale.empty:
            path = self.out_dir / STALE_FILE
            stale.to_csv(path, mode="a", header=not path.exists(), index=False)
            log.warning("%d rows of other settings (or an older format) moved to %s", len(stale), path)
        rows = rows[index.notna()].assign(_order=index[index.notna()].astype(int))
        counts = rows.groupby("unit_key")["metric"].transform("size")
        partial = rows[counts != rows_per_unit]
        if not partial.empty:
            log.warning("dropped %d incomplete unit(s) (interrupted mid-write)", partial["unit_key"].nunique())
        rows = rows[counts == rows_per_unit].sort_values("_order", kind="stable").drop(columns="_order")
        table = rows.reset_index(drop=True).reindex(columns=list(to_frame([]).columns))
        atomic_write_csv(table, self.table_path)
        for file in sources[1:]:
            file.unlink(missing_ok=True)
        return table

    def finish(self, units: Sequence[Unit], rows_per_unit: int) -> pd.DataFrame:
        """Wait for every rank; rank 0 writes and returns the whole table (others: their rows)."""
        if self.out_dir is None:
            return to_frame(self.rows)
        self.shard.barrier()
        if not self.shard.is_main:
            return to_frame(self.rows)
        return self.consolidate(units, rows_per_unit)
