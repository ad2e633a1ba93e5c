"""Value oracles for GNRI's defaults, its flow branches, gnri_nk's Krylov path and gnri_aa (issue 17).

Every expected value here is computed by hand in plain torch/numpy from the formulas the
docstrings cite (arXiv 2312.12540 Eq. 4, 9, 10; the public code's ``inversion_step``; GMRES as
Saad & Schultz 1986; Anderson type II, Walker & Ni 2011), never by calling the code under test.
The toys are analytic: the Gaussian posterior-mean denoiser (per-element data std, so the
Jacobian of the implicit map is diagonal but not scalar) and a linear eps = M z with a full,
non-symmetric M (a Jacobian that is not even diagonal).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines import anderson as aidi
from gnri.core import Conditioning, Grid, Level, Prediction, Tensor
from gnri.methods import anderson as gnri_aa
from gnri.methods import gnri, gnri_official, newton_krylov
from gnri.toy import GaussianDenoiser

COND = Conditioning({})
F64 = torch.float64
STD = torch.tensor([0.35, 0.8, 1.3], dtype=F64)  # per-element data std of the Gaussian toy (mean 0)


def _vp(alphabar: float, t: float) -> Level:
    return Level(t, math.sqrt(alphabar), math.sqrt(1.0 - alphabar))


def _fl(sigma: float) -> Level:
    return Level(sigma, 1.0 - sigma, sigma)


VP_STEP = Grid((_vp(0.93, 1.0), _vp(0.55, 2.0)))
FLOW_STEP = Grid((_fl(0.25), _fl(0.6)), family="flow")
FLOW_TWO = Grid((_fl(0.0), _fl(0.3), _fl(0.7)), family="flow")


def _x(seed: int = 0, batch: int = 2, numel: int = 3) -> Tensor:
    return torch.randn(batch, numel, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------ by-hand Gaussian toy


def _gauss(z: Tensor, lv: Level) -> tuple[Tensor, Tensor]:
    """(x0, eps) of N(0, STD^2) data at level ``lv``: x0 = a c^2 z / d, eps = s z / d, d = a^2 c^2 + s^2."""
    d = lv.a**2 * STD**2 + lv.s**2
    return lv.a * STD**2 * z / d, lv.s * z / d


def _f_and_slope(z: Tensor, x: Tensor, xl: Level, zl: Level, family: str) -> tuple[Tensor, Tensor]:
    """The implicit map f(z) (Eq. 4 for VP; x + (s_t - s_{t-1}) v for flow) and df/dz (diagonal)."""
    x0, eps = _gauss(z, zl)
    d = zl.a**2 * STD**2 + zl.s**2
    if family == "vp":
        f = zl.a * (x - xl.s * eps) / xl.a + zl.s * eps
        slope = (zl.s - zl.a * xl.s / xl.a) * zl.s / d
    else:
        f = x + (zl.s - xl.s) * (eps - x0)
        slope = (zl.s - xl.s) * (zl.s - zl.a * STD**2) / d
    return f, slope.expand_as(z)


def gnri_by_hand(
    x: Tensor, grid: Grid, *, lam: float = 0.1, eta: float = 1e-3, max_iters: int = 2, tol: float = 1e-4,
    keep_best: bool = True, output: str = "f",
) -> tuple[Tensor, list[int]]:
    """GNRI (paper variant, min-norm step, plain-l2 prior, start at x) on a one-step grid, by hand.

    F(z) = ||z - f||_1 + lam w ||z - mu||_2, g = sign(z - f)(1 - f') + lam w (z - mu)/||z - mu||,
    z <- z - F g / (||g||^2 + eta). Prior: VP mu = (a_t/a_{t-1}) x, w = 1/beta_t with
    beta_t = s_t^2 - (a_t/a_{t-1})^2 s_{t-1}^2; flow mu = x, w = 1. Returns the output per sample
    and, per sample, the index of the picked iterate.
    """
    xl, zl = grid.levels
    if grid.family == "vp":
        gamma = zl.a / xl.a
        mu, w = gamma * x, 1.0 / (zl.s**2 - gamma**2 * xl.s**2)
    else:
        mu, w = x, 1.0
    outs, picks = [], []
    for b in range(x.shape[0]):
        xb, mub = x[b], mu[b]
        z, iterates = xb.clone(), []
        for k in range(max_iters + 1):
            f, slope = _f_and_slope(z, xb, xl, zl, grid.family)
            res = z - f
            rms = float(res.pow(2).mean().sqrt())
            iterates.append((rms, z, f))
            if rms <= tol or k == max_iters:
                break
            dist = z - mub
            norm = float(dist.norm())
            F = float(res.abs().sum()) + lam * w * norm
            g = torch.sign(res) * (1 - slope) + (lam * w * dist / norm if norm > 0 else 0.0)
            z = z - F * g / (float(g.pow(2).sum()) + eta)
        pick = min(range(len(iterates)), key=lambda i: (iterates[i][0], i)) if keep_best else len(iterates) - 1
        picks.append(pick)
        outs.append(iterates[pick][2] if output == "f" else iterates[pick][1])
    return torch.stack(outs), picks


@pytest.mark.parametrize("grid", [VP_STEP, FLOW_STEP], ids=["vp", "flow"])
def test_gnri_defaults_match_two_newton_iterations_by_hand(grid: Grid) -> None:
    """The defaults (lam 0.1, eta 1e-3, 2 iterations, keep_best, output f) on a 3-element latent,
    where eta is 1e-3 of ||g||^2 and so visible at float64 precision."""
    x = _x(0)
    want, _ = gnri_by_hand(x, grid)
    got = gnri.invert(GaussianDenoiser(0.0, STD), x, grid, COND).z
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # each default matters at this tolerance: another value gives another answer
    for other in ({"lam": 0.2}, {"eta": 1e-2}, {"output": "z"}, {"max_iters": 1}):
        moved, _ = gnri_by_hand(x, grid, **other)
        assert (moved - want).abs().max() > 1e-8, other


@pytest.mark.parametrize("grid", [VP_STEP, FLOW_STEP], ids=["vp", "flow"])
def test_gnri_keep_best_changes_the_answer_when_newton_overshoots(grid: Grid) -> None:
    """Six iterations with lam = 1: Newton on the non-smooth objective overshoots, the residual is
    not monotone, and keep_best returns an earlier iterate than the last (by hand, both ways)."""
    x = _x(1)
    opts = {"lam": 1.0, "max_iters": 6}
    best, picks = gnri_by_hand(x, grid, **opts)
    last, _ = gnri_by_hand(x, grid, keep_best=False, **opts)
    assert any(p < 6 for p in picks) and (best - last).abs().max() > 1e-6  # the toy exercises the option
    den = GaussianDenoiser(0.0, STD)
    torch.testing.assert_close(gnri.invert(den, x, grid, COND, **opts).z, best, rtol=0, atol=1e-12)
    torch.testing.assert_close(gnri.invert(den, x, grid, COND, keep_best=False, **opts).z, last, rtol=0, atol=1e-12)


@pytest.mark.parametrize("coordinates", ["scheduler", "latent"])
def test_gnri_official_flow_branch_by_hand(coordinates: str) -> None:
    """The public code's step ported to flow grids, two steps, by hand: z^0 = z_{t-1};
    f = z_{t-1} + (s_t - s_{t-1}) v(z); Fvec = |f - z| + (lam/2)((f - z0) c)^2 with z0 the CLEAN
    latent and c = 1/s_t (scheduler) or a_t/s_t (latent); keep the f of the best mean(Fvec);
    z <- z + mean(Fvec) sign(f - z)."""
    lam, x0 = 0.1, _x(2)
    x, trajectory = x0, [x0]
    for i in range(FLOW_TWO.num_steps):
        xl, zl = FLOW_TWO.levels[i], FLOW_TWO.levels[i + 1]
        scale = 1.0 / zl.s if coordinates == "scheduler" else zl.a / zl.s
        z, best, best_score = x.clone(), None, None
        for k in range(2):
            f, _ = _f_and_slope(z, x, xl, zl, "flow")
            fvec = (f - z).abs() + (lam / 2) * ((f - x0) * scale) ** 2
            score = fvec.mean(dim=1)
            if best is None:
                best, best_score = f.clone(), score
            else:
                take = score < best_score
                best = torch.where(take[:, None], f, best)
                best_score = torch.where(take, score, best_score)
            z = z + fvec.mean(dim=1, keepdim=True) * torch.sign(f - z)
        x = best
        trajectory.append(x)
    res = gnri_official.invert(GaussianDenoiser(0.0, STD), x0, FLOW_TWO, COND, lam=lam, coordinates=coordinates)
    for got, want in zip(res.trajectory, trajectory):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ gnri_nk's Krylov path

M = torch.tensor([[0.9, -0.6, 0.3], [0.4, 0.7, -0.5], [-0.2, 0.8, 1.1]], dtype=F64)


class MatrixEps:
    """eps = M z over the flattened latent (x0 = (z - s eps)/a): r(z) is affine with a full Jacobian."""

    def __init__(self, matrix: Tensor) -> None:
        self.m = matrix

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 1

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        eps = z @ self.m.T
        return Prediction((z - level.s * eps) / level.a, eps)


def _jacobian(matrix: np.ndarray, xl: Level, zl: Level) -> np.ndarray:
    """J of r(z) = a' x0(z) + s' eps(z) - x = (a'/a) z + (s' - a' s/a) M z - x."""
    n = matrix.shape[0]
    return (xl.a / zl.a) * np.eye(n) + (xl.s - xl.a * zl.s / zl.a) * matrix


@pytest.mark.parametrize("numel", [2, 3])
@pytest.mark.parametrize("jvp", ["secant", "tangent"])
def test_gnri_nk_default_krylov_step_is_gmres2_by_numpy(numel: int, jvp: str) -> None:
    """Defaults (one Newton step, krylov_dim = 2) from z^0 = x: the step minimises ||J d + r0||
    over span{r0, J r0} (numpy least squares). On 2 elements that space is everything, so the
    result is the exact root ``np.linalg.solve(J, x)``; on 3 it is the GMRES(2) iterate."""
    xl, zl = VP_STEP.levels
    m = M[:numel, :numel]
    J = _jacobian(m.numpy(), xl, zl)
    x = _x(3, numel=numel)
    want = []
    for xb in x.numpy():
        r0 = J @ xb - xb
        K = np.stack([r0, J @ r0], axis=1)
        c, *_ = np.linalg.lstsq(J @ K, -r0, rcond=None)
        want.append(xb + K @ c)
    want_t = torch.from_numpy(np.stack(want))
    got = newton_krylov.invert(MatrixEps(m), x, VP_STEP, COND, jvp=jvp).z
    atol = 1e-10 if jvp == "secant" else 1e-6  # tangent: finite differences at sqrt(eps) scale
    torch.testing.assert_close(got, want_t, rtol=0, atol=atol)
    if numel == 2:
        exact = torch.from_numpy(np.stack([np.linalg.solve(J, xb) for xb in x.numpy()]))
        torch.testing.assert_close(got, exact, rtol=0, atol=atol)
    else:  # GMRES(2) on a 3x3 system is not exact: the test sees the Krylov space, not only the root
        assert (want_t - torch.from_numpy(np.stack([np.linalg.solve(J, xb) for xb in x.numpy()]))).abs().max() > 1e-3


# ------------------------------------------------------------------ gnri_aa and baselines.anderson


class TanhEps:
    """A nonlinear eps that depends on the timestep only (not on the level's scales), as a real
    eps-prediction network does: eps = tanh(W z) (1 + t / 10)."""

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 1

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        eps = torch.tanh(z @ M.T) * (1.0 + level.t / 10.0)
        return Prediction((z - level.s * eps) / level.a, eps)


def _f_vp(eps: Tensor, x: Tensor, xl: Level, zl: Level) -> Tensor:
    """Eq. 4: the z that a DDIM step with ``eps`` held fixed takes exactly onto ``x``."""
    return zl.a * (x - xl.s * eps) / xl.a + zl.s * eps


def anderson_by_hand(fmap, x: Tensor, *, window: int, iters: int, output: str) -> Tensor:
    """Anderson type II (Walker & Ni 2011, Alg. AA, no damping) per sample, from z_0 = x:
    G_k = f(z_k), F_k = G_k - z_k, gamma = lstsq(dF, F_k) over the last ``window`` differences,
    z_{k+1} = G_k - dG gamma. Returns z_iters (``output='z'``) or G_{iters-1} (``'g'``)."""
    out = []
    for xb in x:
        z, Gs, Fs = xb.clone(), [], []
        for k in range(iters):
            G = fmap(z, xb)
            Gs.append(G)
            Fs.append(G - z)
            m = min(window, k)
            z = G
            if m:
                dF = torch.stack([Fs[j + 1] - Fs[j] for j in range(k - m, k)], dim=1)
                dG = torch.stack([Gs[j + 1] - Gs[j] for j in range(k - m, k)], dim=1)
                gamma = torch.linalg.lstsq(dF, Fs[-1].unsqueeze(1)).solution
                z = G - (dG @ gamma).squeeze(1)
        out.append(Gs[-1] if output == "g" else z)
    return torch.stack(out)


def test_gnri_aa_and_baselines_anderson_are_anderson_mixing_by_hand() -> None:
    """Both Anderson solvers against the type-II update written here with ``torch.linalg.lstsq``
    on the implicit map of a nonlinear eps network, over a three-step grid (each step starts at
    its x, the previous step's output): gnri_aa returns the extrapolated z (``output='z'``) or the
    last G (``'g'``); baselines.anderson (AIDI) the last G."""
    grid = Grid((_vp(0.95, 1.0), _vp(0.7, 2.0), _vp(0.4, 3.0)))
    x0 = _x(4)

    def chain(iters: int, output: str) -> list[Tensor]:
        xs = [x0]
        for xl, zl in zip(grid.levels[:-1], grid.levels[1:]):
            fmap = lambda z, xb, xl=xl, zl=zl: _f_vp(TanhEps()(z[None], zl, COND).eps[0], xb, xl, zl)  # noqa: E731
            xs.append(anderson_by_hand(fmap, xs[-1], window=3, iters=iters, output=output))
        return xs

    for iters in (1, 2, 4, 6):
        for output in ("z", "g"):
            got = gnri_aa.invert(TanhEps(), x0, grid, COND, lam=0.0, window=3, max_iters=iters, tol=0.0,
                                 regularization=0.0, output=output)
            for a, b in zip(got.trajectory, chain(iters, output)):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m: f"gnri_aa {iters} {output}: {m}")
        ref = aidi.invert(TanhEps(), x0, grid, COND, window=3, max_iters=iters, regularization=0.0)
        for a, b in zip(ref.trajectory, chain(iters, "g")):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m: f"anderson {iters}: {m}")
    # the window is a window: with window 1 after 4 iterations the update is another one
    narrow = gnri_aa.invert(TanhEps(), x0, grid, COND, window=1, max_iters=4, tol=0.0, regularization=0.0).z
    assert (narrow - chain(4, "z")[-1]).abs().max() > 1e-8


