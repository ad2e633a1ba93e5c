"""Oracles for the baseline inverters (toy Gaussian denoiser in float64, then tiny models)."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
import torch

from baselines import anderson, ddim, edict, fixed_point, gradient_descent, negative_prompt, null_text, renoise
from gnri.core import Conditioning, CountingDenoiser, Grid, Level, reconstruct, sample, step_residuals
from gnri.toy import GaussianDenoiser, flow_grid, vp_grid

MEAN = 0.1
COND = Conditioning({})


def _x0(shape: tuple[int, ...] = (2, 4, 6, 6), seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _std(shape: tuple[int, ...] = (1, 4, 6, 6)) -> torch.Tensor:
    """Per-element data std: the implicit map contracts at a different rate in every element."""
    return 0.3 + torch.rand(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _toy() -> GaussianDenoiser:
    return GaussianDenoiser(mean=MEAN, std=_std())


def _cfg(x0: torch.Tensor, guidance: float = 7.5) -> Conditioning:
    """A prompt that shifts the data mean, with a learnable-looking (zero) negative branch."""
    return Conditioning({"shift": torch.full_like(x0, 0.5)}, {"shift": torch.zeros_like(x0)}, guidance)


def _root(x: torch.Tensor, src: Level, dst: Level, std: torch.Tensor) -> torch.Tensor:
    """The exact inverse of one step for Gaussian data N(MEAN, std^2), derived independently.

    At level (a, s) with D = a^2 c^2 + s^2: x0(z) = m + a c^2 (z - a m)/D, eps(z) = s (z - a m)/D,
    so r(z) = src.a x0 + src.s eps - x is affine in z and its root is closed-form.
    """
    a, s, c2 = dst.a, dst.s, std**2
    d = a**2 * c2 + s**2
    slope = (src.a * a * c2 + src.s * s) / d
    return a * MEAN + (x - src.a * MEAN) / slope


def _root_chain(x0: torch.Tensor, grid: Grid, std: torch.Tensor) -> list[torch.Tensor]:
    chain = [x0]
    for i in range(grid.num_steps):
        chain.append(_root(chain[-1], grid.levels[i], grid.levels[i + 1], std))
    return chain


# Flow grids are truncated below sigma = 1: there a = 0 and the implicit map z <- f(z) is the
# identity (see the fixed-point docstring), so no fixed-point method can improve that step.
ROOT_GRIDS = [vp_grid(10), vp_grid(4, final_alpha_one=False), flow_grid(10, shift=3.0).truncate(0.9)]


@pytest.mark.parametrize("grid", ROOT_GRIDS)
def test_fixed_point_and_anderson_reach_the_analytic_root_anderson_cheaper(grid: Grid) -> None:
    x0 = _x0()
    chain = _root_chain(x0, grid, _std())
    nfe = {}
    for name, module, options in (("fp", fixed_point, {"max_iters": 400}), ("aa", anderson, {"max_iters": 400})):
        den = CountingDenoiser(_toy())
        result = module.invert(den, x0, grid, COND, tol=1e-13, **options)
        for got, want in zip(result.trajectory, chain):
            assert (got - want).abs().max() < 1e-9, name
        assert max(result.iterations) < 400, name
        nfe[name] = den.counter.forward
    assert nfe["aa"] < 0.75 * nfe["fp"], nfe


def test_one_iteration_is_ddim_inversion() -> None:
    x0, grid, den = _x0(), vp_grid(10), _toy()
    reference = ddim.invert(den, x0, grid, COND).z
    assert torch.equal(fixed_point.invert(den, x0, grid, COND, max_iters=1).z, reference)
    assert torch.equal(anderson.invert(den, x0, grid, COND, max_iters=1).z, reference)
    assert torch.equal(renoise.invert(den, x0, grid, COND, num_renoise_steps=0).z, reference)


def test_keep_best_and_tol_freeze_per_sample() -> None:
    x0, grid, den = _x0(), vp_grid(10), _toy()
    plain = fixed_point.invert(den, x0, grid, COND, max_iters=8)
    best = fixed_point.invert(den, x0, grid, COND, max_iters=8, keep_best=True)
    # on a contraction the residual decreases monotonically, so the best iterate is the last one
    assert torch.equal(plain.z, best.z)
    # a stopped sample keeps its output: batch composition does not change a sample's result
    alone = fixed_point.invert(den, x0[:1], grid, COND, max_iters=50, tol=1e-6)
    batch = fixed_point.invert(den, x0, grid, COND, max_iters=50, tol=1e-6)
    assert torch.allclose(alone.z, batch.z[:1], atol=1e-14, rtol=0)


def test_renoise_first_step_rule_and_convergence() -> None:
    x0, den = _x0(), _toy()
    # SD's schedule at 4 steps: t = 1, 251, 501, 751; the code's "t < 250" rule picks step 0 only
    result = renoise.invert(den, x0, vp_grid(4), COND)
    assert result.iterations == [6, 10, 10, 10]
    # without averaging, many renoising steps are plain fixed-point iteration: the exact root
    grid = vp_grid(10)
    many = renoise.invert(
        den, x0, grid, COND, num_renoise_steps=300, max_first_step_renoise_steps=300, average=False
    )
    assert (many.z - _root_chain(x0, grid, _std())[-1]).abs().max() < 1e-9
    # averaging the late window lands between its members: output differs from the last iterate
    assert not torch.equal(result.z, renoise.invert(den, x0, vp_grid(4), COND, average=False).z)


@pytest.mark.parametrize("direction", ["forward_step", "gradient"])
def test_gradient_descent_reaches_tolerance(direction: str) -> None:
    x0, grid = _x0(), vp_grid(10)
    den = CountingDenoiser(_toy())
    result = gradient_descent.invert(den, x0, grid, COND, direction=direction, max_iters=500, tol=1e-8)
    assert max(result.iterations) < 501
    assert step_residuals(_toy(), result, grid, COND).max() < 1e-8
    assert (result.z - _root_chain(x0, grid, _std())[-1]).abs().max() < 1e-6
    assert (den.counter.backward > 0) == (direction == "gradient")


EDICT_GRIDS = [
    vp_grid(10),
    vp_grid(50, final_alpha_one=False),
    flow_grid(10, shift=3.0),  # coupling "auto" -> velocity (defined at sigma = 1)
]


@pytest.mark.parametrize("grid", EDICT_GRIDS)
@pytest.mark.parametrize("leapfrog", [True, False])
def test_edict_round_trip_closes_to_float_precision(grid: Grid, leapfrog: bool) -> None:
    x0 = _x0()
    den = CountingDenoiser(_toy())
    result = edict.invert(den, x0, grid, _cfg(x0), leapfrog=leapfrog)
    assert den.counter.forward == 2 * 2 * grid.num_steps  # two calls per step, CFG doubles
    assert (reconstruct(den, result, grid, _cfg(x0)) - x0).abs().max() < 1e-10
    assert not result.pure_latent and result.extras["y"].shape == x0.shape


def test_edict_eps_coupling_and_ancestral_noise() -> None:
    x0, den = _x0(), _toy()
    truncated = flow_grid(10, shift=3.0).truncate(0.8)  # a > 0 everywhere: the eps form applies
    result = edict.invert(den, x0, truncated, COND, coupling="eps")
    assert (reconstruct(den, result, truncated, COND) - x0).abs().max() < 1e-10
    noisy = vp_grid(6).with_noises(tuple(_x0(seed=10 + i) for i in range(6)))
    result = edict.invert(den, x0, noisy, COND)
    assert (reconstruct(den, result, noisy, COND) - x0).abs().max() < 1e-10
    with pytest.raises(ValueError, match="coupling='eps' needs a > 0"):
        edict.invert(den, x0, flow_grid(4), COND, coupling="eps")


@pytest.mark.parametrize("grid", [Grid(vp_grid(10).levels[3:5]), Grid(flow_grid(10, shift=3.0).levels[-2:], family="flow")])
def test_edict_step_is_the_shared_sampler_when_the_pair_agrees(grid: Grid) -> None:
    """With x == y and no mixing, x's update is exactly the DDIM/Euler step (code's forward_step)."""
    z, den = _x0(), _toy()
    got = edict.sample_pair(den, grid, COND, z, y=z, mix_weight=1.0, leapfrog=False, coupling="auto")
    assert torch.allclose(got, sample(den, z, grid, COND), atol=1e-13, rtol=0)


def test_null_text_beats_ddim_and_replays_its_negatives() -> None:
    x0, grid, den = _x0(), vp_grid(10), _toy()
    cond = _cfg(x0)
    before = cond.negative["shift"].clone()  # type: ignore[index]
    counted = CountingDenoiser(den)
    with torch.no_grad():  # as the harness runs it
        result = null_text.invert(counted, x0, grid, cond)
    assert torch.equal(cond.negative["shift"], before)  # type: ignore[index]
    steps, iters = grid.num_steps, sum(result.iterations)
    assert counted.counter.backward == iters  # negative branch only
    assert counted.counter.forward == steps + steps * (1 + 2) + iters  # pivot, positive, final CFG, inner
    nti_err = (reconstruct(den, result, grid, cond) - x0).pow(2).mean().sqrt()
    plain = ddim.invert(den, x0, grid, cond)
    ddim_err = (reconstruct(den, plain, grid, cond) - x0).pow(2).mean().sqrt()
    assert nti_err < 0.5 * ddim_err, (nti_err, ddim_err)
    # reconstruction replays exactly the per-step negatives, and they matter
    assert result.cond_per_step is not None and len(result.cond_per_step) == steps
    replay = sample(den, result.z, grid, cond, list(result.cond_per_step))
    assert torch.equal(reconstruct(den, result, grid, cond), replay)
    assert (sample(den, result.z, grid, cond) - replay).abs().max() > 1e-3
    negs = [c.negative["shift"] for c in result.cond_per_step]  # type: ignore[index]
    assert not torch.equal(negs[0], negs[-1]) and not torch.equal(negs[-1], before)


def test_negative_prompt_collapses_guidance() -> None:
    """The latent and the replay against by-hand DDIM maths: tests/test_oracle_negative_prompt.py.
    Here: on the Gaussian toy the reconstruction is the positive branch alone, in closed form
    (each DDIM step of the posterior-mean denoiser written out), and a zero null branch makes
    ``interp``'s slerp fall back to a lerp."""
    x0, grid, den = _x0(), vp_grid(10), _toy()
    cond = _cfg(x0)
    result = negative_prompt.invert(den, x0, grid, cond)
    assert result.cond_per_step is not None
    assert all(c.negative["shift"] is cond.positive["shift"] for c in result.cond_per_step)  # type: ignore[index]
    z, m, c2 = result.z, MEAN + 0.5, _std() ** 2  # the positive branch's data mean
    for i in reversed(range(grid.num_steps)):
        src, dst = grid.levels[i + 1], grid.levels[i]
        d = src.a**2 * c2 + src.s**2
        x0_hat, eps_hat = m + src.a * c2 * (z - src.a * m) / d, src.s * (z - src.a * m) / d
        z = dst.a * x0_hat + dst.s * eps_hat
    torch.testing.assert_close(reconstruct(den, result, grid, cond), z, rtol=0, atol=1e-12)
    halfway = negative_prompt.invert(den, x0, grid, cond, interp=0.5)
    assert halfway.cond_per_step is not None
    mixed = halfway.cond_per_step[0].negative["shift"]  # type: ignore[index]
    assert torch.allclose(mixed, torch.full_like(x0, 0.25))  # lerp where the null branch is zero


