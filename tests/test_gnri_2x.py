"""gnri_2x (issue 14): 2x DDIM's forwards (2 per step, or front-loaded on the first step) and no backward, a by-hand transcription of its update on
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


def by_hand(x0: Tensor, grid: Grid, family: str, first: str = "chebyshev", start: str = "previous",
            evals: tuple[int, ...] | None = None) -> list[Tensor]:
    lv, x, out, warm, preds = grid.levels, x0, [x0], None, []
    evals = evals or (2,) * (len(lv) - 1)
    for i in range(len(lv) - 1):
        p, q = lv[i], lv[i + 1]

        def f(pred: tuple[Tensor, Tensor]) -> Tensor:
            x0h, eps = pred
            if family == "vp":
                return q.a * (x - p.s * eps) / p.a + q.s * eps
            return x + (q.s - p.s) * (eps - x0h)

        m = (p.s / p.a) / (q.s / q.a) if family == "vp" else p.s / q.s  # sigma_{t-1} / sigma_t
        # the larger Chebyshev node of [m, 1] at degree 2: (1+m)/2 + (1-m)/2 * cos(pi/4); at degree 1: (1+m)/2
        cheb = 1 / ((1 + m) / 2 + (1 - m) / 2 / math.sqrt(2)) if evals[i] >= 2 else 2 / (1 + m)
        omega = {"chebyshev": cheb, "fixed_point": 1.0}[first]
        if start == "extrapolate" and len(preds) == 2:
            sig = [(lv[j].s if family == "flow" else lv[j].s / lv[j].a) for j in (i - 1, i, i + 1)]
            rho = min((sig[2] - sig[1]) / (sig[1] - sig[0]), 1.0)
            (a2, e2), (a1, e1) = preds
            warm = (a1 + rho * (a1 - a2), e1 + rho * (e1 - e2))
        z = x if warm is None else f(warm)
        zs, fs = [], []
        for k in range(evals[i]):
            warm = toy(z, q, family)
            zs.append(z)
            fs.append(f(warm))
            if k == 0:
                z = z + omega * (fs[0] - zs[0])
                continue
            rs = [fj - zj for fj, zj in zip(fs, zs)]
            dr = torch.stack([b - a for a, b in zip(rs, rs[1:])], dim=-1)  # (B, D, k): per-sample least squares
            gamma = torch.linalg.lstsq(dr, rs[-1].unsqueeze(-1)).solution  # min ||r_k - dR gamma||
            df = torch.stack([b - a for a, b in zip(fs, fs[1:])], dim=-1)
            z = fs[-1] - (df @ gamma).squeeze(-1)
        preds = (preds + [warm])[-2:]
        x = z
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
    res = gnri_2x.invert(den, x0, grid, COND, first=first, start=start, regularization=0.0, schedule="uniform")
    assert (den.counter.forward, den.counter.backward) == (2 * grid.num_steps, 0)
    for got, exp in zip(res.trajectory, want):
        torch.testing.assert_close(got, exp, rtol=0, atol=1e-10)


@pytest.mark.parametrize("family", ["vp", "flow"])
@pytest.mark.parametrize("per_step,first_step,want_evals", [(2.0, 4, (4, 1, 1)), (2.0, 3, (3, 2, 1)), (1.0, 5, (1, 1, 1)),
                                                            (1.5, 5, (2, 1, 1))])
def test_front_schedule_equals_the_transcription(family: str, per_step: float, first_step: int,
                                                 want_evals: tuple[int, ...]) -> None:
    """Front-loaded budgets (Anderson over 3-4 evaluations on the first step, single relaxed steps after)."""
    grid = VP if family == "vp" else FLOW
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    want = by_hand(x0, grid, family, start="extrapolate", evals=want_evals)
    den = CountingDenoiser(Toy(family))
    res = gnri_2x.invert(den, x0, grid, COND, evals_per_step=per_step, first_step_evals=first_step, regularization=0.0,
                         first_step_tol=0.0)
    assert (den.counter.forward, den.counter.backward) == (sum(want_evals), 0)
    assert res.extras["evaluations"] == want_evals
    for got, exp in zip(res.trajectory, want):
        torch.testing.assert_close(got, exp, rtol=0, atol=1e-10)


def test_a_converged_first_step_gives_its_evaluations_to_the_later_steps() -> None:
    """On an affine problem the secant lands on the root after 2 evaluations, which the third one sees:
    the first step stops there and the 2 planned beyond it go to the later steps (cleaner first), 2N in all."""
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    den, grid = CountingDenoiser(LinearEpsDenoiser(0.4)), vp_grid(4)
    res = gnri_2x.invert(den, x0, grid, COND)
    assert res.extras["evaluations"] == (3, 2, 2, 1) and den.counter.forward == 8
    res = gnri_2x.invert(den, x0, grid, COND, first_step_tol=0.0)
    assert res.extras["evaluations"] == (5, 1, 1, 1)


@pytest.mark.parametrize("steps,per_step,first_step,schedule,want", [
    (4, 2.0, 5, "front", (5, 1, 1, 1)),
    (10, 2.0, 5, "front", (5, 2, 2, 2, 2, 2, 2, 1, 1, 1)),
    (10, 1.5, 5, "front", (5, 2, 1, 1, 1, 1, 1, 1, 1, 1)),
    (4, 1.5, 5, "front", (3, 1, 1, 1)),
    (1, 2.0, 5, "front", (2,)),
    (3, 4.0, 2, "front", (4, 4, 4)),  # the first step never gets less than its even share
    (10, 2.0, 5, "uniform", (2,) * 10),
    (4, 1.5, 5, "uniform", (2, 2, 1, 1)),
])
def test_evaluation_schedule(steps: int, per_step: float, first_step: int, schedule: str,
                             want: tuple[int, ...]) -> None:
    got = gnri_2x.evaluation_schedule(steps, per_step, first_step, schedule)
    assert got == want and sum(got) == int(per_step * steps)


@pytest.mark.parametrize("m", [0.0, 0.2, 0.7])
def test_chebyshev_pair_equioscillates_on_the_interval(m: float) -> None:
    """p(mu) = (1 - w1 mu)(1 - w2 mu) has p(0) = 1 and |p| equal at m, 1 and its interior extremum."""
    w1, w2 = gnri_2x.chebyshev_nodes(m, 2)
    p = lambda mu: (1 - w1 * mu) * (1 - w2 * mu)  # noqa: E731
    inner = (w1 + w2) / (2 * w1 * w2)
    assert w1 < w2 and math.isclose(p(m), p(1.0), rel_tol=1e-12) and math.isclose(p(inner), -p(m), rel_tol=1e-12)


def test_exact_when_the_jacobian_is_a_multiple_of_identity() -> None:
    """eps = g z makes f affine with J_f = c I: the secant lands on the root of every step given 2 or more."""
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    den, grid = LinearEpsDenoiser(0.4), vp_grid(4)
    for options in ({"schedule": "uniform"}, {"evals_per_step": 3.0, "first_step_tol": 0.0}):  # (5, 3, 2, 2)
        res = gnri_2x.invert(den, x0, grid, COND, **options)
        assert step_residuals(den, res, grid, COND).max() < 1e-9


def test_bad_options_fail_with_one_line_errors() -> None:
    x0, den = torch.zeros(1, 4, dtype=F64), Toy("vp")
    for key, value in (("start", "zero"), ("first", "newton"), ("second", "broyden"), ("omega_max", 0.5),
                       ("schedule", "back"), ("evals_per_step", 0.5), ("first_step_evals", 0), ("first_step_tol", -1.0),
                       ("regularization", -1.0)):
        with pytest.raises(ValueError, match=f"inverter gnri_2x: {key}"):
            gnri_2x.invert(den, x0, VP, COND, **{key: value})


class Saturating:
    """``x0hat = 0.9 tanh(z / a)``: nearly linear for small latents (the first step converges at
    once), flat for latents near its range's edge (it does not)."""

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 1

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        x0 = 0.9 * torch.tanh(z / level.a)
        return Prediction(x0, (z - level.a * x0) / level.s)


