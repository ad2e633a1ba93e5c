"""The ground-truth track: invert images whose true noise is known (ExactDPM's protocol).

Hong et al., "On Exact Inversion of DPM-Solvers" (arXiv 2311.18387; ``smhongok/inv-dpm``,
``main_reconstruction.py``): generate from a known noise ``z_T`` with the model under test,
invert the generated sample, and report per sample
- ``noise_nmse`` (their T0T): ``||z_hat_T - z_T||^2 / ||z_T||^2``, latent recovery;
- ``image_nmse`` (their 0T0): ``||x_regen - x_gen||^2 / ||x_gen||^2`` on [0, 1] pixels, with
  ``image_psnr`` beside it (needs ``decode``);
- ``latent_nmse``: the same as 0T0 in latent space (no decoder), always reported.
Generation and regeneration use the shared sampler (:func:`gnri.core.sample` /
:func:`gnri.core.reconstruct`), so a perfect inversion gives zero error up to round-off.
Differences from ExactDPM, named: by default the generated LATENT is inverted directly (the
VAE is left out, isolating the inverter); ``vae_roundtrip=True`` decodes and re-encodes it first
as they do (their optional decoder inversion is not reproduced). Their sampler is DPM-Solver;
here it is whatever the model's grid and the shared step define.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from eval.metrics.psnr import psnr
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Tensor, reconstruct, sample
from gnri.models.base import ModelAdapter, ScheduleSpec

# An inverter with its hyperparameters bound: (denoiser, x0, grid, cond) -> InversionResult.
Inverter = Callable[[Denoiser, Tensor, Grid, Conditioning], InversionResult]
Codec = Callable[[Tensor], Tensor]


def nmse(estimate: Tensor, reference: Tensor) -> Tensor:
    """Per-sample ``||estimate - reference||^2 / ||reference||^2``: shape (B,), float64."""
    if estimate.shape != reference.shape:
        raise ValueError(f"nmse: shapes differ, {tuple(estimate.shape)} vs {tuple(reference.shape)}")
    diff = (estimate.double() - reference.double()).flatten(1).pow(2).sum(dim=1)
    return diff / reference.double().flatten(1).pow(2).sum(dim=1)


@dataclass(frozen=True)
class ExactTrackResult:
    """Per-sample errors (B,) and the tensors they came from."""

    noise_nmse: Tensor
    latent_nmse: Tensor
    generated: Tensor
    regenerated: Tensor
    inversion: InversionResult
    image_nmse: Tensor | None = None
    image_psnr: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def values(self) -> dict[str, Tensor]:
        """Metric name -> (B,) values, for the tidy table (``exact_`` prefixed)."""
        out = {"exact_noise_nmse": self.noise_nmse, "exact_latent_nmse": self.latent_nmse}
        if self.image_nmse is not None and self.image_psnr is not None:
            out.update(exact_image_nmse=self.image_nmse, exact_image_psnr=self.image_psnr)
        return out


def exact_track(
    invert: Inverter,
    denoiser: Denoiser,
    grid: Grid,
    cond: Conditioning,
    noise: Tensor,
    decode: Codec | None = None,
    encode: Codec | None = None,
) -> ExactTrackResult:
    """Generate from ``noise`` (at ``grid.levels[-1]``), invert, regenerate; errors vs the truth.

    With ``encode`` (and ``decode``) the inverter gets ``encode(decode(generated))`` (ExactDPM's
    pixel round trip) instead of the generated latent itself.
    """
    if encode is not None and decode is None:
        raise ValueError("exact_track: encode needs decode (the VAE round trip is decode then encode)")
    with torch.no_grad():
        generated = sample(denoiser, noise, grid, cond)
        images = decode(generated) if decode is not None else None
        source = encode(images) if encode is not None else generated
        result = invert(denoiser, source, grid, cond)
        regenerated = reconstruct(denoiser, result, grid, cond)
        image_nmse = image_psnr = None
        if decode is not None:
            regen_images = decode(regenerated)
            image_nmse, image_psnr = nmse(regen_images, images), psnr(regen_images, images).double()
    return ExactTrackResult(
        noise_nmse=nmse(result.z, noise), latent_nmse=nmse(regenerated, generated), generated=generated,
        regenerated=regenerated, inversion=result, image_nmse=image_nmse, image_psnr=image_psnr,
    )


def known_noise(
    shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Tensor:
    """Standard normal noise from its own seeded generator (reproducible, no global RNG touched)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def run_exact_track(
    adapter: ModelAdapter,
    invert: Inverter,
    schedule: ScheduleSpec,
    prompts: list[str],
    seed: int = 0,
    guidance_scale: float = 1.0,
    vae_roundtrip: bool = False,
    true_cfg_scale: float = 1.0,
) -> ExactTrackResult:
    """:func:`exact_track` on a model adapter: one known noise per prompt, images via the adapter's VAE."""
    height, width = adapter.image_size()
    with torch.no_grad():
        probe = adapter.encode_images(torch.zeros(1, 3, height, width))
    shape = (len(prompts), *probe.shape[1:])
    grid = adapter.grid(schedule, shape)
    noise = known_noise(shape, seed, probe.device, probe.dtype)
    extra = {"true_cfg_scale": true_cfg_scale} if float(true_cfg_scale) != 1.0 else {}
    cond = adapter.encode_prompts(prompts, guidance_scale, **extra)
    return exact_track(
        invert, adapter.denoiser(), grid, cond, noise, decode=adapter.decode_latents,
        encode=adapter.encode_images if vae_roundtrip else None,
    )
