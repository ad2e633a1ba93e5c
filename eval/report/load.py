"""Which rows were timed on a loaded machine (the ``machine`` provenance column, :mod:`eval.machine`).

The harness records the machine's state in every row's ``machine`` JSON (``cpu_count`` and the
1-minute ``load_1min`` at set-up) and logs a warning when the load exceeds
:func:`eval.machine.load_limit`. A row is *timed under load* when that JSON carries a true flag
(:data:`LOAD_FLAG_KEYS`, for harnesses that record the warning itself) or any numeric ``load_*``
value above the limit for its core count. Times of such rows are not the machine's: reports mark
them and give no timing verdict.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from eval.machine import load_limit

MACHINE_COLUMN = "machine"
LOAD_FLAG_KEYS = ("timed_under_load", "load_warning")  # explicit flags a harness may record
LOAD_PREFIX = "load_"  # numeric load averages (load_1min at set-up, any later sample)
UNDER_LOAD_NOTE = "timed under load"
LOAD_MARK = "†"


def timed_under_load(machine: Any) -> bool:
    """True when one ``machine`` JSON value says the machine was loaded (see module docstring);
    False for anything unreadable or without a load (older rows, other OSes)."""
    if isinstance(machine, dict):
        state = machine
    elif isinstance(machine, str) and machine:
        try:
            state = json.loads(machine)
        except json.JSONDecodeError:
            return False
        if not isinstance(state, dict):
            return False
    else:
        return False
    if any(bool(state.get(k)) for k in LOAD_FLAG_KEYS):
        return True
    cores = state.get("cpu_count")
    if not isinstance(cores, (int, float)) or cores < 1:
        return False
    limit = load_limit(int(cores))
    loads = [v for k, v in state.items() if k.startswith(LOAD_PREFIX) and isinstance(v, (int, float))
             and not isinstance(v, bool) and math.isfinite(v)]
    return any(v > limit for v in loads)


def under_load(records: pd.DataFrame) -> pd.Series:
    """A boolean Series over ``records``: the row was timed under load (False without a ``machine`` column)."""
    if MACHINE_COLUMN not in records.columns:
        return pd.Series(False, index=records.index)
    machine = records[MACHINE_COLUMN]
    verdicts = {value: timed_under_load(value) for value in machine.dropna().unique()}
    return machine.map(verdicts).fillna(False).astype(bool)