def test_anderson_on_an_affine_map_reaches_its_fixed_point_in_dim_plus_one_evaluations() -> None:
    """eps = M z makes the implicit map affine, f(z) = c x + B z, with fixed point
    (I - B)^-1 c x (numpy). Anderson with window >= dim on a 3-dim affine map is GMRES in disguise:
    the 4th evaluation's extrapolation is the exact fixed point, the 3rd's is not."""
    xl, zl = VP_STEP.levels
    B = (zl.s - zl.a * xl.s / xl.a) * M.numpy()
    x = _x(5)
    exact = torch.from_numpy(np.stack([np.linalg.solve(np.eye(3) - B, (zl.a / xl.a) * xb) for xb in x.numpy()]))
    assert (x - exact).abs().max() > 0.1  # far from the start
    four = gnri_aa.invert(MatrixEps(M), x, VP_STEP, COND, window=3, max_iters=4, tol=0.0, regularization=0.0).z
    torch.testing.assert_close(four, exact, rtol=0, atol=1e-10)
    three = gnri_aa.invert(MatrixEps(M), x, VP_STEP, COND, window=3, max_iters=3, tol=0.0, regularization=0.0).z
    assert (three - exact).abs().max() > 1e-4
    aidi_five = aidi.invert(MatrixEps(M), x, VP_STEP, COND, window=3, max_iters=5, regularization=0.0).z
    torch.testing.assert_close(aidi_five, exact, rtol=0, atol=1e-10)  # G of the exact z_4 is z_4


