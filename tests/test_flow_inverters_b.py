"""RF-Solver and FireFlow: convergence orders on an analytic flow, by-hand steps, round trips, NFE.

The oracle field is written here, independent of the code under test: the rectified-flow ODE
``dz/dsigma = (1 + sigma) z`` has the closed-form flow ``z(sigma) = z(0) exp(sigma + sigma^2 / 2)``.
A second-order solver's end-point error falls about 4x when the step halves, Euler's about 2x.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from baselines import ddim, fireflow, rf_solver
from gnri.core import Conditioning, CountingDenoiser, Grid, Level, Prediction, reconstruct
from gnri.toy import GaussianDenoiser, flow_grid, vp_grid

COND = Conditioning({})
SECOND_ORDER = (3.3, 4.7)  # the ratio of end-point errors N -> 2N steps, about 4
FIRST_ORDER = (1.7, 2.3)  # about 2


class GrowthField:
    """Velocity ``v(z, sigma) = (1 + sigma) z`` as a flow-model prediction (``x0 = z - s v``, ``eps = z + a v``)."""

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 1

    def __call__(self, z: torch.Tensor, level: Level, cond: Conditioning) -> Prediction:
        v = (1.0 + level.s) * z
        return Prediction(z - level.s * v, z + level.a * v)


def exact_flow(z0: torch.Tensor, s0: float, s1: float) -> torch.Tensor:
    def phi(s: float) -> float:
        return s + 0.5 * s * s

    return z0 * math.exp(phi(s1) - phi(s0))


def uniform_grid(n: int) -> Grid:
    return Grid(tuple(Level(t=k / n, a=1.0 - k / n, s=k / n) for k in range(n + 1)), family="flow")


X0 = torch.linspace(-1.0, 1.5, 7, dtype=torch.float64)[None]
INVERTERS = {"euler": ddim.invert, "rf_solver": rf_solver.invert, "fireflow": fireflow.invert}


def _errors(name: str) -> tuple[list[float], list[float]]:
    """End-point errors of inversion (x0 -> sigma=1) and of the method's sampler (exact noise -> x0)."""
    inv, gen = [], []
    z1 = exact_flow(X0, 0.0, 1.0)
    for n in (16, 32, 64):
        result = INVERTERS[name](GrowthField(), X0, uniform_grid(n), COND)
        inv.append((result.z - z1).abs().max().item())
        regenerated = reconstruct(GrowthField(), replace(result, z=z1), uniform_grid(n), COND)
        gen.append((regenerated - X0).abs().max().item())
    return inv, gen


@pytest.mark.parametrize("name,band", [("rf_solver", SECOND_ORDER), ("fireflow", SECOND_ORDER), ("euler", FIRST_ORDER)])
def test_halving_the_step_cuts_the_error_by_the_order(name: str, band: tuple[float, float]) -> None:
    for errors in _errors(name):
        ratios = [errors[i] / errors[i + 1] for i in range(len(errors) - 1)]
        assert all(band[0] < r < band[1] for r in ratios), (name, errors, ratios)


def _velocity(z: torch.Tensor, s: float) -> torch.Tensor:
    return (1.0 + s) * z


def test_fireflow_two_steps_by_hand() -> None:
    """FireFlow's first two inversion steps on the field, transcribed from the paper's update."""
    grid = Grid((Level(0.0, 1.0, 0.0), Level(0.3, 0.7, 0.3), Level(0.7, 0.3, 0.7)), family="flow")
    z0 = X0
    h1, h2 = 0.3, 0.4
    v_start = _velocity(z0, 0.0)  # the one extra call
    v_mid1 = _velocity(z0 + h1 / 2 * v_start, 0.15)
    z1 = z0 + h1 * v_mid1
    v_mid2 = _velocity(z1 + h2 / 2 * v_mid1, 0.5)  # reuses v_mid1 as the step's start velocity
    z2 = z1 + h2 * v_mid2
    counting = CountingDenoiser(GrowthField())
    result = fireflow.invert(counting, z0, grid, COND)
    torch.testing.assert_close(result.trajectory[1], z1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.z, z2, rtol=1e-12, atol=1e-12)
    assert counting.counter.forward == 3 and result.iterations == [2, 1]