def test_each_image_of_a_batch_gets_the_budget_it_gets_alone() -> None:
    """A batch of an easy and a hard image (from the clean level): the easy one stops its first
    step at its even share, the hard one spends 4; each equals its own single-image run."""
    gen = torch.Generator().manual_seed(5)
    x0 = torch.cat([1e-3 * torch.randn(1, 4, 4, 4, generator=gen, dtype=F64),
                    (3.0 * torch.randn(1, 4, 4, 4, generator=gen, dtype=F64)).clamp(-0.85, 0.85)])
    den = Saturating()
    grid = Grid((Level(0.0, 1.0, 0.0), _vp(0.6, 250.0), _vp(0.3, 500.0), _vp(0.1, 750.0), _vp(0.02, 999.0)))
    batch = gnri_2x.invert(den, x0, grid, COND)
    singles = [gnri_2x.invert(den, x0[j:j + 1], grid, COND) for j in range(2)]
    assert [tuple(s.extras["evaluations_per_image"][0].tolist()) for s in singles] == [(2, 2, 2, 2), (4, 2, 1, 1)]
    assert torch.equal(batch.extras["evaluations_per_image"], torch.cat([s.extras["evaluations_per_image"] for s in singles]))
    assert batch.extras["evaluations"] == (4, 2, 2, 2)  # the batch's calls: the most any image makes
    for step in range(grid.num_steps + 1):
        torch.testing.assert_close(batch.trajectory[step], torch.cat([s.trajectory[step] for s in singles]),
                                   rtol=0, atol=1e-12)


def test_gnri_aa_tol_is_per_image_in_a_batch() -> None:
    """gnri_aa's ``tol``: the image that reaches it keeps its evaluated latent while the other
    iterates on; the batch equals each image alone (it used to iterate both until both converged)."""
    from gnri.methods import anderson

    gen = torch.Generator().manual_seed(5)
    x0 = torch.cat([1e-3 * torch.randn(1, 4, 4, 4, generator=gen, dtype=F64),
                    (3.0 * torch.randn(1, 4, 4, 4, generator=gen, dtype=F64)).clamp(-0.85, 0.85)])
    grid = Grid((Level(0.0, 1.0, 0.0), _vp(0.6, 250.0), _vp(0.3, 500.0)))
    options = {"tol": 1e-6, "max_iters": 6}
    batch = anderson.invert(Saturating(), x0, grid, COND, **options)
    singles = [anderson.invert(Saturating(), x0[j:j + 1], grid, COND, **options) for j in range(2)]
    assert singles[0].steps[0].iters < singles[1].steps[0].iters  # the easy one stops first
    for step in range(grid.num_steps + 1):
        torch.testing.assert_close(batch.trajectory[step], torch.cat([s.trajectory[step] for s in singles]),
                                   rtol=0, atol=1e-12)
