"""Grids read from diffusers' scheduler tables. Pure functions: ``scheduler.step`` is never called.

Each builder makes a fresh scheduler from the model's scheduler config (the model's own
scheduler is never mutated), calls ``set_timesteps`` to get its tables and turns them into
:class:`~gnri.core.Level` s, clean -> noisy. The shared sampler (``gnri.core.sample_step``)
stepping these levels reproduces diffusers' own sampling:

- ``ddim``: DDIMScheduler, eta 0 (without ``clip_sample``/thresholding, which we never apply).
  The clean end is the level DDIMScheduler steps to last: ``alphas_cumprod[t_last - ratio]``
  if that index is >= 0, else ``final_alpha_cumprod`` (1 with ``set_alpha_to_one``, else
  ``alphas_cumprod[0]``, SD's setting). DDIMScheduler always steps to ``t - T // n``, which is
  the next timestep for ``leading`` spacing and for ``trailing`` when ``n`` divides ``T``; for
  ``linspace`` (or trailing otherwise) diffusers' own steps land off its timestep grid, and
  ours step to the next timestep instead. When the last timestep's level already is the clean
  end (linspace ends on t = 0 and ``set_alpha_to_one`` is False), diffusers' last step is the
  identity; the grid omits it and has ``num_steps - 1`` steps.
- ``euler`` / ``euler_ancestral``: Euler(Ancestral)DiscreteScheduler sigmas (VE) expressed in
  VP coordinates ``a = 1/sqrt(1+sigma^2)``, ``s = sigma a``. A VP latent is the VE latent
  divided by ``sqrt(1+sigma^2)``, which is exactly the UNet input after ``scale_model_input``;
  the Euler step in VE coordinates is then the DDIM step in VP coordinates, and the ancestral
  step (``sigma_up``/``sigma_down``) is DDIM with eta = 1. The final sigma 0 gives ``a=1, s=0``.
  The ancestral noise list is drawn from ``noise_seed`` by a CPU ``torch.Generator`` in
  sampling order (the noisiest step's noise first), so a diffusers pipeline given
  ``generator=torch.Generator().manual_seed(noise_seed)`` and explicit ``latents`` draws the
  same noises (in the latent dtype; a half-precision pipeline draws half-precision noise).
  The list is drawn for the full schedule and truncated with it (``strength < 1`` keeps the
  cleanest steps' noises), as GNRI's ``MyEulerAncestralDiscreteScheduler`` indexes its list by
  the step's position in the full schedule. diffusers' pipelines scale their initial noise by
  ``init_noise_sigma`` (``sigma_max`` for trailing/linspace spacing, ``sqrt(sigma_max^2+1)`` for
  leading); our noisiest level is the VP latent ``x_VE / sqrt(1 + sigma_max^2)``.
- ``flow_euler``: FlowMatchEulerDiscreteScheduler with FluxPipeline's sigmas
  ``linspace(1, 1/n, n)``, its static ``shift`` or, with ``use_dynamic_shifting``, the
  resolution-dependent ``mu = calculate_shift(image_seq_len, ...)``. ``a = 1 - sigma``,
  ``s = sigma``; ``t`` is what FluxPipeline passes to the transformer (``timestep / 1000``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

from gnri.core import Grid, Level, Tensor
from gnri.models.base import FLOW_KINDS, VP_KINDS, ScheduleSpec
Family = Literal["vp", "flow"]


def check_kind(spec: ScheduleSpec, family: Family, model: str) -> None:
    """Reject a schedule kind that does not apply to the model family (one-line ValueError)."""
    allowed = VP_KINDS if family == "vp" else FLOW_KINDS
    if spec.kind not in allowed:
        raise ValueError(
            f"schedule.kind={spec.kind!r} does not apply to model {model!r} ({family}); allowed: {', '.join(allowed)}"
        )
    if family == "flow" and spec.spacing is not None:
        raise ValueError(
            f"schedule.spacing={spec.spacing!r} has no meaning for kind 'flow_euler' (model {model!r}); set it to null"
        )


def _fresh(cls: type, config: Any, spacing: str | None) -> Any:
    overrides = {} if spacing is None else {"timestep_spacing": spacing}
    return cls.from_config(config, **overrides)


def vp_level(t: float, alphabar: float) -> Level:
    """VP level of a DDPM timestep: ``a = sqrt(alphabar)``, ``s = sqrt(1 - alphabar)``."""
    return Level(t=float(t), a=math.sqrt(alphabar), s=math.sqrt(1.0 - alphabar))


def ve_level(t: float, sigma: float) -> Level:
    """VP level of a VE sigma: ``a = 1/sqrt(1+sigma^2)``, ``s = sigma a``."""
    a = 1.0 / math.sqrt(1.0 + sigma**2)
    return Level(t=float(t), a=a, s=sigma * a)


def ddim_levels(config: Any, num_steps: int, spacing: str | None = None) -> tuple[Level, ...]:
    """DDIMScheduler's levels, clean -> noisy, including the clean end it steps to last."""
    sched = _fresh(DDIMScheduler, config, spacing)
    sched.set_timesteps(num_steps)
    alphabar = sched.alphas_cumprod.double()
    ts = [int(t) for t in sched.timesteps]  # noisy -> clean
    prev = ts[-1] - sched.config.num_train_timesteps // num_steps
    end = float(alphabar[prev]) if prev >= 0 else float(sched.final_alpha_cumprod)
    levels = tuple(vp_level(t, float(alphabar[t])) for t in reversed(ts))
    if end == float(alphabar[ts[-1]]):  # linspace ends on t = 0: drop diffusers' identity step
        return levels
    return (vp_level(max(prev, 0), end),) + levels


