"""The CPU clock's guard: what the machine was doing while it was timed.

On a 2-core machine, a second torch process (another benchmark, a test suite) made the same runs
10-80x slower: two OpenMP pools oversubscribe the cores. :func:`machine_state` records the CPU
model, the core count, torch's thread count and the 1-minute load average (into every row's
``machine`` provenance column); :func:`warn_if_loaded` logs a warning when the load exceeds what the
run reaches by itself (:func:`load_limit`), which the harness checks at the start and the end of a
run's timed work.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's processor string)."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def machine_state() -> dict[str, Any]:
    """CPU model, cores, torch threads and load now."""
    import torch

    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_1min": load_average()}


def warn_if_loaded(stage: str) -> bool:
    """Log a warning (and return True) when the load average exceeds :func:`load_limit`."""
    load, cores = load_average(), os.cpu_count() or 1
    if load is not None and load > load_limit(cores):
        log.warning("%s: load average %.1f exceeds %.0f (%d cores, plus the run's own margin): another process "
                    "shares the CPU, so times measured now are not the machine's (run timings alone)",
                    stage, load, load_limit(cores), cores)
        return True
    return False


def load_limit(cores: int) -> float:
    """The load a lone run can reach by itself: its own threads fill the cores, and the 1-minute
    average lags (seen here: 2.1 on 2 cores with nothing else running); one more busy
    core's worth (a quarter of them on a big machine) means another process."""
    return float(cores + max(1, cores // 4))
