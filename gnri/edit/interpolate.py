"""Interpolation between two inverted images: a path between their states, regenerated.

The path over the latents is ``slerp`` by default; :mod:`gnri.edit.paths` adds ``linear`` and NAO's
norm-aware path (``path`` arguments below take any ``path(z0, z1, w)`` of that module's contract).

``slerp(z0, z1, w)`` (Shoemake 1985) per sample, over all but the first dimension: it keeps a
Gaussian latent's norm where linear interpolation shrinks it (the reason inversion quality
matters here: a latent far from the Gaussian shell interpolates badly). ``w = 0`` and ``w = 1``
return the endpoints exactly; nearly parallel latents (``|cos| > PARALLEL_COS``) and zero
latents fall back to linear interpolation.

Along the path, the latents (and an EDICT-style bound second latent) are slerped, and the
conditionings (text embeddings, null-text's per-step negatives) interpolated linearly
(``torch.lerp``, exact at both ends), so the path starts at image A's reconstruction and ends
at image B's, bit for bit.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Tensor, reconstruct
from gnri.edit.edit import combine_conditioning, combine_results

PARALLEL_COS = 0.9995  # above this |cos| the arc is numerically a line: use lerp (common slerp practice)


def slerp(z0: Tensor, z1: Tensor, w: float) -> Tensor:
    """Per-sample spherical interpolation from ``z0`` (``w = 0``) to ``z1`` (``w = 1``)."""
    if z0.shape != z1.shape:
        raise ValueError(f"slerp: shapes differ, {tuple(z0.shape)} vs {tuple(z1.shape)}")
    if w == 0.0:
        return z0.clone()
    if w == 1.0:
        return z1.clone()
    dtype = torch.promote_types(z0.dtype, torch.float32)
    a, b = z0.reshape(z0.shape[0], -1).to(dtype), z1.reshape(z1.shape[0], -1).to(dtype)
    norms = a.norm(dim=1) * b.norm(dim=1)
    cos = (a * b).sum(1) / torch.where(norms > 0, norms, torch.ones_like(norms))
    cos = cos.clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    arc = (norms > 0) & (cos.abs() <= PARALLEL_COS)
    safe = torch.where(arc, sin, torch.ones_like(sin))
    c0 = torch.where(arc, torch.sin((1.0 - w) * theta) / safe, torch.full_like(sin, 1.0 - w))
    c1 = torch.where(arc, torch.sin(w * theta) / safe, torch.full_like(sin, w))
    return (c0[:, None] * a + c1[:, None] * b).reshape(z0.shape).to(z0.dtype)


PathFn = Callable[[Tensor, Tensor, float], Tensor]


def blend_results(result_a: InversionResult, result_b: InversionResult, w: float,
                  path: PathFn | None = None) -> InversionResult:
    """The inversion state ``w`` of the way from A to B (latents and sampler tensors along ``path``,
    default :func:`slerp`; per-step conditioning lerped)."""
    along = slerp if path is None else path
    return combine_results(
        [result_a, result_b], lambda p: along(p[0], p[1], w), lambda p: torch.lerp(p[0], p[1], w)
    )


def blend_conditioning(cond_a: Conditioning, cond_b: Conditioning, w: float) -> Conditioning:
    """Linear interpolation of two conditionings (exact at ``w = 0`` and ``w = 1``)."""
    batch = max(t.shape[0] for t in cond_a.positive.values())
    return combine_conditioning([cond_a, cond_b], lambda p: torch.lerp(p[0], p[1], w), batch)


def interpolation_weights(num_points: int) -> list[float]:
    """``num_points`` evenly spaced weights from 0 to 1 inclusive (at least the two ends)."""
    if num_points < 2:
        raise ValueError(f"interpolation: num_points must be >= 2, got {num_points}")
    return [i / (num_points - 1) for i in range(num_points)]


def interpolate(
    denoiser: Denoiser,
    result_a: InversionResult,
    result_b: InversionResult,
    grid: Grid,
    cond_a: Conditioning,
    cond_b: Conditioning,
    weights: Sequence[float],
    path: PathFn | None = None,
) -> list[Tensor]:
    """Latents at ``grid.levels[0]`` regenerated at each weight of the path from A to B (``path``:
    default :func:`slerp`)."""
    out = []
    for w in weights:
        state = blend_results(result_a, result_b, w, path)
        out.append(reconstruct(denoiser, state, grid, blend_conditioning(cond_a, cond_b, w)))
    return out
