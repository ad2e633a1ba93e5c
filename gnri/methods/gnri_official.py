"""GNRI as the public code implements it (``dvirsamuel/NewtonRaphsonInversion`` at ``0ce9b63``,
``SDXLDDIMPipeline.inversion_step``; ``reference/gnri-paper.md`` 2.2), on any grid.

The network is never differentiated: ``f(z)`` is computed under ``no_grad``, so the gradient of
``sum(Fvec)`` is ``sign(z - f)`` and the "Newton" update is a sign step whose size is the
objective. Per step, ``n_iters`` times (default 2, fixed; no tolerance), in the coordinates of
the scheduler the code runs::

    f = f(z);   Fvec = |f - z| + (lam/2) ((f - m_t) / sd_t)^2        (elementwise)
    keep f if mean(Fvec) is the best score so far
    z <- z + s * sign(f - z),   s = sum(Fvec) / D  (= mean(Fvec))

starting at ``z^0 = z_{t-1}`` and returning the best ``f(z)`` seen (not a ``z``). The prior
term is ``-log q(z_t | z0)`` of the scheduler's own forward marginal ``N(m_t, sd_t^2)`` evaluated
at ``f``: in the code's VE Euler scheduler ``m_t = z0`` (the clean latent) and ``sd_t = sigma_t``
(``get_timestamp_dist``). Cost: exactly ``n_iters`` forwards per step, no backward.

``coordinates`` (which scheduler's coordinates the formula is read in):

- ``grid`` (default; the faithful translation on every grid and family): the grid's own
  latent coordinates, i.e. the code with its scheduler replaced by the grid's (DDIM for VP, the
  flow-matching Euler step for flow). ``z^0 = z_{t-1}`` and its network call is DDIM/Euler
  inversion's own (``StepProblem.explicit_level``: the noisier timestep, the cleaner level's
  scales, as diffusers' ``DDIMInverseScheduler``), so ``f(z^0)`` is exactly
  ``baselines.ddim``'s step; later probes are predicted at the noisier level. The prior is the
  grid's marginal ``q(z_t | z0) = N(a_t z0, s_t^2)`` (VP: ``sqrt(abar_t) z0``,
  ``1 - abar_t``; flow: ``(1 - sigma_t) z0``, ``sigma_t^2``), the image of the code's
  ``N(z0, sigma_t^2)`` under its scheduler's change of coordinates. So
  ``Fvec = |f - z| + (lam/2) (f - a_t z0)^2 / s_t^2``.
- ``scheduler``: the SDXL-Turbo code's own Euler (VE) coordinates on VP grids, which reproduces
  its iterates exactly on an Euler grid (``euler4_trailing``, ``euler_ancestral4``): VE latents
  ``z / a``, ``sigma_t = s_t / a_t``; in our units ``z^0 = (a_t / a_{t-1}) z_{t-1}`` (the code's
  ``z^0 = z_{t-1}`` in VE: its UNet sees ``z_{t-1}^VE / sqrt(1 + sigma_t^2)``) predicted at the
  noisier level, and ``Fvec = |f - z| + a_t (lam/2) ((f - a_t z0) / s_t)^2`` (``a_t`` times the
  code's VE ``Fvec``). On a DDIM grid this is not the DDIM scheduler's step: its first probe
  sees ``(a_t / a_{t-1}) z_{t-1}`` (0.4 z_{t-1} on DDIM 4 leading's last step) instead of
  ``z_{t-1}``, so ``f(z^0)`` is a worse explicit step than DDIM inversion, and the prior's
  weight in the step size carries an extra ``a_t``. On flow grids (no flow path in the code)
  it is the former port: the formula as written, ``z^0 = z_{t-1}``, prior ``((f - z0) /
  s_t)^2`` centred on the clean latent rather than the marginal mean ``(1 - t) z0``.
- ``latent``: the formula as written applied to our latent: ``z^0 = z_{t-1}``, prior
  ``((f - z0) a_t / s_t)^2`` centred on ``z0`` instead of ``a_t z0`` (wrong off VE; kept for
  the record of issue 14).

Why ``grid`` is the default (issue 14). An independent VP transcription of the sign step
disagreed with the former default (``scheduler``) on a v-prediction checkpoint. Re-measured on
the world UNet (eps-prediction), 8 held-out scenes, DDIM leading, gap to the VAE ceiling
(``results/bench_gnri/official_world_sd_ddim.txt``): 10 steps ``grid`` 1.86 dB = the
transcription 1.86 (identical latents), ``scheduler`` 8.60, ``latent`` 4.07; 4 steps 3.08 =
3.08, ``scheduler`` 2.99, ``latent`` 3.12. The transcription's ingredients switched one at a
time name the cause: at 10 steps the VE start ``(a_t / a_{t-1}) z_{t-1}`` alone costs 7.4 dB
(9.22), the prior centre ``z0`` 2.2 dB (4.07), the prior's ``a_t`` factor 1.8 dB (3.68); at 4
steps all are within 0.1 dB. For a v-prediction network the VE start is worse still: its first
probe also converts ``v`` with the noisier level's scales at a point that sits at the cleaner one,
while DDIM inversion (and ``grid``) use the cleaner level's (tests/test_gnri_official_translation.py
uses a v-prediction toy). On Euler grids ``grid`` and ``scheduler`` differ by the same start and
factor; ``scheduler`` is the one that reproduces the SDXL-Turbo code's iterates there.

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
from typing import Literal

import torch

from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, StepInfo, StepProblem, Tensor, invert_with
from gnri.core.step import per_sample_rms
from gnri.methods.options import check_choice

Coordinates = Literal["grid", "scheduler", "latent"]


def _rows(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def score_terms(
    problem: StepProblem, z: Tensor, f: Tensor, z0: Tensor, lam: float, coordinates: str
) -> Tensor:
    """``Fvec`` in latent units (``scheduler`` on VP: ``a_t`` times the code's VE ``Fvec``)."""
    a, s = problem.z_level.a, problem.z_level.s
    if coordinates == "grid":
        return (f - z).abs() + (lam / 2) * ((f - a * z0) / s) ** 2
    if coordinates == "scheduler" and problem.family == "vp":
        return (f - z).abs() + (lam / 2) * a * ((f - a * z0) / s) ** 2
    if coordinates == "scheduler":
        return (f - z).abs() + (lam / 2) * ((f - z0) / s) ** 2
    return (f - z).abs() + (lam / 2) * ((f - z0) * (a / s)) ** 2


def first_probe(problem: StepProblem, coordinates: str) -> tuple[Tensor, Tensor]:
    """``(z^0, f(z^0))``: one network call. ``grid``: DDIM/Euler inversion's own call."""
    if coordinates == "grid":
        pred = problem.denoiser(problem.x, problem.explicit_level, problem.cond)
        return problem.x, problem.implicit_map(pred)
    z = problem.x
    if coordinates == "scheduler" and problem.family == "vp":
        z = (problem.z_level.a / problem.x_level.a) * z
    return z, problem.implicit_map(problem.predict(z))


def solve_step(
    problem: StepProblem, z0: Tensor, *, lam: float, n_iters: int, coordinates: str, numel: int | None
) -> tuple[Tensor, StepInfo]:
    """One step of the public code's ``inversion_step``; returns the best ``f(z)`` by score."""
    d_norm = numel if numel is not None else problem.x[0].numel()
    best_f = problem.x
    best_score = torch.full((problem.x.shape[0],), float("inf"), dtype=problem.x.dtype, device=problem.x.device)
    residual, objective, step_size = [], [], []
    with torch.no_grad():
        z, f = first_probe(problem, coordinates)
        for k in range(n_iters):
            if k > 0:
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


@inverter_info()
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    lam: float = 0.1,
    n_iters: int = 2,
    coordinates: Coordinates = "grid",
    numel: int | None = None,
) -> InversionResult:
    """The public code's GNRI sign step over ``grid``; ``x0`` (the clean latent) anchors the prior."""
    check_choice("inverter gnri_official", "coordinates", coordinates, Coordinates)
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
