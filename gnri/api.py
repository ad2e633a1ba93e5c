"""The library entry point: invert an image for a plain diffusers pipeline, then regenerate or edit.

No Hydra, no harness::

    from diffusers import AutoPipelineForText2Image
    import gnri

    pipe = AutoPipelineForText2Image.from_pretrained("stabilityai/sdxl-turbo")
    inv = gnri.invert(pipe, "cat.png", "a photo of a cat", schedule=gnri.ScheduleSpec("euler", 4, "trailing"))
    same = inv.regenerate()                                  # (1, 3, H, W) in [0, 1]
    edit = inv.regenerate("a photo of a dog", guidance_scale=1.2)

``method`` is ``gnri`` (the paper's variant), ``gnri_official`` (the public code's), any other
name of :mod:`gnri.methods` or :mod:`baselines`, or any callable with the inverter signature.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from gnri.core import Conditioning, Grid, InversionResult, Tensor, reconstruct
from gnri.images import fit_to_size, load_image, to_rgb_tensor
from gnri.models.base import ModelAdapter, ScheduleSpec

PIPELINE_FAMILIES = {"StableDiffusionXL": "sdxl", "Flux": "flux", "StableDiffusion": "sd"}
METHOD_PACKAGES = ("gnri.methods", "baselines")


def family_of(pipeline: Any) -> str:
    """``sd``, ``sdxl`` or ``flux`` from a diffusers pipeline's class name."""
    name = type(pipeline).__name__
    for prefix, family in PIPELINE_FAMILIES.items():
        if name.startswith(prefix):
            return family
    raise ValueError(f"gnri.invert: unsupported pipeline class {name}; supported: StableDiffusion*, StableDiffusionXL*, Flux*")


def as_adapter(model: Any, **options: Any) -> ModelAdapter:
    """An adapter as is, or one wrapping a diffusers pipeline object."""
    if hasattr(model, "denoiser") and hasattr(model, "grid"):
        return model
    from gnri.models import load_adapter

    return load_adapter(family_of(model), model, **options)


def resolve_method(method: str | Callable[..., InversionResult]) -> Callable[..., InversionResult]:
    """An inverter by name (``gnri.methods.<name>`` or ``baselines.<name>``) or the callable itself."""
    if callable(method):
        return method
    for package in METHOD_PACKAGES:
        try:
            return importlib.import_module(f"{package}.{method}").invert
        except ModuleNotFoundError as err:
            if err.name != f"{package}.{method}":
                raise
    raise ValueError(f"gnri.invert: unknown method {method!r}; look in gnri/methods/ and baselines/ for names")


def image_tensor(image: str | Path | Image.Image | Tensor, size: tuple[int, int]) -> Tensor:
    """A path, PIL image or (3, H, W)/(B, 3, H, W) tensor in [0, 1] -> (B, 3, *size)."""
    if isinstance(image, (str, Path)):
        image = load_image(image)
    elif isinstance(image, Image.Image):
        image = to_rgb_tensor(image)
    batch = image if image.dim() == 4 else image[None]
    return torch.stack([fit_to_size(one, size) for one in batch])


@dataclass
class Inversion:
    """An inverted image: the latent, and everything needed to regenerate or edit from it."""

    adapter: ModelAdapter
    grid: Grid
    cond: Conditioning
    result: InversionResult
    latent: Tensor  # the encoded image, at grid.levels[0]
    prompts: list[str]  # the source prompts, one per image

    @property
    def z(self) -> Tensor:
        """The inverted latent at the grid's noisiest level."""
        return self.result.z

    @torch.no_grad()
    def regenerate(
        self, prompt: str | list[str] | None = None, guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
    ) -> Tensor:
        """Sample from the inverted latent: the source prompt reconstructs, another one edits.

        Uses the method's own sampler or per-step conditioning when it has them (EDICT,
        null-text). Returns images (B, 3, H, W) in [0, 1].
        """
        cond = self.cond
        if prompt is not None or guidance_scale is not None or negative_prompt is not None:
            scale = self.cond.guidance_scale if guidance_scale is None else guidance_scale
            prompts = self.prompts if prompt is None else _as_list(prompt, self.latent.shape[0])
            negatives = None if negative_prompt is None else _as_list(negative_prompt, len(prompts))
            cond = self.adapter.encode_prompts(prompts, scale, negatives)
        return self.adapter.decode_latents(reconstruct(self.adapter.denoiser(), self.result, self.grid, cond))


def _as_list(prompt: str | list[str], batch: int) -> list[str]:
    return [prompt] * batch if isinstance(prompt, str) else list(prompt)


@torch.no_grad()
def invert(
    model: Any,
    image: str | Path | Image.Image | Tensor,
    prompt: str | list[str],
    *,
    method: str | Callable[..., InversionResult] = "gnri",
    schedule: ScheduleSpec | None = None,
    guidance_scale: float = 1.0,
    negative_prompt: str | list[str] | None = None,
    adapter_options: dict[str, Any] | None = None,
    **hyperparameters: Any,
) -> Inversion:
    """Invert ``image`` described by ``prompt`` with ``method`` for a diffusers pipeline or adapter.

    ``schedule`` defaults to the family's usual setting (SD: DDIM 50; SDXL: Euler 4 trailing,
    as SDXL-Turbo; Flux: flow-matching Euler 4). ``hyperparameters`` go to the inverter.
    """
    adapter = as_adapter(model, **(adapter_options or {}))
    if schedule is None:
        schedule = default_schedule(adapter)
    pixels = image_tensor(image, adapter.image_size())
    prompts = _as_list(prompt, pixels.shape[0])
    negatives = None if negative_prompt is None else _as_list(negative_prompt, len(prompts))
    latent = adapter.encode_images(pixels)
    grid = adapter.grid(schedule, tuple(latent.shape))
    cond = adapter.encode_prompts(prompts, guidance_scale, negatives)
    result = resolve_method(method)(adapter.denoiser(), latent, grid, cond, **hyperparameters)
    return Inversion(adapter, grid, cond, result, latent, prompts)


def default_schedule(adapter: ModelAdapter) -> ScheduleSpec:
    """DDIM 50 (SD), Euler 4 trailing (SDXL, the SDXL-Turbo setting), flow Euler 4 (Flux)."""
    if adapter.family == "flow":
        return ScheduleSpec("flow_euler", 4)
    if type(adapter).__name__.startswith("SDXL"):
        return ScheduleSpec("euler", 4, "trailing")
    return ScheduleSpec("ddim", 50, "leading")
