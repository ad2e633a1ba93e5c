"""The one timed inversion every task and bench script uses: warm-up apart, the counter reset
before each repeat, the call timed alone (device synchronised, median of ``repeats``), the NFE of
one inversion and the network's own seconds inside it (:func:`eval.timing.time_with_network_clock`),
each call under ``torch.no_grad()`` and checked to be an InversionResult.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from eval.finite import checked_result
from eval.task import Skip, one_line
from eval.timing import InRunNetwork, PeakMemory, time_with_network_clock
from gnri.core import CountingDenoiser, InversionResult


@dataclass(frozen=True)
class TimedInversion:
    """One timed inversion: the result, the median seconds of the whole call (all its images),
    the counts of one call, the in-run network clock and the peak memory (NaN: not measured)."""

    result: InversionResult
    seconds: float
    nfe_forward: int
    nfe_backward: int
    in_run: InRunNetwork
    peak_mb: float = math.nan


def invert_once(invert: Callable[..., InversionResult], denoiser: object, *args: object,
                checked: bool = True) -> InversionResult:
    """``invert(denoiser, *args)`` under ``torch.no_grad()`` (an inverter that needs gradients
    enables them itself), checked to be an :class:`InversionResult` (``checked=False``: any object
    with a ``z``, e.g. a by-hand transcription's); a ValueError (the method does not apply here)
    becomes :class:`~eval.task.Skip`."""
    try:
        with torch.no_grad():
            result = invert(denoiser, *args)
        return checked_result(result) if checked else result
    except ValueError as err:
        raise Skip(f"does not apply: {one_line(err)}") from None


def warm_up(call: Callable[[], object], times: int) -> None:
    """``times`` untimed calls (compilation, caches, allocator) before anything is timed."""
    for _ in range(times):
        call()


def timed_inversion(
    invert: Callable[..., InversionResult], counting: CountingDenoiser, *args: object,
    device: torch.device, repeats: int = 1, memory: bool = False, checked: bool = True,
) -> TimedInversion:
    """Time ``invert(counting, *args)`` (:func:`invert_once`) ``repeats`` times; the counts are one
    call's. ``memory``: the peak memory while timing (:class:`eval.timing.PeakMemory`).
    The caller checks the latent (:func:`eval.finite.diverged_reason`)."""
    def call() -> InversionResult:
        return invert_once(invert, counting, *args, checked=checked)

    peak = math.nan
    if memory:
        with PeakMemory(device) as watch:
            timed, in_run = time_with_network_clock(call, counting.counter, device, repeats)
        peak = watch.mb
    else:
        timed, in_run = time_with_network_clock(call, counting.counter, device, repeats)
    result: InversionResult = timed.value  # type: ignore[assignment]
    return TimedInversion(result, timed.median_s, counting.counter.forward, counting.counter.backward, in_run, peak)
