"""GNRI as the paper describes it (arXiv 2312.12540 v5, Eq. 9-10): guided Newton-Raphson per step.

Per inversion step ``z_{t-1} -> z_t`` (``x`` -> ``z`` of :class:`~gnri.core.StepProblem`), with
``f`` the implicit map of the grid's family (``StepProblem.implicit_map``: Eq. 4 holding the
noise prediction fixed for VP/DDIM, the Euler form holding the velocity fixed for flow)::

    F(z) = ||z - f(z)||_1 + lam * G(z),     G(z) = w_t * ||z - mu_t||          (Eq. 9)
    z^0 = z_{t-1};  z^{k+1} = z^k - step(F(z^k), g),   g = dF/dz            (Eq. 10)

``g`` is one vector-Jacobian product through the network per iteration (autograd; the
:class:`~gnri.core.CountingDenoiser` counts it as a backward). ``mu_t``/``w_t``: see
:mod:`gnri.methods.prior`. ``F`` and ``g`` are per sample (batch row), assuming the network
treats batch rows independently.

Options the paper leaves open (``reference/gnri-paper-body.md`` 1.3), with the defaults:

- ``step_rule``: ``min_norm`` (default) ``z - F g / (||g||^2 + eta)``, the minimum-norm Newton
  step of a scalar equation (equal to Eq. 10 when every ``|g_i|`` is equal); ``elementwise``
  is Eq. 10 literally, ``z_i - (1/D) F / (g_i + eta sign(g_i))`` with ``D`` the latent's real
  per-sample numel (the public code hard-codes 64*64*4) and ``sign(0) = +1``, so ``eta``
  cannot create a pole at ``g_i = -eta``. DESIGN.md 4 measured the literal rule diverging
  where some ``g_i ~ 0``; it is kept to show it. ``eta = 1e-3``: a stabiliser (no value in
  the paper), negligible against ``||g||^2 ~ D`` in ``min_norm``.
- ``prior_norm``: ``l2`` (default: plain ``||.||_2`` as transcribed) or ``l2_squared``
  (``w_t ||z - mu_t||^2 / 2``: for VP exactly ``-log q(z_t | z_{t-1})`` up to a constant).
  As transcribed, ``||.||_1`` sums ``D`` terms and ``||.||_2`` grows like ``sqrt(D)``, so the
  weight ``lam = 0.1`` means more on small latents than on the paper's 4x64x64.
- Stopping: after ``max_iters`` Newton updates (default 2: the paper's "1-2 iterations" and
  the public code's fixed count) or once every sample's RMS of ``z - f(z)`` (``z`` units for
  VP; ``step_residuals`` reports ``r`` in ``x`` units) is at most ``tol`` (1e-4).
- ``keep_best`` (default on, the public code's safeguard): pick, per sample, the evaluated
  iterate with the smallest residual RMS. Evaluating ``z^K`` after the last update takes one
  more forward (no backward); without ``keep_best`` (and with ``output='z'``) ``z^K`` is
  returned unevaluated.
- ``output``: ``f`` (default) returns ``f(z^k)`` of the picked iterate (free: computed with its
  residual); ``z`` returns ``z^k`` itself. ``f`` is what the public code returns, and the only
  reading under which the paper's Fig. 3 starts every curve at DDIM inversion's PSNR
  (``f(z^0)`` is DDIM inversion); returning ``z^k`` after 1-2 scalar Newton steps moves every
  element by the same amount and was measured well behind DDIM inversion
  (``scripts/bench_gnri.py --latents randn``, tiny SD, 4 steps: mean step residual 2.1e-1 with
  ``z``, 1.0e-1 with ``f``, 1.1e-1 for DDIM inversion, 4.3e-2 for fixed point at the same 5
  network passes per step).
- Cost per step: ``K`` forwards + ``K`` backwards, plus one forward for ``z^K`` (with
  ``keep_best`` or ``output='f'``); an early stop at ``tol`` skips that iterate's backward.
- ``start``: ``previous`` (``z^0 = z_{t-1}``, the paper) or ``prior_mean`` (``z^0 = mu_t``).
  The paper's Euler case for SDXL-Turbo lives in VE coordinates ``z / a``; in ours (VP) its
  ``z_{t-1}``, ``mu_t = z_{t-1}`` and weight 1 become ``start='prior_mean'``,
  ``prior_mean='transition'``, ``prior_weight='one'``: both step rules are invariant to that
  rescaling, so this reproduces it exactly for ``prior_norm='l2'``.

Differences from the paper, named: ``eta``, ``tol``, the family-derived ``gamma_t``/``beta_t``
and the flow prior mean are choices (not in the text); ``min_norm`` replaces the element-wise
division by default; ``keep_best`` and ``output='f'`` come from the public code; the objective
``F > 0`` at the true root whenever ``lam > 0``, so GNRI solves a regularised problem, not
``r = 0``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch

from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, StepInfo, StepProblem, Tensor, invert_with
from gnri.core.step import per_sample_rms
from gnri.methods.options import check_choice
from gnri.methods.prior import GuidancePrior, PriorMean, PriorWeight, guidance_prior

StepRule = Literal["min_norm", "elementwise"]
PriorNorm = Literal["l2", "l2_squared"]
Start = Literal["previous", "prior_mean"]
Output = Literal["z", "f"]


def _rows(v: Tensor, like: Tensor) -> Tensor:
    """Broadcast a per-sample (B,) tensor over ``like``'s trailing dims."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def objective(
    problem: StepProblem, z: Tensor, prior: GuidancePrior, lam: float, prior_norm: str
) -> tuple[Tensor, Tensor]:
    """``(z - f(z), F(z))`` with ``F`` per sample, shape (B,). One denoiser call."""
    res = problem.fixed_point_residual(z, problem.predict(z))
    dist = (z - prior.mean(problem.x)).flatten(1)
    if prior_norm == "l2":
        g_term = torch.linalg.vector_norm(dist, dim=1)
    else:
        g_term = dist.pow(2).sum(dim=1) / 2
    return res, res.abs().flatten(1).sum(dim=1) + lam * prior.weight * g_term


