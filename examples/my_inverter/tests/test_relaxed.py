"""The plug-in's own tests, on gnri.toy's analytic denoiser (eps = k z: each step's root is closed-form)."""

from __future__ import annotations

import torch

from gnri.core import Conditioning, StepInfo, StepProblem, invert_with, sample
from gnri.toy import LinearEpsDenoiser, vp_grid
from my_inverter import ddim_again, relaxed

K = 0.3
COND = Conditioning({})


def _exact(problem: StepProblem):
    """The step's exact root: r(z) = dst.a (1 - src.s k) z / src.a + dst.s k z - x = 0."""
    src, dst = problem.z_level, problem.x_level
    return problem.x / (dst.a * (1 - src.s * K) / src.a + dst.s * K), StepInfo(iters=0)


def test_relaxed_reaches_the_exact_root_and_round_trips() -> None:
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid, den = vp_grid(6), LinearEpsDenoiser(K)
    exact = invert_with(_exact, den, x0, grid, COND)
    result = relaxed.invert(den, x0, grid, COND, max_iters=60, omega=0.7)
    assert (result.z - exact.z).abs().max() < 1e-9
    assert (sample(den, result.z, grid, COND) - x0).abs().max() < 1e-9
    few = relaxed.invert(den, x0, grid, COND, max_iters=1, omega=0.7)
    assert (few.z - exact.z).abs().max() > 1e-6  # one iteration is not the root: the test can fail


def test_ddim_again_is_the_explicit_step() -> None:
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid, den = vp_grid(4), LinearEpsDenoiser(K)
    result = ddim_again.invert(den, x0, grid, COND)
    z = x0
    for i in range(grid.num_steps):
        problem = StepProblem(den, z, grid.levels[i], grid.levels[i + 1], COND)
        z = problem.implicit_map(den(z, problem.explicit_level, COND))
    assert torch.equal(result.z, z)
