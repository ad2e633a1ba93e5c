"""Analytic denoisers and grids with no network: the oracles of the test suite.

For Gaussian data ``x0 ~ N(m, c^2)`` (element-wise) the optimal prediction at a level is
closed-form and affine in ``z``, so every step's implicit equation has a root that can be
computed exactly, and the probability-flow ODE is linear. Valid for VP and flow levels alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gnri.core.types import Conditioning, Grid, Level, Prediction, Tensor


@dataclass
class GaussianDenoiser:
    """Posterior-mean denoiser for data ``N(mean + shift, std^2)``.

    ``cond.positive["shift"]`` (and ``cond.negative["shift"]`` under guidance) move the data
    mean, so prompts and classifier-free guidance act on it like on a text-conditioned model.
    """

    mean: float | Tensor = 0.0
    std: float | Tensor = 1.0

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 2 if cond.uses_cfg else 1

    def _one(self, z: Tensor, level: Level, branch: dict[str, Tensor]) -> Prediction:
        m = self.mean + branch.get("shift", 0.0)
        c2 = torch.as_tensor(self.std, dtype=z.dtype, device=z.device) ** 2
        denom = level.a**2 * c2 + level.s**2
        centred = z - level.a * m
        x0 = m + level.a * c2 * centred / denom
        eps = level.s * centred / denom
        return Prediction(x0, eps)

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        pos = self._one(z, level, cond.positive)
        if not cond.uses_cfg:
            return pos
        neg = self._one(z, level, cond.negative)  # type: ignore[arg-type]
        w = cond.guidance_scale
        return Prediction(neg.x0 + w * (pos.x0 - neg.x0), neg.eps + w * (pos.eps - neg.eps))


@dataclass
class LinearEpsDenoiser:
    """Noise prediction ``eps = gain * z`` (``gain = 0``: the zero predictor)."""

    gain: float = 0.0

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 2 if cond.uses_cfg else 1

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        eps = self.gain * z
        if level.a == 0.0:
            return Prediction(torch.zeros_like(z), z / level.s)
        return Prediction((z - level.s * eps) / level.a, eps)


def vp_grid(
    num_steps: int,
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    final_alpha_one: bool = True,
) -> Grid:
    """A DDIM-leading VP grid on SD's scaled-linear schedule, built without diffusers."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    alphabar = torch.cumprod(1.0 - betas, dim=0)
    ratio = num_train_timesteps // num_steps
    ts = [i * ratio + 1 for i in range(num_steps)]
    first = 1.0 if final_alpha_one else float(alphabar[0])
    levels = [Level(t=0.0, a=first**0.5, s=(1.0 - first) ** 0.5)]
    levels += [Level(float(t), float(alphabar[t]) ** 0.5, float(1 - alphabar[t]) ** 0.5) for t in ts]
    return Grid(tuple(levels))


def flow_grid(num_steps: int, shift: float = 1.0) -> Grid:
    """A rectified-flow grid ``a = 1 - sigma, s = sigma`` with sigmas shifted as in SD3/Flux."""
    sig = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)[:-1]
    sig = shift * sig / (1 + (shift - 1) * sig)
    sigmas = [0.0] + [float(v) for v in sig.flip(0)]
    return Grid(tuple(Level(t=v, a=1.0 - v, s=v) for v in sigmas), family="flow")


@dataclass
class ZeroVelocityDenoiser:
    """Flow-model oracle: velocity ``v = eps - x0 = 0`` (``x0 = eps = z``; needs ``a + s = 1``)."""

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 2 if cond.uses_cfg else 1

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        return Prediction(z, z)
