"""Oracles for the core: the shared step, the implicit map, the outer loop and NFE counting."""

from __future__ import annotations

import math

import pytest
import torch

from baselines import ddim
from gnri.core import (
    Conditioning,
    CountingDenoiser,
    Grid,
    Level,
    Prediction,
    StepProblem,
    ancestral_noise_scale,
    invert_with,
    sample,
    sample_step,
    step_residuals,
)
from gnri.toy import GaussianDenoiser, LinearEpsDenoiser, ZeroVelocityDenoiser, flow_grid, vp_grid

COND = Conditioning({})


def _x0(shape=(2, 4, 6, 6)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("grid", [vp_grid(10), vp_grid(50, final_alpha_one=False), vp_grid(4)])
def test_zero_eps_round_trip_closes(grid: Grid) -> None:
    """Oracle 1: with eps == 0 the exact inverse is known; DDIM inversion then sampling closes."""
    x0 = _x0()
    result = ddim.invert(LinearEpsDenoiser(0.0), x0, grid, COND)
    assert (sample(LinearEpsDenoiser(0.0), result.z, grid, COND) - x0).abs().max() < 1e-6
    # and the inverted latent is the analytic one: z_T = (a_T / a_0) x0
    expected = x0 * grid.levels[-1].a / grid.levels[0].a
    assert torch.allclose(result.z, expected, atol=1e-10)


def test_zero_velocity_round_trip_closes_on_flow_grid() -> None:
    x0 = _x0((1, 16, 8))  # packed (B, L, D) layout: the core treats latents as opaque
    grid = flow_grid(4, shift=3.0)
    result = ddim.invert(ZeroVelocityDenoiser(), x0, grid, COND)
    assert torch.allclose(result.z, x0, atol=1e-12)
    assert (sample(ZeroVelocityDenoiser(), result.z, grid, COND) - x0).abs().max() < 1e-6


@pytest.mark.parametrize("grid", [vp_grid(8), vp_grid(3, final_alpha_one=False)])
def test_linear_eps_exact_root_closes(grid: Grid) -> None:
    """With eps = k z the step's implicit equation is affine: its exact root inverts exactly."""
    k = 0.3
    x0 = _x0()
    den = LinearEpsDenoiser(k)

    def exact(problem: StepProblem):
        # r(z) = c_x0 (z - s k z)/a + c_eps k z - x = 0 -> z = x / (c_x0 (1 - s k)/a + c_eps k)
        src, dst = problem.z_level, problem.x_level
        coef = dst.a * (1 - src.s * k) / src.a + dst.s * k
        from gnri.core import StepInfo

        return problem.x / coef, StepInfo(iters=0)

    result = invert_with(exact, den, x0, grid, COND)
    assert (sample(den, result.z, grid, COND) - x0).abs().max() < 1e-10
    assert step_residuals(den, result, grid, COND).max() < 1e-10


def test_sample_step_is_euler_for_flow_and_ddim_for_vp() -> None:
    z = _x0()
    v = torch.randn_like(z)
    src, dst = Level(0.7, 0.3, 0.7), Level(0.4, 0.6, 0.4)
    pred = Prediction(z - src.s * v, z + (1 - src.s) * v)  # velocity -> (x0, eps)
    assert torch.allclose(sample_step(pred, src, dst), z + (dst.s - src.s) * v, atol=1e-12)
    ab, ab_prev = 0.3, 0.8
    src, dst = Level(500, ab**0.5, (1 - ab) ** 0.5), Level(200, ab_prev**0.5, (1 - ab_prev) ** 0.5)
    eps = torch.randn_like(z)
    x0 = (z - src.s * eps) / src.a
    ddim_formula = math.sqrt(ab_prev / ab) * z + (
        math.sqrt(1 - ab_prev) - math.sqrt(ab_prev * (1 - ab) / ab)
    ) * eps
    assert torch.allclose(sample_step(Prediction(x0, eps), src, dst), ddim_formula, atol=1e-12)


def test_ancestral_step_equals_euler_ancestral_in_ve_coordinates() -> None:
    """DDIM eta=1 in VP coordinates is k-diffusion's Euler-ancestral step in VE coordinates."""
    sig, sig_next = 4.08, 1.613
    src = Level(749, 1 / math.sqrt(1 + sig**2), sig / math.sqrt(1 + sig**2))
    dst = Level(499, 1 / math.sqrt(1 + sig_next**2), sig_next / math.sqrt(1 + sig_next**2))
    z_ve, eps, noise = _x0(), torch.randn(2, 4, 6, 6, dtype=torch.float64), _x0() * 0.5 + 1
    sigma_up = math.sqrt(sig_next**2 * (sig**2 - sig_next**2) / sig**2)
    sigma_down = math.sqrt(sig_next**2 - sigma_up**2)
    x0 = z_ve - sig * eps
    expected_ve = z_ve + (sigma_down - sig) * (z_ve - x0) / sig + sigma_up * noise
    got_vp = sample_step(Prediction(x0, eps), src, dst, noise)
    assert torch.allclose(got_vp / dst.a, expected_ve, atol=1e-10)
    assert ancestral_noise_scale(src, dst) == pytest.approx(dst.a * sigma_up)


def test_implicit_map_fixed_point_is_residual_root() -> None:
    """z - f(z) = (a_z / a_x) r(z): the two residuals vanish together, with or without noise."""
    den = GaussianDenoiser(0.2, 0.8)
    grid = vp_grid(5)
    x = _x0()
    for noise in (None, torch.randn_like(x)):
        problem = StepProblem(den, x, grid.levels[2], grid.levels[3], COND, noise)
        z = x * 1.1 + 0.05
        pred = problem.predict(z)
        lhs = problem.fixed_point_residual(z, pred)
        assert torch.allclose(lhs, problem.residual_scale * problem.residual(pred), atol=1e-12)


def test_counting_denoiser_counts_forward_backward_and_cfg() -> None:
    den = CountingDenoiser(GaussianDenoiser())
    z = torch.randn(1, 3, requires_grad=True)
    cfg = Conditioning({"shift": torch.tensor(0.5)}, {"shift": torch.tensor(0.0)}, 3.0)
    level = Level(10, 0.8, 0.6)
    den(z.detach(), level, COND)
    assert (den.counter.forward, den.counter.backward) == (1, 0)
    pred = den(z, level, cfg)
    assert den.counter.forward == 3
    (pred.x0.sum() + pred.eps.sum()).backward()
    assert den.counter.backward == 2  # one backward through a CFG pair: 2 network passes
    with torch.no_grad():
        den(z, level, cfg)
    assert den.counter.backward == 2


def test_grid_validation_and_truncation() -> None:
    grid = vp_grid(10)
    assert grid.truncate(0.6).num_steps == 6
    assert grid.truncate(0.6).levels == grid.levels[:7]
    with pytest.raises(ValueError, match="strength"):
        grid.truncate(0.0)
    with pytest.raises(ValueError, match="at least 2 levels"):
        Grid(grid.levels[:1])
    with pytest.raises(ValueError, match="stored noises"):
        Grid(grid.levels, noises=(torch.zeros(1),))


def test_ddim_inversion_error_shrinks_with_steps() -> None:
    den, x0 = GaussianDenoiser(0.3, 0.5), _x0()
    errors = []
    for steps in (5, 20, 80):
        grid = vp_grid(steps)
        z = ddim.invert(den, x0, grid, COND).z
        errors.append((sample(den, z, grid, COND) - x0).pow(2).mean().sqrt().item())
    assert errors[0] > errors[1] > errors[2]
    with pytest.raises(ValueError, match="timestep"):
        ddim.invert(den, x0, vp_grid(5), COND, timestep="middle")  # type: ignore[arg-type]


def test_flow_implicit_map_holds_velocity_and_solves_the_pure_noise_step() -> None:
    """On flow grids f holds v fixed, so the sigma = 1 step (a = 0) is solved like any other."""
    den, grid = GaussianDenoiser(0.3, 0.6), flow_grid(4, shift=3.0)
    x = _x0((1, 8, 4))
    problem = StepProblem(den, x, grid.levels[-2], grid.levels[-1], COND, family="flow")
    assert problem.z_level.a == 0.0
    pred = problem.predict(x)
    v = pred.eps - pred.x0
    expected = x + (problem.z_level.s - problem.x_level.s) * v
    assert torch.allclose(problem.implicit_map(pred), expected, atol=1e-12)
    z = x
    for _ in range(200):
        z = problem.implicit_map(problem.predict(z))
    assert problem.residual(problem.predict(z)).abs().max() < 1e-10
    pred = problem.predict(z * 0.9)
    assert torch.allclose(problem.fixed_point_residual(z * 0.9, pred), problem.residual(pred), atol=1e-12)