METHODS: list[tuple[Any, dict[str, Any]]] = [
    (fixed_point, {"max_iters": 5}),
    (anderson, {}),
    (renoise, {}),
    (gradient_descent, {"max_iters": 30}),
    (gradient_descent, {"max_iters": 10, "direction": "gradient"}),
    (edict, {}),
    (null_text, {"num_inner_steps": 3}),
    (negative_prompt, {}),
]


def _name(v: Any) -> str | None:
    return v.__name__.split(".")[-1] if hasattr(v, "__name__") else None


@pytest.mark.parametrize("module,options", METHODS, ids=_name)
def test_deterministic(module: Any, options: dict[str, Any]) -> None:
    grid = vp_grid(5)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        x0 = torch.randn(2, 4, 6, 6, dtype=torch.float64)
        result = module.invert(_toy(), x0, grid, _cfg(x0), **options)
        runs.append((result.z, reconstruct(_toy(), result, grid, _cfg(x0))))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("module", [null_text, negative_prompt])
def test_cfg_methods_refuse_without_guidance(module: Any) -> None:
    x0, grid, den = _x0(), vp_grid(4), _toy()
    for cond in (Conditioning({"shift": torch.zeros(1)}), _cfg(x0, guidance=1.0)):
        with pytest.raises(ValueError, match="needs classifier-free guidance"):
            module.invert(den, x0, grid, cond)
    distilled = replace(_cfg(x0, guidance=3.0), guidance_distilled=True)  # a guidance scale is not enough
    with pytest.raises(ValueError, match="guidance-distilled"):
        module.invert(den, x0, grid, distilled)


