"""Per-image preparation every task shares (all untimed): fitted pixels, latent, VAE ceiling,
prompt embeddings and the grid, from the content-keyed cache (:mod:`eval.cache`) when a job of
the sweep made them.

Images are loaded as RGB [0, 1] and cover-resized + center-cropped to the adapter's
``image_size()`` (:func:`gnri.images.fit_to_size`); an unreadable image or a dataset entry with a
problem is a :class:`~eval.task.Skip` naming it. Several prepared images stack into one
:class:`Batch`: their prompts encoded together, a stored-noise grid's noise repeated for every
image (each image sees exactly what it sees alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch

from eval.cache import TensorCache, conditioning_from_tensors, conditioning_to_tensors
from eval.data import Entry
from eval.finite import check_finite
from eval.metrics.psnr import psnr
from eval.settings import RunSettings, file_digest
from eval.task import Skip, one_line
from gnri.core import Conditioning, Grid, Tensor
from gnri.images import fit_to_size, load_image
from gnri.models.base import ModelAdapter


def cache_fields(settings: RunSettings, adapter: ModelAdapter) -> dict[str, Any]:
    """What identifies the model's method-free work (encoding, prompts) in the shared cache."""
    checkpoint = settings.checkpoint.identity if settings.checkpoint is not None else {"adapter": adapter.name}
    return {"checkpoint": checkpoint, "device": str(adapter.device), "dtype": str(adapter.dtype)}


def image_cache_key(settings: RunSettings, adapter: ModelAdapter, entry: Entry) -> dict[str, Any]:
    """The cache fields of an entry's image for this model: checkpoint, device, dtype, size, file hash."""
    return {**cache_fields(settings, adapter), "size": list(adapter.image_size()), "image": file_digest(entry.path)}


def inversion_cache_key(settings: RunSettings, image_key: dict[str, Any]) -> dict[str, Any]:
    """The cache key of one image's inversion in this run: the image's key (:func:`image_cache_key`,
    plus whatever the caller adds, e.g. the caption) with the inverter, its parameters, the schedule,
    the seed and the guidance (everything the inverted state depends on)."""
    return {**image_key, "inverter": settings.inverter, "inverter_params": dict(settings.inverter_params),
            "schedule": asdict(settings.schedule), "seed": settings.seed, **settings.guidance_options()}


def fitted_pixels(entry: Entry, size: tuple[int, int]) -> Tensor:
    """The entry's image as (1, 3, H, W) in [0, 1] at ``size``; :class:`Skip` naming why it cannot be read."""
    if entry.problem is not None:
        raise Skip(entry.problem)
    try:
        return fit_to_size(load_image(entry.path), size)[None]  # type: ignore[arg-type]
    except (OSError, ValueError) as err:
        raise Skip(f"cannot read image {entry.image_id}: {one_line(err)}") from None


def cached_image(cache: TensorCache, key: dict[str, Any], adapter: ModelAdapter,
                 entry: Entry) -> tuple[Tensor, Tensor, float]:
    """(fitted pixels, latent, VAE-ceiling PSNR) of an entry's image: from the cache, or computed
    and stored. Raises OSError/ValueError (one line naming the file) for an unreadable image."""
    hit = cache.get("image", key, adapter.device)
    if hit is not None:
        tensors, meta = hit
        return tensors["pixels"], tensors["latent"], float(meta["ceiling_psnr"])
    pixels = fit_to_size(load_image(entry.path), adapter.image_size())[None]  # type: ignore[arg-type]
    with torch.no_grad():
        latent = check_finite(adapter.encode_images(pixels), "encoded latent (VAE encode)")
        decoded = check_finite(adapter.decode_latents(latent), "VAE round-trip image (VAE decode)")
    pixels = pixels.to(decoded.device)
    ceiling = psnr(decoded, pixels)[0].item()
    cache.put("image", key, {"pixels": pixels, "latent": latent}, {"ceiling_psnr": ceiling})
    return pixels, latent, ceiling


def cached_conditioning(cache: TensorCache, settings: RunSettings, adapter: ModelAdapter,
                        caption: str | Sequence[str]) -> Conditioning:
    """The caption's prompt embeddings at the run's guidance: from the cache, or encoded and stored.
    A list of captions is one batch's conditioning, encoded together by the adapter."""
    named = {"caption": caption} if isinstance(caption, str) else {"captions": list(caption)}
    key = {**cache_fields(settings, adapter), **named, **settings.guidance_options()}
    hit = cache.get("prompt", key, adapter.device)
    if hit is not None:
        return conditioning_from_tensors(*hit)
    with torch.no_grad():
        prompts = [caption] if isinstance(caption, str) else list(caption)
        cond = adapter.encode_prompts(prompts, **settings.guidance_options())
    cache.put("prompt", key, *conditioning_to_tensors(cond))
    return cond


@dataclass
class PreparedImage:
    """Everything about one image that precedes inversion; its prompt is encoded with its batch's."""

    entry: Entry
    pixels: Tensor
    latent: Tensor
    ceiling_psnr: float
    grid: Grid
    key: dict[str, Any] = field(default_factory=dict)  # the image's cache key fields


def prepare_image(cache: TensorCache, settings: RunSettings, adapter: ModelAdapter, entry: Entry) -> PreparedImage:
    """Pixels, latent, VAE ceiling (from the cache when present) and the grid; :class:`Skip` if unusable."""
    if entry.problem is not None:
        raise Skip(entry.problem)
    key = image_cache_key(settings, adapter, entry)
    try:
        pixels, latent, ceiling = cached_image(cache, key, adapter, entry)
    except (OSError, ValueError) as err:
        raise Skip(f"cannot read image {entry.image_id}: {one_line(err)}") from None
    with torch.no_grad():
        grid = adapter.grid(settings.schedule, tuple(latent.shape))
    return PreparedImage(entry, pixels, latent, ceiling, grid, key)


@dataclass
class Batch:
    """Prepared images stacked along the batch: one inversion call serves them all."""

    pixels: Tensor
    latent: Tensor
    cond: Conditioning
    grid: Grid

    @property
    def size(self) -> int:
        return int(self.latent.shape[0])


def stack(cache: TensorCache, settings: RunSettings, adapter: ModelAdapter, images: Sequence[PreparedImage]) -> Batch:
    """The batch's prompts encoded together (from the shared cache: one caption by itself, several
    by their list); one image as it is, several with pixels and latents concatenated and the first
    grid's stored noise repeated for every image."""
    captions = [image.entry.caption or "" for image in images]
    cond = cached_conditioning(cache, settings, adapter, captions[0] if len(captions) == 1 else captions)
    if len(images) == 1:
        return Batch(images[0].pixels, images[0].latent, cond, images[0].grid)
    size = len(images)
    grid = images[0].grid
    if grid.noises is not None:
        grid = grid.with_noises(tuple(n.expand(size, *n.shape[1:]).contiguous() for n in grid.noises))
    return Batch(torch.cat([i.pixels for i in images]), torch.cat([i.latent for i in images]), cond, grid)