def newton_step(F: Tensor, g: Tensor, step_rule: str, eta: float) -> Tensor:
    """The update ``d`` (``z <- z + d``) of one scalar Newton step on ``F`` (per sample).

    A zero denominator (only possible with ``eta = 0``) gives a zero step there, not inf.
    """
    if step_rule == "min_norm":
        denom = g.flatten(1).pow(2).sum(dim=1) + eta
        scale = torch.where(denom > 0, F / denom.clamp_min(torch.finfo(g.dtype).tiny), 0.0)
        return -_rows(scale, g) * g
    numel = g[0].numel()
    denom = g + eta * torch.where(g >= 0, 1.0, -1.0).to(g.dtype)
    safe = torch.where(denom != 0, denom, 1.0)
    return torch.where(denom != 0, -_rows(F / numel, g) / safe, 0.0)


def solve_step(
    problem: StepProblem,
    prior: GuidancePrior,
    *,
    lam: float,
    max_iters: int,
    tol: float,
    step_rule: str,
    eta: float,
    prior_norm: str,
    keep_best: bool,
    start: str,
    output: str,
) -> tuple[Tensor, StepInfo]:
    """One step of GNRI: the returned latent and per-iteration ``residual``/``objective``/``step_size``."""
    z = problem.x if start == "previous" else prior.mean(problem.x)
    z = z.detach()
    best_z, best_f = z, z
    best_r = torch.full((z.shape[0],), float("inf"), dtype=z.dtype, device=z.device)
    residual, objective_s, step_size = [], [], []
    updates, converged = 0, False

    def record(zk: Tensor, res: Tensor, F: Tensor) -> Tensor:
        nonlocal best_z, best_f, best_r
        zk, res = zk.detach(), res.detach()
        rms = per_sample_rms(res)
        residual.append(rms)
        objective_s.append(F.detach())
        better = rms < best_r if keep_best else torch.ones_like(rms, dtype=torch.bool)
        best_z = torch.where(_rows(better, zk), zk, best_z)
        best_f = torch.where(_rows(better, zk), zk - res, best_f)
        best_r = torch.where(better, rms, best_r)
        return rms

    for _ in range(max_iters):
        with torch.enable_grad():
            zk = z.detach().requires_grad_(True)
            res, F = objective(problem, zk, prior, lam, prior_norm)
            active = record(zk, res, F) > tol
            if not bool(active.any()):
                converged = True
                break
            (g,) = torch.autograd.grad(F.sum(), zk)
        d = newton_step(F.detach(), g, step_rule, eta) * _rows(active, zk).to(zk.dtype)
        step_size.append(per_sample_rms(d))
        z = zk.detach() + d
        updates += 1
    if not converged and (keep_best or output == "f"):
        with torch.no_grad():
            res, F = objective(problem, z, prior, lam, prior_norm)
            record(z, res, F)
    elif not converged:
        best_z = z
    out = best_f if output == "f" else best_z
    series = {"residual": tuple(residual), "objective": tuple(objective_s), "step_size": tuple(step_size)}
    return out.detach(), StepInfo(iters=updates, series=series)


@inverter_info()
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    lam: float = 0.1,
    max_iters: int = 2,
    tol: float = 1e-4,
    step_rule: StepRule = "min_norm",
    eta: float = 1e-3,
    prior_norm: PriorNorm = "l2",
    prior_mean: PriorMean = "auto",
    prior_weight: PriorWeight = "auto",
    start: Start = "previous",
    keep_best: bool = True,
    output: Output = "f",
) -> InversionResult:
    """GNRI (paper variant) over ``grid``; options as in the module docstring."""
    for name, value, choices in (("step_rule", step_rule, StepRule), ("prior_norm", prior_norm, PriorNorm),
                                 ("start", start, Start), ("output", output, Output)):
        check_choice("inverter gnri", name, value, choices)
    if max_iters < 1:
        raise ValueError(f"inverter gnri: max_iters must be >= 1, got {max_iters}")
    if lam < 0 or eta < 0 or tol < 0:
        raise ValueError(f"inverter gnri: lam, eta, tol must be >= 0, got {lam}, {eta}, {tol}")

    def solve(problem: StepProblem) -> tuple[Tensor, StepInfo]:
        prior = guidance_prior(problem.x_level, problem.z_level, problem.family, prior_mean, prior_weight)
        return solve_step(
            problem, prior, lam=lam, max_iters=max_iters, tol=tol, step_rule=step_rule, eta=eta,
            prior_norm=prior_norm, keep_best=keep_best, start=start, output=output,
        )

    result = invert_with(solve, denoiser, x0, grid, cond)
    return replace(result, extras={"variant": "gnri"})