def test_gnri_aa_guided_fixed_point_per_element_closed_form() -> None:
    """gnri_aa with the prior (lam > 0) on the Gaussian toy with a different data std per element:
    the implicit map is diagonal affine with per-element slope f' (so z - f(z) = k (z - z*),
    k = 1 - f', z* = f(0) / k), and the guided map T = (f + kappa mu) / (1 + kappa),
    kappa = lam / beta_t, mu = (a_t / a_{t-1}) x, has the fixed point
    (k z* + kappa mu) / (k + kappa) in every element -- with a different pull toward mu in each."""
    xl, zl = VP_STEP.levels
    x = _x(6, batch=2, numel=3)
    f0, slope = _f_and_slope(torch.zeros_like(x), x, xl, zl, "vp")
    k = 1.0 - slope
    z_star = f0 / k
    gamma = zl.a / xl.a
    kappa = 0.3 / (zl.s**2 - gamma**2 * xl.s**2)
    want = (k * z_star + kappa * gamma * x) / (k + kappa)
    got = gnri_aa.invert(GaussianDenoiser(0.0, STD), x, VP_STEP, COND, lam=0.3, window=3, max_iters=6, tol=0.0).z
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    pull = (want - z_star) / (gamma * x - z_star)  # the fraction moved toward mu, per element
    assert pull.std(dim=1).min() > 1e-3  # the elements move by different fractions
    plain = gnri_aa.invert(GaussianDenoiser(0.0, STD), x, VP_STEP, COND, lam=0.0, window=3, max_iters=6, tol=0.0).z
    torch.testing.assert_close(plain, z_star, rtol=0, atol=1e-10)
