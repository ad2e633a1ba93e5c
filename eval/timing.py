"""Wall-clock timing and peak memory, done the way benchmark reviewers expect.

Timing: the caller warms up first (untimed); each timed call is bracketed by
``torch.cuda.synchronize()`` on CUDA (what ``torch.utils.benchmark.Timer`` does) and read with
``time.perf_counter``; the reported time is the median over ``repeats`` calls.

The network's own seconds inside a timed inversion are clocked by the counting wrapper
(:class:`gnri.core.CountingDenoiser`, on the same calls; :func:`time_with_network_clock`,
:class:`InRunNetwork`); the bare network is also timed apart (:func:`bare_network_times`: what
an ideal loop around it would cost).

Peak memory of one call: on CUDA the allocator's peak (``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats``); on CPU the process's peak resident set size (RSS) seen by a
sampling thread during the call (psutil; without psutil, the process-lifetime peak RSS).
Both are absolute (model weights included), in MiB.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch

from gnri.core.counting import NetworkClock, NetworkSeconds, NFECounter

T = TypeVar("T")
MIB = 1024.0 * 1024.0
RSS_SAMPLE_INTERVAL_S = 0.005


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timed:
    """Result of the last call, the median seconds and every repeat's seconds."""

    value: object
    median_s: float
    times_s: tuple[float, ...]


def time_call(fn: Callable[[], T], device: torch.device, repeats: int = 1) -> Timed:
    """Call ``fn`` ``repeats`` times (>= 1), synchronised around each call; median seconds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times, value = [], None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        value = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Timed(value, statistics.median(times), tuple(times))


class PeakMemory:
    """Context manager: ``.mb`` is the peak memory (MiB) on ``device`` while inside it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb = float("nan")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._peak_bytes = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_INTERVAL_S):
            self._peak_bytes = max(self._peak_bytes, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / MIB
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.mb = max(self._peak_bytes, _rss_bytes()) / MIB


def _rss_bytes() -> int:
    """Current RSS (psutil), or the lifetime peak RSS where psutil is missing."""
    try:
        import psutil
    except ImportError:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB
    return psutil.Process().memory_info().rss


@dataclass(frozen=True)
class NetworkTimes:
    """Seconds of the bare network per forward pass and per backward pass (a CFG call of two
    branches counts as two of each, as the NFE counter does); None where not measured."""

    forward_s: float | None
    backward_s: float | None = None
    reason: str = ""  # why a time is missing


def bare_network_times(
    denoiser: object, z: torch.Tensor, level: object, cond: object, device: torch.device,
    *, backward: bool = False, warmup: int = 3, repeats: int = 20,
) -> NetworkTimes:
    """Time the network alone the way methods are timed: the same inputs (prepared once, outside
    the clock), dtype and attention backend, ``warmup`` untimed calls, device synchronised,
    median of ``repeats``. ``backward``: also forward + backward to the input, minus forward (left
    out, with why, where that difference is not positive: two medians apart cannot resolve it).

    Needs ``denoiser.network_call(z, level, cond, grad=False)`` (the adapters' denoisers have it).
    """
    make = getattr(denoiser, "network_call", None)
    if make is None:
        return NetworkTimes(None, None, f"{type(denoiser).__name__} exposes no bare network call")
    per_call = int(denoiser.forwards_per_call(cond))  # type: ignore[attr-defined]

    def median(call: Callable[[], object]) -> float:
        for _ in range(warmup):
            call()
        return time_call(call, device, repeats).median_s

    forward = median(make(z, level, cond))  # type: ignore[operator]
    if not backward:
        return NetworkTimes(forward / per_call)
    both = median(make(z, level, cond, grad=True))  # type: ignore[operator]
    if both <= forward:  # once more, back to back: a transient load can make the first pair read inverted
        forward = median(make(z, level, cond))  # type: ignore[operator]
        both = median(make(z, level, cond, grad=True))  # type: ignore[operator]
    if both <= forward:
        return NetworkTimes(forward / per_call, None, f"forward+backward ({both:.3g} s) timed no slower than "
                                                      f"forward ({forward:.3g} s): clock noise")
    return NetworkTimes(forward / per_call, (both - forward) / per_call)


@dataclass(frozen=True)
class InRunNetwork:
    """The network's share of a timed inversion, from :class:`gnri.core.counting.NetworkClock`
    readings of the same calls: medians over repeats of the whole batch's forward and backward
    seconds inside the network, of ``overhead_ratio = inversion / network`` (>= 1: the network
    passes are inside the inversion) and of ``non_network_share = 1 - network / inversion``
    (None where no network time was recorded); ``unmeasured_backward``: backward passes the
    clock could not bracket (the most of any repeat)."""

    forward_s: float
    backward_s: float
    overhead_ratio: float | None
    non_network_share: float | None
    unmeasured_backward: int

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s


def in_run_network(invert_s: Sequence[float], network: Sequence[NetworkSeconds]) -> InRunNetwork:
    """Pair each repeat's inversion seconds with its in-run network seconds (same length, >= 1)."""
    if len(invert_s) != len(network) or not network:
        raise ValueError(f"need one network reading per timed repeat, got {len(network)} for {len(invert_s)}")
    measured = [(t, n.total_s) for t, n in zip(invert_s, network) if n.total_s > 0]
    ratio = statistics.median(t / n for t, n in measured) if measured else None
    share = statistics.median(1.0 - n / t for t, n in measured) if measured else None
    return InRunNetwork(statistics.median(n.forward_s for n in network), statistics.median(n.backward_s for n in network),
                        ratio, share, max(n.unmeasured_backward for n in network))


def time_with_network_clock(
    fn: Callable[[], T], counter: NFECounter, device: torch.device, repeats: int = 1
) -> tuple[Timed, InRunNetwork]:
    """:func:`time_call` of ``fn`` (an inversion through a :class:`gnri.core.CountingDenoiser`
    whose counter is ``counter``), with ``counter`` reset before each repeat and its network clock
    set aside after it (no synchronisation inside the timed region); the clocks are read once at
    the end. The counts left in ``counter`` are the last repeat's."""
    laps: list[NetworkClock] = []

    def once() -> T:
        counter.reset()
        out = fn()
        laps.append(counter.clock.take())
        return out

    timed = time_call(once, device, repeats)
    return timed, in_run_network(timed.times_s, [lap.read() for lap in laps])


def generation_peak_mb(generate: Callable[[], object], device: torch.device) -> float:
    """Peak memory (MiB) of plain generation (``generate``: e.g. ``gnri.core.sample`` from a latent
    of the run's shape, under ``torch.no_grad``), measured as a method's inversion is
    (:class:`PeakMemory`, after the caller's warm-up): the baseline of
    :func:`memory_beyond_generation`."""
    with torch.no_grad(), PeakMemory(device) as memory:
        generate()
    return memory.mb


def memory_beyond_generation(method_mb: float, generation_mb: float) -> float:
    """``peak_memory_extra_mb``: a method's peak minus plain generation's peak, both measured the
    same way on the same device (MiB; what a user compares on a 24 GB card: the weights and the
    sampler's own activations are in both, so only the method's extra state remains)."""
    return method_mb - generation_mb