@pytest.mark.parametrize(
    "module,options",
    [
        (fixed_point, {"max_iters": 0}), (fixed_point, {"tol": 0.0}), (anderson, {"damping": 0.0}),
        (anderson, {"window": 0}), (renoise, {"average_range": (5, 5)}), (edict, {"coupling": "x"}),
        (edict, {"mix_weight": 0.0}), (gradient_descent, {"direction": "newton"}),
        (null_text, {"keys": ["missing"]}), (negative_prompt, {"interp": 2.0}),
    ],
)
def test_bad_options_raise(module: Any, options: dict[str, Any]) -> None:
    x0 = _x0()
    with pytest.raises(ValueError, match=f"inverter {module.__name__.split('.')[-1]}"):
        module.invert(_toy(), x0, vp_grid(4), _cfg(x0), **options)


# --- tiny diffusers models (fixtures from tests/conftest.py) ---------------------------------


def _float64(adapter: Any, family: str) -> Any:
    from gnri.models import load_adapter

    return load_adapter(family, copy.deepcopy(adapter.pipe), dtype="float64")


@pytest.mark.parametrize("family,kind,guidance", [("sd", "ddim", 3.0), ("flux", "flow_euler", 1.0)])
def test_edict_round_trip_on_tiny_models(
    request: pytest.FixtureRequest, family: str, kind: str, guidance: float
) -> None:
    from gnri.models import ScheduleSpec

    adapter = _float64(request.getfixturevalue(f"tiny_{family}_adapter"), family)
    shape = adapter.latent_shape(2)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = adapter.grid(ScheduleSpec(kind=kind, num_steps=6), shape)
    cond = adapter.encode_prompts(["a photo of a cat", "a red house"], guidance_scale=guidance)
    den = adapter.denoiser()
    result = edict.invert(den, x0, grid, cond)
    assert (reconstruct(den, result, grid, cond) - x0).abs().max() < 1e-9


def test_null_text_on_tiny_sd(tiny_sd_adapter: Any) -> None:
    from gnri.models import ScheduleSpec

    adapter = tiny_sd_adapter
    shape = adapter.latent_shape(1)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    grid = adapter.grid(ScheduleSpec(kind="ddim", num_steps=5), shape)
    cond = adapter.encode_prompts(["a photo of a cat"], guidance_scale=7.5)
    den = adapter.denoiser()
    with torch.no_grad():
        result = null_text.invert(den, x0, grid, cond, num_inner_steps=5)
        nti = (reconstruct(den, result, grid, cond) - x0).pow(2).mean()
        plain = (reconstruct(den, ddim.invert(den, x0, grid, cond), grid, cond) - x0).pow(2).mean()
    assert nti < plain
    assert all(p.grad is None for p in adapter.pipe.unet.parameters())  # no gradient leaks
    distilled = adapter.encode_prompts(["a photo of a cat"], guidance_scale=1.0)
    with pytest.raises(ValueError, match="needs classifier-free guidance"):
        null_text.invert(den, x0, grid, distilled)
