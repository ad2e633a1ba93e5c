"""Oracles for GNRI and its variants (gnri.methods): exact roots, the guidance's closed form,
the public code's update by hand, and the tiny models of every family against DDIM inversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines import ddim
from gnri.core import Conditioning, CountingDenoiser, Grid, Level, StepProblem, sample, step_residuals
from gnri.methods import anderson, gnri, gnri_official, newton_krylov
from gnri.methods.prior import transition
from gnri.models.base import ScheduleSpec
from gnri.toy import GaussianDenoiser, LinearEpsDenoiser, flow_grid, vp_grid

COND = Conditioning({})
C = 0.5  # data std of the Gaussian toy (mean 0)


def _vp(alphabar: float, t: float) -> Level:
    return Level(t, math.sqrt(alphabar), math.sqrt(1.0 - alphabar))


# A VP step whose fixed-point map contracts slowly (|f'| ~ 0.83): a stiff step for fixed point.
STIFF = Grid((_vp(0.81, 1.0), _vp(0.09, 2.0)))
# A milder VP step (|f'| ~ 0.53), used for the guidance's closed form.
MILD = Grid((_vp(0.9, 1.0), _vp(0.5, 2.0)))


def _gauss_root_and_slope(x: torch.Tensor, xl: Level, zl: Level, c: float = C) -> tuple[torch.Tensor, float]:
    """Independent closed form for the Gaussian toy (mean 0): the root ``z*`` of
    ``r(z) = a' x0(z) + s' eps(z) - x`` and ``k = 1 - f'(z)``, so ``z - f(z) = k (z - z*)``."""
    den = zl.a**2 * c**2 + zl.s**2
    slope_r = (xl.a * zl.a * c**2 + xl.s * zl.s) / den  # dr/dz: x0 = a c^2 z/den, eps = s z/den
    return x / slope_r, (zl.a / xl.a) * slope_r


