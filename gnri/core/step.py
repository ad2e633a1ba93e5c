"""The one shared sampling step and the per-step inversion problem.

``sample_step`` is DDIM (eta 0) for VP models and the Euler step for rectified-flow models:
with ``pred`` made at ``src``, ``sample_step(pred, dst) = dst.a * x0 + dst.s * eps``.
With a stored noise it is the deterministic-noise ancestral step: DDIM with eta = 1, which in
VP coordinates is exactly Euler-ancestral (``sigma_up``/``sigma_down``) in the VE coordinates
of k-diffusion and diffusers' EulerAncestralDiscreteScheduler.

Inverting step i means: given ``x`` at the cleaner level, find ``z`` at the noisier level with
``r(z) = sample_step(pred(z), cleaner) - x = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from gnri.core.types import Conditioning, Denoiser, Level, Prediction, Tensor


def ancestral_noise_scale(src: Level, dst: Level) -> float:
    """Std of the fresh noise of an eta = 1 DDIM (ancestral) step from ``src`` to ``dst``.

    DDIM (Song et al. 2021, Eq. 16) with eta = 1: ``c^2 = (s'^2/s^2) (1 - a^2/a'^2)``.
    """
    if src.s == 0.0 or dst.a == 0.0:
        return 0.0
    c2 = (dst.s**2 / src.s**2) * (1.0 - src.a**2 / dst.a**2)
    return math.sqrt(max(c2, 0.0))


def step_coefficients(src: Level, dst: Level, stochastic: bool) -> tuple[float, float, float]:
    """Coefficients ``(c_x0, c_eps, c_noise)`` of the step ``src -> dst``."""
    if not stochastic:
        return dst.a, dst.s, 0.0
    c = ancestral_noise_scale(src, dst)
    return dst.a, math.sqrt(max(dst.s**2 - c**2, 0.0)), c


def sample_step(pred: Prediction, src: Level, dst: Level, noise: Tensor | None = None) -> Tensor:
    """Move a prediction made at ``src`` to level ``dst`` (the shared sampler).

    Without ``noise`` this is ``dst.a * x0 + dst.s * eps`` and ``src`` is unused.
    """
    c_x0, c_eps, c_noise = step_coefficients(src, dst, noise is not None)
    out = c_x0 * pred.x0 + c_eps * pred.eps
    if noise is not None:
        out = out + c_noise * noise
    return out


def per_sample_rms(r: Tensor) -> Tensor:
    """Root-mean-square over every dimension but the first: shape (B,). Layout-agnostic."""
    return r.flatten(1).pow(2).mean(dim=1).sqrt()


@dataclass(frozen=True)
class StepProblem:
    """Invert one sampling step: find ``z`` at ``z_level`` whose step to ``x_level`` gives ``x``.

    The two residual forms are proportional: ``z - f(z) = residual_scale * r(z)``, where ``f``
    is the implicit map of GNRI (arXiv 2312.12540, Eq. 4 and its Euler form): the ``z`` that
    steps exactly to ``x`` with the network output held fixed (``family``: ``vp`` holds the
    noise prediction, ``flow`` the velocity).
    """

    denoiser: Denoiser
    x: Tensor
    x_level: Level
    z_level: Level
    cond: Conditioning
    noise: Tensor | None = None
    family: Literal["vp", "flow"] = "vp"

    def predict(self, z: Tensor) -> Prediction:
        """The network's prediction at ``z`` on the noisier level (one denoiser call)."""
        return self.denoiser(z, self.z_level, self.cond)

    @property
    def explicit_level(self) -> Level:
        """Level used by explicit DDIM inversion to evaluate the network at ``x``.

        Follows diffusers' DDIMInverseScheduler: the network sees the noisier level's timestep,
        while ``x``'s own scales convert its output (matters for v-prediction only).
        """
        return Level(t=self.z_level.t, a=self.x_level.a, s=self.x_level.s)

    def step_down(self, pred: Prediction) -> Tensor:
        """The shared sampler's step from ``z_level`` to ``x_level``."""
        return sample_step(pred, self.z_level, self.x_level, self.noise)

    def residual(self, pred: Prediction) -> Tensor:
        """``r(z) = sample_step(pred(z)) - x``: zero exactly at the inverse. In ``x`` units."""
        return self.step_down(pred) - self.x

    def implicit_map(self, pred: Prediction) -> Tensor:
        """``f``: the ``z`` that steps exactly onto ``x`` with ``pred``'s network output held fixed.

        VP: ``f = sqrt(a_t/a_{t-1}) x + sqrt(a_t) dpsi eps`` (arXiv 2312.12540, Eq. 4);
        flow: ``f = x + (sigma_t - sigma_{t-1}) v`` with ``v = eps - x0`` (its Euler form; the
        eps form would collapse to ``f(z) = z`` at ``sigma = 1``). Iterating ``f`` on
        ``predict(z)`` is fixed-point inversion; one application of ``f`` to a prediction made
        at ``x`` is DDIM inversion.
        """
        if self.family == "flow":
            if self.noise is not None:
                raise ValueError("stored (ancestral) noise is not supported on flow grids")
            return self.x + (self.z_level.s - self.x_level.s) * (pred.eps - pred.x0)
        eps = pred.eps
        c_x0, c_eps, c_noise = step_coefficients(self.z_level, self.x_level, self.noise is not None)
        rest = self.x - c_eps * eps
        if self.noise is not None:
            rest = rest - c_noise * self.noise
        return self.z_level.a * (rest / c_x0) + self.z_level.s * eps

    def fixed_point_residual(self, z: Tensor, pred: Prediction) -> Tensor:
        """``z - f(z)`` in ``z`` units (GNRI's residual)."""
        return z - self.implicit_map(pred)

    @property
    def residual_scale(self) -> float:
        """``z - f(z) == residual_scale * r(z)``: ``a_t / a_{t-1}`` (vp) or 1 (flow)."""
        return 1.0 if self.family == "flow" else self.z_level.a / self.x_level.a