def euler_levels(
    config: Any, num_steps: int, spacing: str | None = None, ancestral: bool = False
) -> tuple[Level, ...]:
    """Euler(Ancestral)DiscreteScheduler's sigmas as VP levels, clean -> noisy."""
    cls = EulerAncestralDiscreteScheduler if ancestral else EulerDiscreteScheduler
    sched = _fresh(cls, config, spacing)
    sched.set_timesteps(num_steps)
    sigmas = sched.sigmas.double().tolist()  # noisy -> clean, ends with the final sigma
    ts = [float(t) for t in sched.timesteps] + [0.0]
    return tuple(ve_level(t, sig) for t, sig in zip(reversed(ts), reversed(sigmas)))


def image_seq_len(latent_shape: tuple[int, ...]) -> int:
    """Flux's image token count: packed ``(B, L, D)`` -> L; unpacked ``(B, C, h, w)`` -> h*w/4."""
    if len(latent_shape) == 3:
        return int(latent_shape[1])
    if len(latent_shape) == 4:
        return int(latent_shape[2] * latent_shape[3] // 4)
    raise ValueError(f"flow latent_shape must be (B, L, D) or (B, C, h, w), got {tuple(latent_shape)}")


def flow_levels(config: Any, num_steps: int, seq_len: int) -> tuple[Level, ...]:
    """FlowMatchEulerDiscreteScheduler's sigmas as FluxPipeline sets them, clean -> noisy."""
    sched = FlowMatchEulerDiscreteScheduler.from_config(config)
    sigmas = None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / num_steps, num_steps)
    mu = calculate_shift(
        seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5), config.get("max_shift", 1.15),
    )
    retrieve_timesteps(sched, num_steps, "cpu", sigmas=sigmas, mu=mu)
    ts = (sched.timesteps.to(torch.float32) / 1000).tolist() + [0.0]
    sigs = sched.sigmas.double().tolist()
    return tuple(Level(t=float(t), a=1.0 - sig, s=sig) for t, sig in zip(reversed(ts), reversed(sigs)))


def ancestral_noises(
    num_steps: int, latent_shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, ...]:
    """Fixed per-step noises: ``noises[i]`` is added on the step ``levels[i+1] -> levels[i]``.

    Drawn on the CPU from ``torch.Generator().manual_seed(seed)`` in sampling order (step
    ``num_steps - 1`` first), then moved to ``device``.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    draws = [torch.randn(tuple(latent_shape), generator=gen, dtype=dtype) for _ in range(num_steps)]
    return tuple(d.to(device) for d in reversed(draws))


def build_grid(
    spec: ScheduleSpec, family: Family, scheduler_config: Any, latent_shape: tuple[int, ...], model: str,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> Grid:
    """The grid of ``spec`` for a model: levels, the ancestral noises, then strength truncation."""
    check_kind(spec, family, model)
    if spec.kind == "ddim":
        levels = ddim_levels(scheduler_config, spec.num_steps, spec.spacing)
    elif spec.kind in ("euler", "euler_ancestral"):
        levels = euler_levels(scheduler_config, spec.num_steps, spec.spacing, spec.kind == "euler_ancestral")
    else:
        levels = flow_levels(scheduler_config, spec.num_steps, image_seq_len(latent_shape))
    grid = Grid(levels, family="flow" if spec.kind == "flow_euler" else "vp")
    if spec.kind == "euler_ancestral":
        grid = grid.with_noises(ancestral_noises(grid.num_steps, latent_shape, spec.noise_seed, device, dtype))
    return grid.truncate(spec.strength)