def _latents(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("numel", [1, 16])
def test_gnri_lam0_converges_to_the_exact_root_faster_than_fixed_point(numel: int) -> None:
    """(1) lam = 0: GNRI reaches the closed-form root to 1e-5. On a one-element latent its scalar
    Newton step is Newton's method and needs fewer network passes (forward + backward) than
    fixed-point iteration on a stiff step; on 16 elements it moves every element by the same
    amount and needs more (measured: 175 passes against 78), so only convergence is asserted."""
    x = _latents((3, numel))
    z_star, _ = _gauss_root_and_slope(x, *STIFF.levels)
    tol = 1e-7  # on RMS(z - f(z)) = k RMS(z - z*)
    den = CountingDenoiser(GaussianDenoiser(0.0, C))
    res = gnri.invert(den, x, STIFF, COND, lam=0.0, max_iters=200, tol=tol, output="z")
    assert (res.z - z_star).abs().max() < 1e-5
    gnri_passes = den.counter.forward + den.counter.backward
    assert den.counter.backward == res.steps[0].iters > 0

    fp = CountingDenoiser(GaussianDenoiser(0.0, C))
    problem = StepProblem(fp, x, STIFF.levels[0], STIFF.levels[1], COND)
    z = x
    for _ in range(10_000):
        fz = problem.implicit_map(problem.predict(z))
        if (z - fz).pow(2).mean(dim=1).sqrt().max() <= tol:
            break
        z = fz
    assert (z - z_star).abs().max() < 1e-5
    if numel == 1:
        assert gnri_passes < fp.counter.forward, (gnri_passes, fp.counter.forward)  # one element, eta = 0: the min-norm step is exact Newton on an affine residual
        exact = CountingDenoiser(GaussianDenoiser(0.0, C))
        res = gnri.invert(exact, x, STIFF, COND, lam=0.0, eta=0.0, max_iters=200, tol=tol, output="z")
        assert (res.z - z_star).abs().max() < 1e-12
        assert res.steps[0].iters == 1 and (exact.counter.forward, exact.counter.backward) == (2, 1)


def test_gnri_cost_is_k_forwards_k_backwards_plus_one() -> None:
    grid, x = vp_grid(3), _latents((2, 4, 4, 4))
    den = CountingDenoiser(GaussianDenoiser(0.0, C))
    res = gnri.invert(den, x, grid, COND, max_iters=2, tol=0.0)
    assert (den.counter.forward, den.counter.backward) == (3 * 3, 3 * 2)
    assert all(len(s.series["residual"]) == 3 and len(s.series["step_size"]) == 2 for s in res.steps)


def test_guidance_moves_the_result_toward_the_prior_mean_by_its_closed_form() -> None:
    """(2) One-element latent, plain-l2 prior, lam w < k. Independently: the objective
    ``F = k|z - z*| + lam w |z - mu|`` is minimised at the root itself (an exact penalty; fine
    grid below), but Newton on F (which has no zero) settles into the 2-cycle
    ``{z_avg, z_out}``; keep_best returns ``z_avg = (k z* + lam w mu) / (k + lam w)``: moved from
    the root toward ``mu`` by the fraction ``lam w / (k + lam w)``. ``output='f'`` returns
    ``f(z_avg) = z* + (1 - k)(z_avg - z*)``. ``z_avg`` is also the fixed point of gnri_aa's
    guided map."""
    xl, zl = MILD.levels
    x = torch.tensor([[1.0]], dtype=torch.float64)
    z_star, k = _gauss_root_and_slope(x, xl, zl)
    gamma, beta = transition(xl, zl)
    assert math.isclose(gamma, math.sqrt(0.5 / 0.9)) and math.isclose(beta, 1 - 0.5 / 0.9)
    lam, w = 0.1, 1.0 / beta
    mu = gamma * x
    assert lam * w < k

    grid_z = np.linspace(float(mu) - 1.0, float(z_star) + 1.0, 200_001)
    F = k * np.abs(grid_z - float(z_star)) + lam * w * np.abs(grid_z - float(mu))
    assert abs(grid_z[F.argmin()] - float(z_star)) < 1e-4  # the objective's minimiser: the root

    z_avg = (k * z_star + lam * w * mu) / (k + lam * w)
    den = GaussianDenoiser(0.0, C)
    out_z = gnri.invert(den, x, MILD, COND, lam=lam, max_iters=6, tol=0.0, eta=0.0, output="z").z
    assert torch.allclose(out_z, z_avg, atol=1e-10)
    assert float((out_z - z_star) * (mu - z_star)) > 0  # toward the prior mean
    out_f = gnri.invert(den, x, MILD, COND, lam=lam, max_iters=6, tol=0.0, eta=0.0, output="f").z
    assert torch.allclose(out_f, z_star + (1 - k) * (z_avg - z_star), atol=1e-10)
    out_0 = gnri.invert(den, x, MILD, COND, lam=0.0, max_iters=6, tol=0.0, eta=0.0, output="z").z
    assert torch.allclose(out_0, z_star, atol=1e-10)
    # gnri_aa's guided map T = (f + lam w mu) / (1 + lam w) has the same point as its fixed point
    out_aa = anderson.invert(den, x, MILD, COND, lam=lam, max_iters=4, tol=0.0).z
    assert torch.allclose(out_aa, z_avg, atol=1e-10)


def test_elementwise_rule_equals_min_norm_when_gradient_magnitudes_are_equal() -> None:
    """Eq. 10 read literally is the min-norm step when every |g_i| is equal (lam = 0 on the toy)."""
    x0 = _latents((2, 3, 4, 4))
    den = GaussianDenoiser(0.0, C)
    a = gnri.invert(den, x0, vp_grid(3), COND, lam=0.0, eta=0.0, tol=0.0, step_rule="min_norm")
    b = gnri.invert(den, x0, vp_grid(3), COND, lam=0.0, eta=0.0, tol=0.0, step_rule="elementwise")
    assert torch.allclose(a.z, b.z, atol=1e-10)


def test_gnri_official_reproduces_the_public_code_by_hand() -> None:
    """(4) Two iterations of ``inversion_step`` computed by hand in the code's VE coordinates."""
    gain, lam = 0.7, 0.1
    xl, zl = Level(1.0, 0.96, math.sqrt(1 - 0.96**2)), Level(2.0, 0.6, 0.8)
    grid = Grid((xl, zl))
    x = [0.5, -1.2]  # the clean latent z0 = x0 sits at levels[0]
    sig_prev, sig = xl.s / xl.a, zl.s / zl.a
    z0_ve = [v / xl.a for v in x]  # the code's latents are VE: z / a
    z, best, best_score, steps = list(z0_ve), None, math.inf, []
    for _ in range(2):
        eps = [gain * (zl.a * v) for v in z]  # the UNet sees z / sqrt(sigma^2 + 1) = a z
        f = [xp + (sig - sig_prev) * e for xp, e in zip(z0_ve, eps)]  # inv_step (Euler, VE)
        fvec = [abs(fi - zi) + (lam / 2) * ((fi - z0i) / sig) ** 2 for fi, zi, z0i in zip(f, z, x)]
        score = sum(fvec) / 2
        if score < best_score:
            best, best_score = f, score
        step = sum(fvec) / 2  # (1/D) sum(Fvec) / grad, grad = sign(z - f)
        steps.append(step)
        z = [zi + step * math.copysign(1.0, fi - zi) for zi, fi in zip(z, f)]
    expected = torch.tensor([[zl.a * v for v in best]], dtype=torch.float64)  # back to our units

    den = CountingDenoiser(LinearEpsDenoiser(gain))
    res = gnri_official.invert(den, torch.tensor([x], dtype=torch.float64), grid, COND, lam=lam, coordinates="scheduler")
    assert torch.allclose(res.z, expected, atol=1e-12)
    assert (den.counter.forward, den.counter.backward) == (2, 0)
    first_step = res.steps[0].series["step_size"][0]  # RMS of the update, in our units
    assert math.isclose(float(first_step), zl.a * steps[0], rel_tol=1e-12)


def test_gnri_official_latent_coordinates_by_hand() -> None:
    gain, lam = 0.7, 0.1
    xl, zl = Level(1.0, 0.96, math.sqrt(1 - 0.96**2)), Level(2.0, 0.6, 0.8)
    x = torch.tensor([[0.5, -1.2]], dtype=torch.float64)
    den = LinearEpsDenoiser(gain)
    problem = StepProblem(den, x, xl, zl, COND)
    z, cands = x, []
    for _ in range(2):
        f = zl.a * (x - xl.s * gain * z) / xl.a + zl.s * gain * z  # Eq. 4 with eps = gain z
        fvec = (f - z).abs() + (lam / 2) * ((f - x) / (zl.s / zl.a)) ** 2
        cands.append((float(fvec.mean()), f))
        z = z + fvec.mean() * torch.sign(f - z)
    assert torch.allclose(problem.implicit_map(problem.predict(x)), cands[0][1])
    res = gnri_official.invert(den, x, Grid((xl, zl)), COND, lam=lam, coordinates="latent")
    assert torch.allclose(res.z, min(cands, key=lambda c: c[0])[1], atol=1e-12)


def test_gnri_official_uses_the_real_numel_or_the_codes_constant() -> None:
    grid, x0 = vp_grid(2), _latents((1, 4, 4, 4))
    den = LinearEpsDenoiser(0.3)
    real = gnri_official.invert(den, x0, grid, COND).steps[0].series["step_size"][0]
    const = gnri_official.invert(den, x0, grid, COND, numel=64 * 64 * 4).steps[0].series["step_size"][0]
    assert math.isclose(float(real) / float(const), 64 * 64 * 4 / 64, rel_tol=1e-9)


@pytest.mark.parametrize("grid", [vp_grid(4), flow_grid(4, shift=3.0)])
def test_third_variants_solve_the_toy_exactly(grid: Grid) -> None:
    """The toy's residual is ``k I`` times the error: GMRES(1) and Anderson(1) are exact on it."""
    x0 = _latents((2, 4, 4, 4))
    den = GaussianDenoiser(0.0, C)
    for res in (
        newton_krylov.invert(den, x0, grid, COND, krylov_dim=1, tol=0.0),
        newton_krylov.invert(den, x0, grid, COND, krylov_dim=1, tol=0.0, jvp="tangent"),
        anderson.invert(den, x0, grid, COND, max_iters=3, tol=0.0),
        anderson.invert(den, x0, grid, COND, max_iters=3, tol=0.0, start="previous"),
    ):
        assert step_residuals(den, res, grid, COND).max() < 1e-6


def test_warm_start_costs_no_network_call_and_starts_closer() -> None:
    """``start='previous'``: the same forwards per step; from the second step on the first
    iterate is f of the previous step's prediction, nearer the root than x on a smooth denoiser."""
    x0, grid = _latents((2, 4, 4, 4)), vp_grid(6)
    counts, first = {}, {}
    for start in ("x", "previous"):
        den = CountingDenoiser(LinearEpsDenoiser(0.3))
        res = anderson.invert(den, x0, grid, COND, max_iters=1, tol=0.0, start=start)
        counts[start] = den.counter.forward
        first[start] = step_residuals(LinearEpsDenoiser(0.3), res, grid, COND)[1:].mean()
    assert counts["x"] == counts["previous"] == len(grid.levels) - 1
    assert first["previous"] < first["x"]
    with pytest.raises(ValueError, match="inverter gnri_aa: start"):
        anderson.invert(LinearEpsDenoiser(0.3), x0, grid, COND, start="zero")


def test_options_fail_with_one_line_errors() -> None:
    x0, grid = _latents((1, 2)), vp_grid(2)
    den = GaussianDenoiser()
    with pytest.raises(ValueError, match="inverter gnri: step_rule"):
        gnri.invert(den, x0, grid, COND, step_rule="newton")
    with pytest.raises(ValueError, match="gnri prior: prior_mean"):
        gnri.invert(den, x0, grid, COND, prior_mean="zero")
    with pytest.raises(ValueError, match="inverter gnri_official: coordinates"):
        gnri_official.invert(den, x0, grid, COND, coordinates="ve")
    with pytest.raises(ValueError, match="inverter gnri_nk: jvp"):
        newton_krylov.invert(den, x0, grid, COND, jvp="exact")


FAMILIES = {"tiny_sd_adapter": "ddim", "tiny_sdxl_adapter": "euler", "tiny_flux_adapter": "flow_euler"}


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_gnri_beats_ddim_inversion_on_tiny_models(fixture: str, request: pytest.FixtureRequest) -> None:
    """(3) Every family, 4 and 10 steps: GNRI (defaults) leaves a smaller per-step residual
    than DDIM inversion and its round trip closes better. Unit-normal latents (the scale of a
    real VAE's scaled latents; the random tiny VAE's are ~20x smaller)."""
    adapter = request.getfixturevalue(fixture)
    x0 = torch.randn(adapter.latent_shape(2), generator=torch.Generator().manual_seed(0))
    cond = adapter.encode_prompts(["a red circle", "a blue square"])
    den = adapter.denoiser()
    for steps in (4, 10):
        grid = adapter.grid(ScheduleSpec(kind=FAMILIES[fixture], num_steps=steps), x0.shape)
        with torch.no_grad():
            base = ddim.invert(den, x0, grid, cond)
        ours = gnri.invert(den, x0, grid, cond)
        with torch.no_grad():
            r_base = step_residuals(den, base, grid, cond).mean()
            r_ours = step_residuals(den, ours, grid, cond).mean()
            rt_base = (sample(den, base.z, grid, cond) - x0).pow(2).mean().sqrt()
            rt_ours = (sample(den, ours.z, grid, cond) - x0).pow(2).mean().sqrt()
        assert r_ours < r_base, (steps, float(r_ours), float(r_base))
        assert rt_ours < rt_base, (steps, float(rt_ours), float(rt_base))
