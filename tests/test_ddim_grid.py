"""The harness's ``ddim`` grid level by level against diffusers' DDIMScheduler (sampling) and
DDIMInverseScheduler (inversion), built from scheduler-config dicts (no network), issue 26.

For every config and step count: the grid's noisy levels are DDIMScheduler's timesteps with their
``alphas_cumprod``; its clean end is the level DDIMScheduler steps to last (``final_alpha_cumprod``
from ``set_alpha_to_one``); DDIMInverseScheduler's steps go level i -> i+1 of the same grid, its
first step leaving from ``initial_alpha_cumprod``; and one step of the shared sampler / of DDIM
inversion equals the scheduler's own ``step`` on the same tensors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from gnri.core import Level, Prediction, sample_step
from gnri.models.schedules import ddim_levels

ROOT = Path(__file__).resolve().parents[1]
WORLD = json.loads((ROOT / "datasets/world/sd/scheduler/scheduler_config.json").read_text())
SD_TABLE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "clip_sample": False, "steps_offset": 1, "timestep_spacing": "leading"}
CONFIGS = {
    "world": WORLD,
    "sd15": {**SD_TABLE, "set_alpha_to_one": False, "prediction_type": "epsilon"},
    "sd21": {**SD_TABLE, "set_alpha_to_one": False, "prediction_type": "v_prediction"},
    "alpha_to_one": {**SD_TABLE, "set_alpha_to_one": True, "prediction_type": "epsilon"},
    "trailing": {**SD_TABLE, "set_alpha_to_one": False, "timestep_spacing": "trailing", "steps_offset": 0},
}
STEPS = (4, 10, 50)
TOL = 1e-6  # diffusers keeps alphas_cumprod in float32; the grid reads them in float64


def _schedulers(config: dict[str, Any], n: int) -> tuple[DDIMScheduler, DDIMInverseScheduler]:
    """Fresh sampling and inverse schedulers, epsilon-fed (the shared step takes ``Prediction.eps``)."""
    fwd = DDIMScheduler.from_config({**config, "prediction_type": "epsilon"})
    inv = DDIMInverseScheduler.from_config({**config, "prediction_type": "epsilon"})
    fwd.set_timesteps(n)
    inv.set_timesteps(n)
    return fwd, inv


def _abar(level: Level) -> float:
    return level.a**2


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("name", tuple(CONFIGS))
def test_grid_levels_are_ddim_schedulers(name: str, n: int) -> None:
    config = CONFIGS[name]
    levels = ddim_levels(config, n)
    fwd, inv = _schedulers(config, n)
    table = fwd.alphas_cumprod.double()
    noisy = [int(t) for t in reversed(fwd.timesteps)]  # clean -> noisy
    assert len(levels) == n + 1
    assert [lv.t for lv in levels[1:]] == [float(t) for t in noisy]
    assert [_abar(lv) for lv in levels[1:]] == pytest.approx([float(table[t]) for t in noisy], abs=TOL)
    # the clean end: where DDIMScheduler's last step lands (t_last - T // n < 0 for every config here)
    assert noisy[0] - config["num_train_timesteps"] // n < 0
    assert _abar(levels[0]) == pytest.approx(float(fwd.final_alpha_cumprod), abs=TOL)
    assert _abar(levels[0]) == pytest.approx(1.0 if config.get("set_alpha_to_one") else float(table[0]), abs=TOL)
    # inversion: the same timesteps; step i leaves level i (the first from initial_alpha_cumprod)
    assert [int(t) for t in inv.timesteps] == noisy
    assert float(inv.initial_alpha_cumprod) == pytest.approx(_abar(levels[0]), abs=TOL)
    ratio = config["num_train_timesteps"] // n
    sources = [t - ratio for t in noisy]
    assert [float(table[s]) if s >= 0 else float(inv.initial_alpha_cumprod) for s in sources] == pytest.approx(
        [_abar(lv) for lv in levels[:-1]], abs=TOL)


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("name", ("world", "alpha_to_one"))
def test_one_step_matches_scheduler_step(name: str, n: int) -> None:
    """The shared step down to the clean end and DDIM inversion's first step, against ``step``."""
    config = CONFIGS[name]
    levels = ddim_levels(config, n)
    fwd, inv = _schedulers(config, n)
    gen = torch.Generator().manual_seed(0)
    z, eps = (torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    for i, t in enumerate(int(t) for t in reversed(fwd.timesteps)):  # every sampling step, noisy level i+1 -> i
        src = levels[i + 1]
        pred = Prediction((z - src.s * eps) / src.a, eps)
        expected = fwd.step(eps, t, z, eta=0.0).prev_sample
        torch.testing.assert_close(sample_step(pred, src, levels[i]), expected, rtol=TOL, atol=TOL)
        clean = levels[i]
        x0_hat = (z - clean.s * eps) / clean.a  # inversion leaves the cleaner latent z with the same eps
        torch.testing.assert_close(src.a * x0_hat + src.s * eps, inv.step(eps, t, z).prev_sample, rtol=TOL, atol=TOL)


def test_clean_end_step_is_small_at_four_steps() -> None:
    """The 4-step leading grid's first inversion step is the tiny one (clean end -> t=1), as in
    diffusers: no step is dropped or merged (the noisiest level is t=751, not 1000)."""
    levels = ddim_levels(WORLD, 4)
    assert [lv.t for lv in levels] == [0.0, 1.0, 251.0, 501.0, 751.0]
    assert not WORLD["set_alpha_to_one"]
    assert math.isclose(_abar(levels[0]), float(DDIMScheduler.from_config(WORLD).alphas_cumprod[0]), abs_tol=TOL)


@pytest.fixture(scope="module")
def bench_gnri():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_gnri", ROOT / "scripts" / "bench_gnri.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gnri"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("adapter_name", ["tiny_sd_adapter", "tiny_sd_v_adapter"])
def test_grid_free_transcription_matches_the_harness(bench_gnri, adapter_name: str, request) -> None:
    """DDIM inversion and the public step on diffusers' own tables (``DDIMInverseScheduler.step``,
    reconstruction by ``DDIMScheduler.step``) give the harness's latents at 4 leading steps."""
    from baselines import ddim
    from gnri.core import reconstruct
    from gnri.methods import gnri_official
    from gnri.models.base import ScheduleSpec

    adapter = request.getfixturevalue(adapter_name)
    x0 = torch.randn(adapter.latent_shape(2), generator=torch.Generator().manual_seed(0))
    cond = adapter.encode_prompts(["a cat", "a dog"])
    grid = adapter.grid(ScheduleSpec(kind="ddim", num_steps=4, spacing="leading"), x0.shape)
    rows = bench_gnri.diffusers_methods(bench_gnri._ddim_config(adapter, "leading"), 4)
    den = adapter.denoiser()
    with torch.no_grad():
        for ours, theirs in ((ddim.invert, rows["ddim[diffusers]"]), (gnri_official.invert, rows["transcription[diffusers]"])):
            a, b = ours(den, x0, grid, cond), theirs(den, x0, grid, cond)
            torch.testing.assert_close(a.z, b.z, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(reconstruct(den, a, grid, cond), reconstruct(den, b, grid, cond),
                                       rtol=1e-4, atol=1e-4)
