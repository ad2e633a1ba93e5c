"""gnri_official's default (``coordinates='grid'``) against an independent by-hand transcription of
the public code's ``inversion_step`` (dvirsamuel/NewtonRaphsonInversion) written in the grid's own
coordinates (issue 14), on several consecutive steps of a VP (DDIM-like, v-prediction toy) and a
flow grid. The transcription below never calls ``gnri.methods`` or ``StepProblem``: the network
is a closed-form toy, DDIM's Eq. 4 / the flow Euler step and the score are written out here.
"""

from __future__ import annotations

import math

import pytest
import torch

from baselines import ddim
from gnri.core import Conditioning, Grid, Level, Prediction, Tensor
from gnri.methods import gnri_official

COND = Conditioning({})
F64 = torch.float64
M = torch.tensor([[0.6, -0.3, 0.2, 0.1], [0.2, 0.5, -0.4, 0.0], [-0.1, 0.3, 0.7, 0.2], [0.0, -0.2, 0.1, 0.4]], dtype=F64)


def vtoy(z: Tensor, t: float, a: float, s: float, family: str) -> tuple[Tensor, Tensor]:
    """(x0, eps) of a nonlinear toy network: VP predicts ``v = tanh(M z) + t/100`` (converted with
    the level's own a, s as a v-prediction scheduler does: eps = a v + s z, x0 = a z - s v); flow
    predicts the velocity ``u = tanh(M z) + t`` (eps = z + a u, x0 = z - s u)."""
    out = torch.tanh(z @ M.T) + (t / 100 if family == "vp" else t)
    if family == "vp":
        return a * z - s * out, a * out + s * z
    return z - s * out, z + a * out


class ToyNet:
    def __init__(self, family: str) -> None:
        self.family = family

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 1

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        x0, eps = vtoy(z, level.t, level.a, level.s, self.family)
        return Prediction(x0, eps)


def _vp(abar: float, t: float) -> Level:
    return Level(t, math.sqrt(abar), math.sqrt(1 - abar))


VP_GRID = Grid((_vp(0.9991, 0.0), _vp(0.82, 250.0), _vp(0.46, 500.0), _vp(0.12, 750.0)))
FLOW_GRID = Grid(tuple(Level(sig, 1 - sig, sig) for sig in (0.0, 0.35, 0.62, 0.9)), family="flow")


def transcription(x0: Tensor, grid: Grid, family: str, lam: float, n_iters: int) -> list[Tensor]:
    """The public sign step by hand, in the grid's coordinates; returns the trajectory."""
    lv = grid.levels
    x, out = x0, [x0]
    for i in range(len(lv) - 1):
        (tp, ap, sp), (t, a, s) = (lv[i].t, lv[i].a, lv[i].s), (lv[i + 1].t, lv[i + 1].a, lv[i + 1].s)
        z = x.clone()
        best = x.clone()
        best_score = torch.full((x.shape[0],), math.inf, dtype=F64)
        for k in range(n_iters):
            # the scheduler's inv_step: first call as DDIMInverseScheduler (timestep t, the cleaner
            # level's scales); later probes z sit at level t
            hx0, heps = vtoy(z, t, ap, sp, family) if k == 0 else vtoy(z, t, a, s, family)
            if family == "vp":
                f = a * (x - sp * heps) / ap + s * heps  # DDIM eta 0 solved for z_t (Eq. 4)
            else:
                f = x + (s - sp) * (heps - hx0)  # flow Euler step solved for z_t
            fvec = (f - z).abs() + 0.5 * lam * ((f - a * x0) / s) ** 2  # -lam log N(f; a z0, s^2)
            score = fvec.mean(dim=1)
            for b in range(x.shape[0]):
                if score[b] < best_score[b]:
                    best_score[b], best[b] = score[b], f[b]
            z = z - fvec.sum(dim=1, keepdim=True) / x.shape[1] / torch.sign(z - f)  # l / grad, grad = sign(z - f)
        x = best
        out.append(x)
    return out


@pytest.mark.parametrize("family", ["vp", "flow"])
@pytest.mark.parametrize("n_iters", [2, 3])
def test_default_equals_the_transcription_on_consecutive_steps(family: str, n_iters: int) -> None:
    grid = VP_GRID if family == "vp" else FLOW_GRID
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    want = transcription(x0, grid, family, lam=0.1, n_iters=n_iters)
    res = gnri_official.invert(ToyNet(family), x0, grid, COND, n_iters=n_iters)
    assert res.extras["coordinates"] == "grid"
    assert len(res.trajectory) == len(want) == 4
    for got, exp in zip(res.trajectory, want):
        torch.testing.assert_close(got, exp, rtol=0, atol=1e-12)
    # the transcription is sensitive to each ingredient the issue names
    moved = transcription(x0, grid, family, lam=0.2, n_iters=n_iters)
    assert (moved[-1] - want[-1]).abs().max() > 1e-6


@pytest.mark.parametrize("family", ["vp", "flow"])
def test_first_candidate_is_ddim_inversion(family: str) -> None:
    """With one iteration the best (only) candidate is ``f(z^0)``: DDIM/Euler inversion, exactly."""
    grid = VP_GRID if family == "vp" else FLOW_GRID
    x0 = torch.randn(2, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    one = gnri_official.invert(ToyNet(family), x0, grid, COND, n_iters=1)
    torch.testing.assert_close(one.z, ddim.invert(ToyNet(family), x0, grid, COND).z, rtol=0, atol=1e-12)


def test_former_default_differs_from_the_transcription_on_vp() -> None:
    """``scheduler`` (VE coordinates) and ``latent`` are not the grid translation on VP grids."""
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    want = transcription(x0, VP_GRID, "vp", lam=0.1, n_iters=2)[-1]
    for coordinates in ("scheduler", "latent"):
        got = gnri_official.invert(ToyNet("vp"), x0, VP_GRID, COND, coordinates=coordinates).z
        assert (got - want).abs().max() > 1e-4, coordinates
