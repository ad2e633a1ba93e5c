"""Seeds for a concept from inverted latents: centroid, NAO's norm-aware centroid, seeds around one.

Pure functions on tensors, no model (``task=seed_select``, :mod:`eval.tasks.seed_select`).

Background (Samuel et al., "Norm-guided latent space exploration for text-to-image generation",
NeurIPS 2023, "NAO"; official code ``dvirsamuel/SeedSelect``, ``nao/norm_aware_optimization.py``
and ``main.py``): a seed ``z ~ N(0, I_d)`` has a norm ``r = ||z||`` distributed as ``chi(d)``,
whose log density is, up to a constant, ``log p(r) = (d - 1) log r - r^2 / 2`` (their
``log_chi_dist``). It concentrates at ``sqrt(d)`` (width ~ 1/sqrt(2)), and its mode is
``r* = sqrt(d - 1)`` (``d/dr log p = (d - 1)/r - r = 0``). The Euclidean centroid of ``k``
independent seeds has norm about ``sqrt(d / k)``: far off the shell, where diffusion models give
flat or noisy images (NAO's Fig. 1 and Table 2). NAO's centroid ``c`` minimises
``-sum_i integral_{path_i} log p(||x||) ds - log p(||c||) + penalty`` jointly over ``c`` and
discretised paths from each seed to ``c`` (``norm_aware_centroid_optimization``, Adam, up to
10,000 iterations, started from the Euclidean centroid).

What is implemented here (:func:`nao_centroid`) and every difference from NAO, named:

- the direction of ``c`` is the Euclidean centroid's (NAO's initial point; NAO then moves it
  with the path terms, which favour directions reachable on the shell);
- its norm is the maximiser of NAO's centroid term ``-log p(||c||)`` along that direction,
  ``r* = sqrt(d - 1)`` exactly (closed form; the path terms, which would also move the norm a
  little, are left out). No paths, no optimiser, no iterations: a "norm-corrected centroid";
- ``scale`` multiplies ``r*`` for latents whose noise is not unit-variance (the task passes the
  noisiest level's noise scale ``s_T``: a VP latent at that level is ``a_T x0 + s_T eps``).
  NAO uses SD 2.1's DDIM inversion with ``scale = 1``.

:func:`seeds_around` draws ``n`` seeds near one (NAO/SeedSelect generate several images per
concept from seeds on their paths; here: norm-corrected Gaussian perturbations of the seed).
A SeedSelect-style optimisation of the seed through the sampler and CLIP (Samuel et al., AAAI
2024) is not implemented: :func:`seed_rule` refuses ``seedselect`` in one line.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor
SEED_RULES = ("nao", "centroid")
NOT_IMPLEMENTED = {"seedselect": "task.seed_rule=seedselect (SeedSelect's seed optimisation through the sampler "
                                 "and CLIP) is not implemented; use nao or centroid"}


def _stack(latents: Tensor | list[Tensor]) -> Tensor:
    """(k, ...) float tensor from a (k, ...) tensor or a list of (1, ...) / (...) latents."""
    if isinstance(latents, (list, tuple)):
        if not latents:
            raise ValueError("seeds: need at least one latent, got none")
        latents = torch.cat([z.reshape(1, *z.shape[-3:]) if z.dim() >= 3 else z.reshape(1, -1) for z in latents])
    if latents.dim() < 2 or latents.shape[0] < 1:
        raise ValueError(f"seeds: latents must be (k, ...) with k >= 1, got shape {tuple(latents.shape)}")
    return latents


def centroid(latents: Tensor | list[Tensor]) -> Tensor:
    """The Euclidean mean of ``k`` latents ``(k, ...)``: shape ``(1, ...)``."""
    z = _stack(latents)
    return z.mean(dim=0, keepdim=True)


def chi_mode(dim: int) -> float:
    """The mode of ``chi(d)``, ``sqrt(d - 1)``: the maximiser of NAO's ``(d - 1) log r - r^2 / 2``."""
    if dim < 1:
        raise ValueError(f"chi_mode: dimension must be >= 1, got {dim}")
    return math.sqrt(dim - 1)


def nao_centroid(latents: Tensor | list[Tensor], scale: float = 1.0) -> Tensor:
    """The norm-corrected centroid (see the module doc): the Euclidean centroid's direction at
    norm ``scale * sqrt(d - 1)``, ``d`` the number of elements of one latent. Shape ``(1, ...)``.
    A zero centroid (seeds that cancel) has no direction: ValueError."""
    c = centroid(latents)
    norm = c.double().norm()
    if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
        raise ValueError("nao_centroid: the centroid is zero or non-finite, it has no direction")
    target = float(scale) * chi_mode(c[0].numel())
    return (c.double() * (target / norm)).to(c.dtype)


def seed_rule(name: str, latents: Tensor | list[Tensor], scale: float = 1.0) -> Tensor:
    """The seed of ``task.seed_rule`` (``nao`` | ``centroid``); one-line ValueError otherwise."""
    if name in NOT_IMPLEMENTED:
        raise ValueError(NOT_IMPLEMENTED[name])
    if name == "nao":
        return nao_centroid(latents, scale)
    if name == "centroid":
        return centroid(latents)
    raise ValueError(f"task.seed_rule must be one of {', '.join(SEED_RULES)}, got {name!r}")


def seeds_around(seed: Tensor, n: int, spread: float, generator: torch.Generator | None = None) -> Tensor:
    """``n`` seeds near ``seed`` (shape ``(1, ...)``): ``z_j = sqrt(1 - spread^2) seed + spread * eps_j``,
    ``eps_j ~ N(0, I)`` from ``generator`` (CPU), each rescaled to ``||seed||`` (norm correction:
    they stay on the seed's shell). ``spread`` in [0, 1]: 0 gives ``n`` copies of ``seed``, 1
    independent directions at the seed's norm. Shape ``(n, ...)``, the seed's dtype and device."""
    if n < 1:
        raise ValueError(f"task.n must be >= 1, got {n}")
    if not 0.0 <= float(spread) <= 1.0:
        raise ValueError(f"task.spread must be in [0, 1], got {spread}")
    base = seed.reshape(1, *seed.shape[1:]).double()
    eps = torch.randn((n, *seed.shape[1:]), generator=generator, dtype=torch.float64).to(base.device)
    mixed = math.sqrt(1.0 - float(spread) ** 2) * base + float(spread) * eps
    norms = mixed.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (seed.dim() - 1)))
    out = mixed * (base.norm() / norms)
    return out.to(dtype=seed.dtype)


__all__ = ["SEED_RULES", "centroid", "chi_mode", "nao_centroid", "seed_rule", "seeds_around"]