def test_rf_solver_two_steps_by_hand() -> None:
    """RF-Solver's Taylor step: z + h v + h^2/2 * (v_mid - v) / (h/2), two calls per step."""
    grid = Grid((Level(0.0, 1.0, 0.0), Level(0.3, 0.7, 0.3), Level(0.7, 0.3, 0.7)), family="flow")
    z = X0
    for s0, s1 in ((0.0, 0.3), (0.3, 0.7)):
        h = s1 - s0
        v = _velocity(z, s0)
        dv = (_velocity(z + h / 2 * v, s0 + h / 2) - v) / (h / 2)
        z = z + h * v + h * h / 2 * dv
    counting = CountingDenoiser(GrowthField())
    result = rf_solver.invert(counting, X0, grid, COND)
    torch.testing.assert_close(result.z, z, rtol=1e-12, atol=1e-12)
    assert counting.counter.forward == 4 and result.iterations == [2, 2]


@pytest.mark.parametrize("steps", [4, 10])
def test_nfe_per_pass(steps: int) -> None:
    """RF-Solver: 2 per step each way; FireFlow: steps + 1 each way (reuse), 2 per step without."""
    grid = uniform_grid(steps)
    for fn, options, expected in ((rf_solver.invert, {}, 2 * steps), (fireflow.invert, {}, steps + 1),
                                  (fireflow.invert, {"reuse": False}, 2 * steps)):
        counting = CountingDenoiser(GrowthField())
        result = fn(counting, X0, grid, COND, **options)
        assert counting.counter.forward == expected
        counting.counter.reset()
        reconstruct(counting, result, grid, COND)
        assert counting.counter.forward == expected


def test_plain_midpoint_equals_rf_solver() -> None:
    """FireFlow without reuse is the midpoint rule, which RF-Solver's Taylor step equals algebraically."""
    grid = uniform_grid(6)
    a = rf_solver.invert(GrowthField(), X0, grid, COND)
    b = fireflow.invert(GrowthField(), X0, grid, COND, reuse=False)
    torch.testing.assert_close(a.z, b.z, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(fireflow.invert(GrowthField(), X0, grid, COND).z, a.z, rtol=1e-6, atol=0)


@pytest.mark.parametrize("fn", [rf_solver.invert, fireflow.invert], ids=["rf_solver", "fireflow"])
def test_round_trip_on_gaussian_toy_beats_euler(fn) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    denoiser = GaussianDenoiser(mean=0.2, std=0.6)
    x0 = 0.2 + 0.6 * torch.randn(2, 4, 8, 8, dtype=torch.float64)
    grid = flow_grid(20, shift=3.0)
    result = fn(denoiser, x0, grid, COND)
    error = (reconstruct(denoiser, result, grid, COND) - x0).abs().max().item()
    euler = ddim.invert(denoiser, x0, grid, COND)
    euler_error = (reconstruct(denoiser, euler, grid, COND) - x0).abs().max().item()
    assert error < 1e-2 and error < euler_error / 20, (error, euler_error)
    assert len(result.trajectory) == grid.num_steps + 1 and result.trajectory[0] is x0


@pytest.mark.parametrize("fn,name", [(rf_solver.invert, "rf_solver"), (fireflow.invert, "fireflow")])
def test_vp_grid_is_refused_in_one_line(fn, name: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=f"inverter {name}: needs a rectified-flow grid") as info:
        fn(GaussianDenoiser(), torch.zeros(1, 4), vp_grid(4), COND)
    assert "\n" not in str(info.value)


def test_fireflow_reuse_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="inverter fireflow: reuse must be true or false"):
        fireflow.invert(GrowthField(), X0, uniform_grid(2), COND, reuse="yes")  # type: ignore[arg-type]
