"""EDICT against a by-hand transcription of the official loop (issue 17, item 3).

Wallace, Gokul, Naik, "EDICT: Exact Diffusion Inversion via Coupled Transformations",
arXiv 2211.12446 (CVPR 2023); public code ``salesforce/EDICT``, ``edict_functions.py``:
``coupled_stablediffusion`` (mixing layers, ``leapfrog_steps``), ``forward_step`` and
``reverse_step``. The transcription below works on ``alphabar`` values and the network's eps
output, as that code does, and never calls :mod:`baselines.edict`; the network is the analytic
Gaussian toy of :mod:`gnri.toy` with a per-element data std, so every element sees a different
eps. The round-trip tests elsewhere invert with the exact inverse of the same code, so they
cannot see wrong coefficients, a wrong mixing order or a wrong leapfrog parity; this one can.
"""

from __future__ import annotations

import math

import pytest
import torch

from baselines import edict
from gnri.core import Conditioning, Grid, Level, Tensor
from gnri.toy import GaussianDenoiser

COND = Conditioning({})
P = 0.93
# alphabar at the clean end (the code's final_alpha_cumprod) and at four noisier DDIM timesteps.
ALPHABARS = (0.9991, 0.72, 0.45, 0.21, 0.08)
TIMESTEPS = (0.0, 251.0, 501.0, 751.0, 901.0)


def _toy() -> GaussianDenoiser:
    std = torch.linspace(0.3, 1.4, 2 * 3 * 4 * 4, dtype=torch.float64).reshape(1, 2, 3, 4, 4)[0]
    return GaussianDenoiser(mean=0.2, std=std)


def _grid(num_steps: int) -> Grid:
    levels = [Level(t, math.sqrt(ab), math.sqrt(1.0 - ab)) for t, ab in zip(TIMESTEPS, ALPHABARS)]
    return Grid(tuple(levels[: num_steps + 1]))


def _eps(den: GaussianDenoiser, latent: Tensor, k: int) -> Tensor:
    """The "UNet" noise prediction at DDIM timestep index ``k`` (the toy's exact posterior eps)."""
    ab = ALPHABARS[k]
    return den(latent, Level(TIMESTEPS[k], math.sqrt(ab), math.sqrt(1.0 - ab)), COND).eps


def _forward_step(eps: Tensor, sample: Tensor, ab_t: float, ab_prev: float) -> Tensor:
    """``edict_functions.forward_step`` (denoising, t -> prev)."""
    q = (ab_t / ab_prev) ** 0.5
    return (1.0 / q) * sample - (1.0 / q) * (1 - ab_t) ** 0.5 * eps + (1 - ab_prev) ** 0.5 * eps


def _reverse_step(eps: Tensor, sample: Tensor, ab_t: float, ab_prev: float) -> Tensor:
    """``edict_functions.reverse_step`` (noising, prev -> t)."""
    q = (ab_t / ab_prev) ** 0.5
    return q * sample + (1 - ab_t) ** 0.5 * eps - q * (1 - ab_prev) ** 0.5 * eps


def official_denoise(den: GaussianDenoiser, pair: list[Tensor], num_steps: int, p: float, leapfrog: bool) -> list[Tensor]:
    """``coupled_stablediffusion(reverse=False)`` from ``pair`` at the noisiest of ``num_steps`` steps."""
    pair = [v.clone() for v in pair]
    ks = list(range(num_steps, 0, -1))  # timesteps noisy -> clean; the step goes k -> k - 1
    for i, k in enumerate(ks):
        for latent_i in range(2):
            if leapfrog:
                latent_i = (latent_i + i % 2) % 2
            latent_j = (latent_i + 1) % 2
            eps = _eps(den, pair[latent_j], k)
            pair[latent_i] = _forward_step(eps, pair[latent_i], ALPHABARS[k], ALPHABARS[k - 1])
        new0 = p * pair[0] + (1 - p) * pair[1]
        new1 = (1 - p) * new0 + p * pair[1]
        pair = [new0, new1]
    return pair


def official_invert(den: GaussianDenoiser, x0: Tensor, num_steps: int, p: float, leapfrog: bool) -> list[Tensor]:
    """``coupled_stablediffusion(reverse=True)``: reverse mixing, then reverse steps in leapfrog order."""
    pair = [x0.clone(), x0.clone()]
    ks = list(range(1, num_steps + 1))  # timesteps flipped: clean -> noisy
    n = len(ks)
    for i, k in enumerate(ks):
        new1 = (pair[1] - (1 - p) * pair[0]) / p
        new0 = (pair[0] - (1 - p) * new1) / p
        pair = [new0, new1]
        for latent_i in range(2):
            if leapfrog:
                orig_i = n - (i + 1)
                latent_i = (latent_i + (orig_i + 1) % 2) % 2
            else:
                latent_i = (latent_i + 1) % 2
            latent_j = (latent_i + 1) % 2
            eps = _eps(den, pair[latent_j], k)
            pair[latent_i] = _reverse_step(eps, pair[latent_i], ALPHABARS[k], ALPHABARS[k - 1])
    return pair


def _latents(seed: int) -> Tensor:
    return torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("num_steps", [3, 4])
def test_edict_denoising_matches_the_official_loop_with_mixing_and_leapfrog(num_steps: int) -> None:
    """Three (and four: the leapfrog parity counts from the noisy end) coupled steps, p = 0.93,
    leapfrog on, from a pair with x != y: ours equals the code's loop to float64 precision."""
    den, grid = _toy(), _grid(num_steps)
    x, y = _latents(0), _latents(1)
    want = official_denoise(den, [x, y], num_steps, P, leapfrog=True)
    got = edict.sample_pair(den, grid, COND, x, y=y, mix_weight=P, leapfrog=True, coupling="eps")
    torch.testing.assert_close(got, want[0], rtol=0, atol=1e-12)
    # The transcription is sensitive to what it checks: without leapfrog the answer moves.
    other = official_denoise(den, [x, y], num_steps, P, leapfrog=False)
    assert (other[0] - want[0]).abs().max() > 1e-3


@pytest.mark.parametrize("num_steps", [3, 4])
@pytest.mark.parametrize("leapfrog", [True, False])
def test_edict_inversion_matches_the_official_reverse_loop(num_steps: int, leapfrog: bool) -> None:
    """``invert`` returns the code's reversed pair: ``z = latent_pair[0]``, ``extras['y'] = [1]``."""
    den, grid = _toy(), _grid(num_steps)
    x0 = _latents(2)
    want = official_invert(den, x0, num_steps, P, leapfrog)
    res = edict.invert(den, x0, grid, COND, mix_weight=P, leapfrog=leapfrog, coupling="eps")
    torch.testing.assert_close(res.z, want[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(res.extras["y"], want[1], rtol=0, atol=1e-10)
