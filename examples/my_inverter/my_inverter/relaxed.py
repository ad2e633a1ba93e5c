"""Relaxed fixed-point inversion: ``z <- (1 - omega) z + omega f(z)`` per step.

An example plug-in written against the public API only (:mod:`gnri.core`, :mod:`gnri.catalog`).
``f(z) = implicit_map(predict(z))`` is the step's fixed-point map; ``omega = 1`` is plain
fixed-point inversion, ``omega < 1`` damps it (it converges where the map's slope is in
``(1 - 2/omega, 1)``). Start: the explicit guess ``z = x``; ``max_iters`` network calls per step.
"""

from __future__ import annotations

from functools import partial

from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, StepInfo, StepProblem, Tensor, invert_with


@inverter_info(families=("vp", "flow"), exact_reconstruction=False, keeps="1 latent")
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    max_iters: int = 4,
    omega: float = 0.7,
) -> InversionResult:
    """Relaxed fixed-point inversion: ``max_iters`` network calls per step, step ``omega``."""
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"inverter relaxed: max_iters must be an integer >= 1, got {max_iters!r}")
    if not 0.0 < float(omega) <= 2.0:
        raise ValueError(f"inverter relaxed: omega must be in (0, 2], got {omega!r}")

    def solve(problem: StepProblem) -> tuple[Tensor, StepInfo]:
        z = problem.x
        for _ in range(max_iters):
            z = (1.0 - omega) * z + omega * problem.implicit_map(problem.predict(z))
        return z, StepInfo(iters=max_iters)

    return invert_with(solve, denoiser, x0, grid, cond)


# A named variant: the entry point ``relaxed_half`` is this partial (its keywords are its values).
relaxed_half = partial(invert, omega=0.5)
