"""Latent round-trip error: how far reconstruction lands from the encoded latent.

Measured in the adapter's own latent space (scaled/shifted/packed as its denoiser sees it), so
it isolates inversion error from the VAE's: ``latent_rmse = sqrt(mean((z_rec - z_enc)^2))`` per
sample, over every dimension but the batch one (layout-agnostic: UNet or packed Flux latents).
:func:`kept_latents` measures what a method keeps to reconstruct, in latents (the fair column
beside an exact-by-construction method's PSNR).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator, Mapping

import torch

from eval.metrics.base import Tensor


def latent_rmse(reconstructed: Tensor, encoded: Tensor) -> Tensor:
    """Per-sample RMS of ``reconstructed - encoded``: shape (B,)."""
    if reconstructed.shape != encoded.shape:
        raise ValueError(
            f"latent_rmse: shapes differ, {tuple(reconstructed.shape)} vs {tuple(encoded.shape)}"
        )
    diff = reconstructed.double() - encoded.double()
    return diff.flatten(1).pow(2).mean(dim=1).sqrt().float()



def _tensors(obj: Any, depth: int = 0) -> Iterator[Tensor]:
    """Every tensor inside ``obj``: partials' arguments, dataclass fields, mappings and sequences."""
    if depth > 8 or obj is None:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, functools.partial):
        yield from _tensors(obj.func, depth + 1)
        for item in (*obj.args, *obj.keywords.values()):
            yield from _tensors(item, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name), depth + 1)
    elif isinstance(obj, Mapping):
        for item in obj.values():
            yield from _tensors(item, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item, depth + 1)


def _identity(t: Tensor) -> tuple[int, int, tuple[int, ...]]:
    return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)


def kept_latents(result: Any, cond: Any = None) -> float:
    """What reconstruction replays, in units of the inverted latent: ``result.z`` plus every distinct
    tensor bound into ``result.sampler`` or ``result.cond_per_step`` (a second latent, noise maps, a
    trajectory, per-step embeddings), except the tensors of the run's own conditioning ``cond``
    (the prompt, which every method gets anyway); divided by ``result.z.numel()``."""
    latent = result.z
    seen = {_identity(t) for t in _tensors(cond)}
    seen.add(_identity(latent))
    total = latent.numel()
    for t in (*_tensors(result.sampler), *_tensors(result.cond_per_step)):
        key = _identity(t)
        if key not in seen:
            seen.add(key)
            total += t.numel()
    return total / latent.numel()
