"""Plain DDIM inversion (Song et al. 2021; Mokady et al. 2023, Sec. 3; Euler inversion for flows).

One network call per step, evaluated at the known cleaner latent instead of the unknown one:
``z_t = f(z_{t-1})`` with ``eps ~= eps(z_{t-1}, t)`` (arXiv 2312.12540, Eq. 5).

Timestep convention (the "off-by-one" question): ``timestep="dst"`` (default) feeds the network
the noisier level's timestep, as diffusers' DDIMInverseScheduler and Null-text inversion do;
the network's output is converted with the cleaner level's scales (as the scheduler does for
v-prediction). ``timestep="src"`` feeds the cleaner level's own timestep instead, which matches
the level the latent actually sits at but needs a network timestep at the clean end.
"""

from __future__ import annotations

from typing import Literal

from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, StepInfo, StepProblem, Tensor, invert_with

TIMESTEPS = ("dst", "src")


@inverter_info()
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    timestep: Literal["dst", "src"] = "dst",
) -> InversionResult:
    """Explicit DDIM/Euler inversion: one denoiser call per step, no iteration."""
    if timestep not in TIMESTEPS:
        raise ValueError(f"inverter ddim: timestep must be one of {TIMESTEPS}, got {timestep!r}")

    def solve(problem: StepProblem) -> tuple[Tensor, StepInfo]:
        level = problem.explicit_level if timestep == "dst" else problem.x_level
        pred = problem.denoiser(problem.x, level, problem.cond)
        return problem.implicit_map(pred), StepInfo(iters=1)

    return invert_with(solve, denoiser, x0, grid, cond)
