"""SDEdit: noise the source to a strength, denoise with the target prompt (inversion-free).

Reference: Meng et al., "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
Equations", ICLR 2022 (arXiv 2108.01073; official code ``ermongroup/SDEdit``). The paper perturbs
the guide ``x^g`` to an intermediate time ``t0`` in (0, 1] with the forward SDE's marginal
(``x = alpha(t0) x^g + sigma(t0) z``, ``z ~ N(0, I)``) and integrates the reverse SDE from ``t0``
to 0 (its Algorithm 1, VE-SDE form, Euler-Maruyama steps). The text-conditioned form that editing
benchmarks call "SDEdit" (GNRI's Fig. 5) is diffusers' ``StableDiffusionImg2ImgPipeline`` with
``strength = t0`` and a deterministic DDIM sampler (eta 0): that is the reference here.

What :func:`edit` does, as diffusers' img2img does it (``pipeline_stable_diffusion_img2img.py``,
``get_timesteps`` / ``prepare_latents``):

- ``k = min(int(num_steps * strength), num_steps)`` denoising steps (``init_timestep``; note
  ``int``, i.e. floor after float rounding: ``int(10 * 0.7) == 7`` but ``int(100 * 0.29) == 28``);
  the ``k`` cleanest steps of the grid are run, so the start is ``grid.levels[k]`` (diffusers'
  ``timesteps[num_steps - k:]``, first entry);
- the start latent is ``z = a * x0 + s * eps`` at that level (``scheduler.add_noise``: ``sqrt(ab) x0
  + sqrt(1 - ab) eps``; for Euler grids the VE ``x0 + sigma eps`` in VP coordinates; for flow grids
  ``scale_noise``: ``sigma eps + (1 - sigma) x0``);
- then ``k`` steps of the shared sampler (:func:`gnri.core.sample_step`: DDIM eta 0 / Euler / flow
  Euler, the grid's stored noise for ancestral grids) with the ``target`` conditioning (its guidance
  scale and negative branch as given), down to ``grid.levels[0]``.

For flow grids the step count follows ``FluxImg2ImgPipeline.get_timesteps`` instead:
``k = num_steps - int(max(num_steps - num_steps * strength, 0))`` (no ``int`` on the product:
4 steps at 0.6 give 3 there, 2 in the SD pipeline).

Options: ``strength`` in (0, 1], default 0.5 (``StableDiffusionImg2ImgPipeline``'s default is 0.8;
PnPInversion's PIE-Bench code has no SDEdit script, so there is no PIE-Bench setting to copy; the
paper's realism/faithfulness trade-off discussion puts ``t0`` around 0.3-0.6, quoted from memory and
not re-checked against the text); ``seed`` (default 0) for ``eps``; ``noise`` an explicit ``eps``
(overrides ``seed``).

Where this departs from the diffusers pipelines or the paper, named:

- ``result`` is ignored (SDEdit needs no inversion); so is ``source``. The edit task still runs the
  inverter before (its cost is not part of this editor's NFE, which is ``k`` denoiser calls).
- With ``k == 0`` (``strength < 1 / num_steps``) the source latent is returned unchanged with no
  network call; diffusers' img2img fails there (no timesteps left).
- ``eps`` is drawn per sample from a CPU ``torch.Generator`` seeded with ``seed``, in the latent's
  dtype and the adapter's latent layout: every sample of a batch gets the same draw, so a batched
  edit equals the same edits one at a time. For a batch of one this is exactly what diffusers draws
  with ``generator=torch.Generator().manual_seed(seed)`` on the CPU; Flux draws its noise in the
  unpacked (B, C, h, w) layout and packs it, so a Flux draw is not diffusers' draw for one seed.
- Ancestral grids use the grid's stored noise list for the steps (diffusers draws fresh noise).
- No ``clip_sample``/thresholding (as everywhere in this library; SD's configs have them off).
- The paper's stochastic reverse SDE is not used: the deterministic step of the grid, as img2img with DDIM eta 0.
"""

from __future__ import annotations

from typing import Any

import torch

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Tensor, sample
from gnri.models.base import ModelAdapter

DEFAULT_STRENGTH = 0.5


def denoising_steps(num_steps: int, strength: float, family: str = "vp") -> int:
    """How many of the grid's cleanest steps img2img runs: diffusers' ``init_timestep`` rule."""
    if not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"sdedit: strength must be in (0, 1], got {strength}")
    if family == "flow":  # FluxImg2ImgPipeline.get_timesteps
        init = min(num_steps * strength, num_steps)
        return num_steps - int(max(num_steps - init, 0))
    return min(int(num_steps * strength), num_steps)  # StableDiffusion(XL)Img2ImgPipeline.get_timesteps


def seeded_noise(like: Tensor, seed: int) -> Tensor:
    """``eps`` of ``like``'s shape: one CPU draw from ``seed`` per sample, the same for every sample."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    one = torch.randn((1, *like.shape[1:]), generator=generator, dtype=like.dtype)
    return one.expand_as(like).to(like.device).clone()


@torch.no_grad()
def edit(
    adapter: ModelAdapter,
    result: InversionResult,
    grid: Grid,
    source: Conditioning,
    target: Conditioning,
    *,
    denoiser: Denoiser,
    x0: Tensor,
    strength: float = DEFAULT_STRENGTH,
    seed: int = 0,
    noise: Tensor | None = None,
    **options: Any,
) -> Tensor:
    """SDEdit of ``x0`` towards ``target``: the edited latent at ``grid.levels[0]`` (module docstring)."""
    if options:
        raise ValueError(f"sdedit: unknown options {sorted(options)} (known: strength, seed, noise)")
    if x0 is None:  # a caller without the clean latent: an inversion's trajectory starts on it
        if not result.trajectory:
            raise ValueError("sdedit: needs the source latent x0 (none given and the inversion has no trajectory)")
        x0 = result.trajectory[0]
    k = denoising_steps(grid.num_steps, strength, grid.family)
    if k == 0:
        return x0.clone()
    eps = seeded_noise(x0, seed) if noise is None else noise.to(device=x0.device, dtype=x0.dtype)
    if eps.shape != x0.shape:
        raise ValueError(f"sdedit: noise has shape {tuple(eps.shape)}, the latent {tuple(x0.shape)}")
    start = grid.levels[k]
    z = start.a * x0 + start.s * eps
    noises = None if grid.noises is None else grid.noises[:k]
    part = Grid(grid.levels[: k + 1], noises, grid.family)
    return sample(denoiser, z, part, target)  # type: ignore[return-value]
