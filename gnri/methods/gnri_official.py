"""GNRI as the public code implements it (``dvirsamuel/NewtonRaphsonInversion`` at ``0ce9b63``,
``SDXLDDIMPipeline.inversion_step``; ``reference/gnri-paper.md`` 2.2).

The network is never differentiated: ``f(z)`` is computed under ``no_grad``, so the gradient of
``sum(Fvec)`` is ``sign(z - f)`` and the "Newton" update is a sign step whose size is the
objective. Per step, ``n_iters`` times (default 2, fixed; no tolerance)::

    f = f(z);   Fvec = |f - z| + (lam/2) ((f - z0) / sigma_t)^2      (elementwise; z0 = clean latent)
    keep f if mean(Fvec) is the best score so far
    z <- z + s * sign(f - z),   s = sum(Fvec) / D  (= mean(Fvec))

and the step returns the best ``f(z)`` seen (not a ``z``). Cost: exactly ``n_iters`` forwards
per step, no backward. ``f(z^0)`` is the code's explicit Euler inversion step, so with
``n_iters = 2`` this is "explicit inversion plus one probe, keep the better by score" (on VP
grids the code's ``z^0`` is ``(a_t / a_{t-1}) z_{t-1}`` in our units, so its first network call
sees that, where ``baselines.ddim`` feeds ``z_{t-1}`` itself).

Coordinates (``coordinates='scheduler'``, default): the formula is evaluated in the coordinates
of the Euler scheduler the code would run, and mapped back, so the code's iterates are
reproduced exactly. VP grids: the code's SDXL-Turbo Euler-ancestral scheduler, VE latents
``z / a = x0 + sigma eps``, ``sigma_t = s_t / a_t`` of the noisier level (the code reads the
scheduler's sigma at ``t``: the same number); in our units ``z^0 = (a_t / a_{t-1}) z_{t-1}``
(the code's ``z^0 = z_{t-1}`` in VE) and ``s = a_t mean(|f - z| / a_t + (lam/2)((f - a_t z0) / s_t)^2)``.
Flow grids (no flow path in the code; this is its port to FlowMatchEulerDiscreteScheduler,
whose latents are ours): ``z^0 = z_{t-1}``, ``f`` the Euler form holding the velocity fixed
(``StepProblem.implicit_map``) and ``sigma_t = s_t`` (that scheduler's sigma ``t``), so the prior is
centred on ``z0``, not on the marginal mean ``(1 - t) z0``. ``coordinates='latent'`` applies the
formula to our latent as given with ``sigma_t = s_t / a_t`` (the literal transcription), ``z^0 =
z_{t-1}``; off VE its prior is centred on ``z0`` rather than ``a_t z0``.

Differences from the public code, named: ``D`` is the latent's real per-sample numel (the
code hard-codes 64*64*4; pass ``numel=16384`` to reproduce it, e.g. its 4x too large step on
1024^2 SDXL latents); scores, steps and the best pick are per sample (the code takes one mean
over the whole batch, of size 1 there); where ``f == z`` exactly the code divides by a zero
gradient (inf/nan) and here that element does not move; the last update, which the code
computes and discards, is skipped; no ``.cuda()``; ``z0`` is whatever ``x0`` the harness
passes (the code samples the VAE posterior; the harness uses its mode).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, StepInfo, StepProblem, Tensor, invert_with
from gnri.core.step import per_sample_rms

COORDINATES = ("scheduler", "latent")


def _rows(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def score_terms(
    problem: StepProblem, z: Tensor, f: Tensor, z0: Tensor, lam: float, coordinates: str
) -> Tensor:
    """``Fvec`` in latent units (on VP grids with ``scheduler``: ``a_t`` times the code's VE ``Fvec``)."""
    a, s = problem.z_level.a, problem.z_level.s
    if coordinates == "scheduler" and problem.family == "vp":
        return (f - z).abs() + (lam / 2) * a * ((f - a * z0) / s) ** 2
    if coordinates == "scheduler":
        return (f - z).abs() + (lam / 2) * ((f - z0) / s) ** 2
    return (f - z).abs() + (lam / 2) * ((f - z0) * (a / s)) ** 2


def solve_step(
    problem: StepProblem, z0: Tensor, *, lam: float, n_iters: int, coordinates: str, numel: int | None
) -> tuple[Tensor, StepInfo]:
    """One step of the public code's ``inversion_step``; returns the best ``f(z)`` by score."""
    z = problem.x
    if coordinates == "scheduler" and problem.family == "vp":
        z = (problem.z_level.a / problem.x_level.a) * z
    d_norm = numel if numel is not None else z[0].numel()
    best_f, best_score = z, torch.full((z.shape[0],), float("inf"), dtype=z.dtype, device=z.device)
    residual, objective, step_size = [], [], []
    with torch.no_grad():
        for k in range(n_iters):
            f = problem.implicit_map(problem.predict(z))
            fvec = score_terms(problem, z, f, z0, lam, coordinates).flatten(1)
            score = fvec.mean(dim=1)
            residual.append(per_sample_rms(z - f))
            objective.append(score)
            better = score < best_score
            best_f = torch.where(_rows(better, f), f, best_f)
            best_score = torch.where(better, score, best_score)
            if k == n_iters - 1:
                break  # the code's last update is never used
            d = _rows(fvec.sum(dim=1) / d_norm, z) * torch.sign(f - z)
            step_size.append(per_sample_rms(d))
            z = z + d
    series = {"residual": tuple(residual), "objective": tuple(objective), "step_size": tuple(step_size)}
    return best_f, StepInfo(iters=n_iters, series=series)


def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    lam: float = 0.1,
    n_iters: int = 2,
    coordinates: str = "scheduler",
    numel: int | None = None,
) -> InversionResult:
    """The public code's GNRI over ``grid``; ``x0`` (the clean latent) anchors the prior."""
    if coordinates not in COORDINATES:
        raise ValueError(f"inverter gnri_official: coordinates must be one of {COORDINATES}, got {coordinates!r}")
    if n_iters < 1:
        raise ValueError(f"inverter gnri_official: n_iters must be >= 1, got {n_iters}")
    if lam < 0:
        raise ValueError(f"inverter gnri_official: lam must be >= 0, got {lam}")
    if numel is not None and numel < 1:
        raise ValueError(f"inverter gnri_official: numel must be None or >= 1, got {numel}")
    z0 = x0.detach()

    def solve(problem: StepProblem) -> tuple[Tensor, StepInfo]:
        return solve_step(problem, z0, lam=lam, n_iters=n_iters, coordinates=coordinates, numel=numel)

    result = invert_with(solve, denoiser, x0, grid, cond)
    return replace(result, extras={"variant": "gnri_official", "coordinates": coordinates})
