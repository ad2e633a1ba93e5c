"""gnri_2x (issue 14): 2 forwards per step and no backward, a by-hand transcription of its update on
consecutive steps of a VP and a flow grid (a nonlinear toy network), the Chebyshev relaxations'
defining property, exactness where the secant is exact, and one-line errors.

The transcription never calls ``gnri.methods`` or ``StepProblem``: the toy network, DDIM's Eq. 4 /
the flow Euler step, the spectrum floor and the Anderson secant are written out here."""

from __future__ import annotations

import math

import pytest
import torch

from gnri.core import Conditioning, CountingDenoiser, Grid, Level, Prediction, Tensor, step_residuals
from gnri.methods import gnri_2x
from gnri.toy import LinearEpsDenoiser, vp_grid

COND = Conditioning({})
F64 = torch.float64
M = torch.tensor([[0.6, -0.3, 0.2, 0.1], [0.2, 0.5, -0.4, 0.0], [-0.1, 0.3, 0.7, 0.2], [0.0, -0.2, 0.1, 0.4]], dtype=F64)


def toy(z: Tensor, lv: Level, family: str) -> tuple[Tensor, Tensor]:
    """(x0, eps) of a nonlinear eps- (VP) or velocity- (flow) prediction toy."""
    out = torch.tanh(z @ M.T) + lv.t / 1000
    if family == "vp":
        return (z - lv.s * out) / lv.a, out
    return z - lv.s * out, z + lv.a * out


class Toy:
    def __init__(self, family: str) -> None:
        self.family = family

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 1

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        return Prediction(*toy(z, level, self.family))


def _vp(abar: float, t: float) -> Level:
    return Level(t, math.sqrt(abar), math.sqrt(1 - abar))


VP = Grid((_vp(0.9991, 1.0), _vp(0.82, 250.0), _vp(0.46, 500.0), _vp(0.12, 750.0)))
FLOW = Grid(tuple(Level(sig, 1 - sig, sig) for sig in (0.0, 0.35, 0.62, 0.9)), family="flow")


def by_hand(x0: Tensor, grid: Grid, family: str, first: str = "chebyshev", start: str = "previous") -> list[Tensor]:
    lv, x, out, warm, preds = grid.levels, x0, [x0], None, []
    for i in range(len(lv) - 1):
        p, q = lv[i], lv[i + 1]

        def f(pred: tuple[Tensor, Tensor]) -> Tensor:
            x0h, eps = pred
            if family == "vp":
                return q.a * (x - p.s * eps) / p.a + q.s * eps
            return x + (q.s - p.s) * (eps - x0h)

        m = (p.s / p.a) / (q.s / q.a) if family == "vp" else p.s / q.s  # sigma_{t-1} / sigma_t
        # the larger Chebyshev node of [m, 1] at degree 2: (1+m)/2 + (1-m)/2 * cos(pi/4)
        omega = {"chebyshev": 1 / ((1 + m) / 2 + (1 - m) / 2 / math.sqrt(2)), "fixed_point": 1.0}[first]
        if start == "extrapolate" and len(preds) == 2:
            sig = [(lv[j].s if family == "flow" else lv[j].s / lv[j].a) for j in (i - 1, i, i + 1)]
            rho = min((sig[2] - sig[1]) / (sig[1] - sig[0]), 1.0)
            (a2, e2), (a1, e1) = preds
            warm = (a1 + rho * (a1 - a2), e1 + rho * (e1 - e2))
        z0 = x if warm is None else f(warm)
        f0 = f(toy(z0, q, family))
        z1 = z0 + omega * (f0 - z0)
        warm = toy(z1, q, family)
        preds = (preds + [warm])[-2:]
        f1 = f(warm)
        r0, r1 = f0 - z0, f1 - z1
        d = r1 - r0
        gamma = (d * r1).sum(dim=1, keepdim=True) / (d * d).sum(dim=1, keepdim=True)  # secant, per sample
        x = f1 - gamma * (f1 - f0)
        out.append(x)
    return out


@pytest.mark.parametrize("family", ["vp", "flow"])
@pytest.mark.parametrize("first,start", [("chebyshev", "previous"), ("fixed_point", "previous"),
                                         ("chebyshev", "extrapolate")])
def test_update_equals_the_transcription_on_consecutive_steps(family: str, first: str, start: str) -> None:
    grid = VP if family == "vp" else FLOW
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    want = by_hand(x0, grid, family, first, start)
    den = CountingDenoiser(Toy(family))
    res = gnri_2x.invert(den, x0, grid, COND, first=first, start=start, regularization=0.0)
    assert (den.counter.forward, den.counter.backward) == (2 * grid.num_steps, 0)
    for got, exp in zip(res.trajectory, want):
        torch.testing.assert_close(got, exp, rtol=0, atol=1e-10)


@pytest.mark.parametrize("m", [0.0, 0.2, 0.7])
def test_chebyshev_pair_equioscillates_on_the_interval(m: float) -> None:
    """p(mu) = (1 - w1 mu)(1 - w2 mu) has p(0) = 1 and |p| equal at m, 1 and its interior extremum."""
    w1, w2 = gnri_2x.chebyshev_relaxations(m)
    p = lambda mu: (1 - w1 * mu) * (1 - w2 * mu)  # noqa: E731
    inner = (w1 + w2) / (2 * w1 * w2)
    assert w1 < w2 and math.isclose(p(m), p(1.0), rel_tol=1e-12) and math.isclose(p(inner), -p(m), rel_tol=1e-12)


def test_exact_when_the_jacobian_is_a_multiple_of_identity() -> None:
    """eps = g z makes f affine with J_f = c I: the secant lands on every step's root."""
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    den, grid = LinearEpsDenoiser(0.4), vp_grid(4)
    res = gnri_2x.invert(den, x0, grid, COND)
    assert step_residuals(den, res, grid, COND).max() < 1e-9


def test_bad_options_fail_with_one_line_errors() -> None:
    x0, den = torch.zeros(1, 4, dtype=F64), Toy("vp")
    for key, value in (("start", "zero"), ("first", "newton"), ("second", "broyden"), ("omega_max", 0.5),
                       ("regularization", -1.0)):
        with pytest.raises(ValueError, match=f"inverter gnri_2x: {key}"):
            gnri_2x.invert(den, x0, VP, COND, **{key: value})
