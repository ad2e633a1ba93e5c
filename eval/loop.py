"""The one driver every task's loop runs on: plan -> resume -> shard -> measure -> gather.

:func:`run_units` takes the plan (:func:`eval.units.plan_units`) and a ``measure(units) -> rows
of each unit`` callable (which builds the model lazily, on its first call), and:

1. opens the run folder's store (:class:`eval.store.ResultsStore`): finished units are found by
   their content key and skipped, and ``resumed K of N units`` is logged;
2. takes this process's block of the units (:class:`eval.distributed.Shard`);
3. measures the remaining units in batches of ``batch_size`` consecutive ones (default 1) and
   records each unit's rows as its batch ends (a kill loses at most that batch);
   a logger gets each unit's rows (a logger that fails never stops the run);
4. waits for every rank; rank 0 writes the one ``results.csv`` in plan order and returns it.

It also writes ``timings.json`` (``timings.rank<r>.json`` per rank): units done and resumed,
the wall time and the harness's stage totals (model set-up, per-image preparation), which is
how a sweep's overhead outside inversion is measured.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from eval.distributed import Shard
from eval.records import to_frame
from eval.settings import RunSettings
from eval.store import ResultsStore
from eval.units import Unit

log = logging.getLogger(__name__)
Rows = list[dict[str, Any]]


def run_units(
    settings: RunSettings,
    units: Sequence[Unit],
    rows_per_unit: int,
    measure: Callable[[Sequence[Unit]], list[Rows]],
    *,
    shard: Shard | None = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
    desc: str = "",
    stages: Mapping[str, float] | None = None,
    batch_size: int = 1,
) -> pd.DataFrame:
    """Measure the plan's unfinished units of this rank; the whole table (rank 0) or this rank's rows.

    ``stages`` is a live mapping of stage name -> seconds the caller accumulates (written to
    ``timings.json``). ``measure(units) -> rows of each unit`` gets batches of ``batch_size``
    consecutive remaining units (the last may be smaller).
    """
    shard = shard or Shard()
    start = time.perf_counter()
    store = ResultsStore(settings.out_dir, shard)
    finished = store.begin(units, rows_per_unit, settings.resume)
    resumed = sum(u.key in finished for u in units)
    mine = shard.split(units)
    todo = [u for u in mine if u.key not in finished]
    if settings.out_dir is not None:
        where = f"rank {shard.rank}/{shard.world_size}: " if shard.world_size > 1 else ""
        log.info("%sresumed %d of %d units; %d to run here", where, resumed, len(units), len(todo))
    size = max(1, batch_size)
    with tqdm(total=len(todo), desc=desc, disable=not settings.progress, unit="img") as bar:
        for start_at in range(0, len(todo), size):
            batch = todo[start_at:start_at + size]
            measured = measure(batch)
            for unit, rows in zip(batch, measured):
                store.append(rows)
                if on_rows is not None:
                    try:
                        on_rows(to_frame(rows))
                    except Exception:  # noqa: BLE001 - a logger never stops the benchmark
                        log.exception("logger failed on the rows of %s", unit.item)
            bar.update(len(batch))
    table = store.finish(units, rows_per_unit)
    _write_timings(settings.out_dir, shard, {
        "units": len(units), "resumed": resumed, "computed": len(todo), "batch_size": size,
        "wall_s": time.perf_counter() - start, **dict(stages or {}),
    })
    return table


def _write_timings(out_dir: Path | None, shard: Shard, data: Mapping[str, Any]) -> None:
    if out_dir is None:
        return
    name = "timings.json" if shard.world_size == 1 else f"timings.rank{shard.rank}.json"
    (Path(out_dir) / name).write_text(json.dumps(dict(data), indent=2) + "\n", encoding="utf-8")
