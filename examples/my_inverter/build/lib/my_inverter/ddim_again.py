"""DDIM inversion again, written from the public API: the A/A check of a plug-in's route.

Numerically the same operations as gnri-bench's shipped ``ddim`` (``timestep="dst"``): the
network at the noisier level's timestep, evaluated at the known cleaner latent, one call per
step. Run beside ``inverter=ddim``, every row must agree: what differs is only the route.
"""

from __future__ import annotations

from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, StepInfo, StepProblem, Tensor, invert_with


@inverter_info()
def invert(denoiser: Denoiser, x0: Tensor, grid: Grid, cond: Conditioning) -> InversionResult:
    """DDIM/Euler inversion (plug-in copy of ``ddim``): one denoiser call per step, no iteration."""

    def solve(problem: StepProblem) -> tuple[Tensor, StepInfo]:
        pred = problem.denoiser(problem.x, problem.explicit_level, problem.cond)
        return problem.implicit_map(pred), StepInfo(iters=1)

    return invert_with(solve, denoiser, x0, grid, cond)
