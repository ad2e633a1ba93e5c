"""The outer loop over levels, written once; inverters differ only in the inner solve."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from gnri.core.step import StepProblem, per_sample_rms, sample_step
from gnri.core.types import Conditioning, Denoiser, Grid, InversionResult, StepInfo, Tensor

# An inner solver: given one step's problem, return the latent at the noisier level.
StepSolver = Callable[[StepProblem], tuple[Tensor, StepInfo]]


def invert_with(
    solve: StepSolver, denoiser: Denoiser, x0: Tensor, grid: Grid, cond: Conditioning
) -> InversionResult:
    """Invert ``x0`` (at ``grid.levels[0]``) up the grid, one implicit step at a time."""
    x, trajectory, infos = x0, [x0], []
    for i in range(grid.num_steps):
        problem = StepProblem(
            denoiser, x=x, x_level=grid.levels[i], z_level=grid.levels[i + 1], cond=cond,
            noise=grid.noise(i), family=grid.family,
        )
        x, info = solve(problem)
        trajectory.append(x)
        infos.append(info)
    return InversionResult(z=x, trajectory=tuple(trajectory), steps=tuple(infos))


def sample(
    denoiser: Denoiser,
    z: Tensor,
    grid: Grid,
    cond: Conditioning,
    cond_per_step: Sequence[Conditioning] | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Run the shared sampler from ``z`` at ``grid.levels[-1]`` down to ``grid.levels[0]``.

    ``cond_per_step[i]`` replaces ``cond`` for step ``i`` (levels[i+1] -> levels[i]).
    With ``return_trajectory`` also returns the latents, noisy -> clean.
    """
    trajectory = [z]
    for i in reversed(range(grid.num_steps)):
        step_cond = cond if cond_per_step is None else cond_per_step[i]
        pred = denoiser(z, grid.levels[i + 1], step_cond)
        z = sample_step(pred, grid.levels[i + 1], grid.levels[i], grid.noise(i))
        trajectory.append(z)
    return (z, trajectory) if return_trajectory else z


def reconstruct(
    denoiser: Denoiser, result: InversionResult, grid: Grid, cond: Conditioning
) -> Tensor:
    """Regenerate from an inversion: the method's own sampler if it has one, else the shared one.

    Editing is the same call with the target prompt's ``cond``; per-step conditioning
    (null-text) is replayed with its guidance scale and only its negative branch kept.
    """
    if result.sampler is not None:
        return result.sampler(denoiser, grid, cond, result.z)
    per_step = None
    if result.cond_per_step is not None:
        per_step = [
            Conditioning(cond.positive, c.negative, c.guidance_scale) for c in result.cond_per_step
        ]
    return sample(denoiser, result.z, grid, cond, per_step)


@torch.no_grad()
def step_residuals(
    denoiser: Denoiser, result: InversionResult, grid: Grid, cond: Conditioning
) -> Tensor:
    """Per-step RMS of ``r(z_{i+1}) = sample_step(pred(z_{i+1})) - z_i`` along the trajectory.

    The same diagnostic for every method, computed after timing: shape (steps, B).
    Per-step conditioning (null-text) is used where the result carries it.
    """
    rows = []
    for i in range(grid.num_steps):
        step_cond = cond
        if result.cond_per_step is not None:
            c = result.cond_per_step[i]
            step_cond = Conditioning(cond.positive, c.negative, c.guidance_scale)
        problem = StepProblem(
            denoiser, result.trajectory[i], grid.levels[i], grid.levels[i + 1], step_cond,
            grid.noise(i), grid.family,
        )
        z = result.trajectory[i + 1]
        rows.append(per_sample_rms(problem.residual(problem.predict(z))))
    return torch.stack(rows)
