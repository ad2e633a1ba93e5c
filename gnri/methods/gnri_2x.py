"""``gnri_2x``: a GNRI-family inverter at 2x DDIM inversion's network evaluations, no backward pass.

Beyond the paper (issue 14). Each inversion step ``z_{t-1} -> z_t`` solves GNRI's fixed-point
equation ``z = f(z)`` (``StepProblem.implicit_map``: arXiv 2312.12540 Eq. 4 for VP, its Euler
form for flow) with ``k`` evaluations of ``f``; the ``k`` of each step comes from a budget of
``evals_per_step x N`` evaluations in all (``N`` steps; default 2, so NFE = 2x DDIM's)::

    z^0 = f(pred_extrapolated)                    (start='extrapolate': no network call; see below)
    r^0 = f(z^0) - z^0                            (evaluation 1)
    z^1 = z^0 + omega r^0                         (first='chebyshev' | 'sigma' | 'fixed_point')
    r^i = f(z^i) - z^i                            (evaluations 2..k)
    z^{i+1} = f(z^i) - sum_j gamma_j (f(z^{j+1}) - f(z^j)),  gamma = argmin ||r^i - sum_j gamma_j (r^{j+1} - r^j)||

that is a relaxed fixed-point step, then Anderson mixing over the step's whole history (type II;
with ``k = 2`` one secant). A step with ``k = 1`` stops at ``z^1``, with the degree-1 Chebyshev
relaxation ``omega = 2 / (1 + m)``. The output ``z^k`` is the unevaluated extrapolation (as
``gnri_aa``).

Derivation of ``omega`` and of the schedule. Write the network as ``eps(z) = (z - a x0hat(z)) / s``
(VP) or the velocity ``v(z) = (z - x0hat(z)) / s`` (flow). Then ``J_f = lambda_1 (I - a J_x0hat)``
with ``lambda_1 = B / s_t`` (VP: ``B = s_t - a_t s_{t-1} / a_{t-1}``, the coefficient of ``eps``
in ``f``; flow: ``B = s_t - s_{t-1}``). For Gaussian data of variance ``c^2`` along a direction,
``a J_x0hat = a^2 c^2 / (a^2 c^2 + s^2)``, so the eigenvalues of ``J_f`` lie in ``[0, lambda_1]``:
``lambda_1`` along directions the data does not vary in (the error fixed point removes slowest),
``~0`` along directions it varies in a lot. The residual operator ``I - J_f`` therefore has its
spectrum in ``[m, 1]`` with ``m = 1 - lambda_1`` known from the two levels alone (VP:
``m = sigma_{t-1} / sigma_t``, the ratio of the VE sigmas; flow: ``m = s_{t-1} / s_t``).

- Relaxation. Richardson steps ``z + omega r`` multiply the error by ``1 - omega mu`` on that
  spectrum; the ``k`` steps whose product is smallest over ``[m, 1]`` are the degree-``k``
  Chebyshev ones, ``omega_j = 1 / mu_j``, ``mu_j = (1 + m)/2 + (1 - m)/2 cos((2j - 1) pi / 2k)``.
  ``first='chebyshev'`` (default) takes the smallest of the degree-2 pair (``<= 1.18``) and
  leaves the rest to Anderson, which adapts to the spectrum the error actually has (for an
  affine ``f`` with ``J_f`` a multiple of the identity on the error's span the secant lands on
  the root); ``sigma`` takes ``omega = 1 / m`` (clipped at ``omega_max``); ``fixed_point`` 1.
  ``second='chebyshev'`` replaces Anderson by the fixed degree-``k`` nodes (a recorded failure).
- Schedule (``schedule='front'``, default). After ``k`` such steps the best worst-case error
  factor on ``[m, 1]`` is ``1 / T_k((1 + m) / (1 - m))`` (``T_k``: Chebyshev polynomial): it
  falls geometrically in ``k`` when ``m > 0`` and is exactly 1 when ``m = 0``, which is the
  first step (from the clean level, ``sigma_{t-1} = 0``). That step also has no warm start,
  and the sampler's last step returns ``x0hat(z_1)`` itself, so its residual is the output's
  error unattenuated. Every later step has ``m > 0``, a warm start from the trajectory and an
  error the sampler contracts. So the budget goes first to the first step:
  ``first_step_evals`` (default 5, at most what leaves one per later step), and the rest is
  spread evenly over the others, the cleaner ones first. Where the first step converges anyway
  (a DDIM grid whose cleanest level is barely noisy, a random network), the extra evaluations
  would be wasted and the later steps starved; so past its even share the first step stops once
  its residual is at most ``first_step_tol`` (0.1) times its first one, and what it saved is
  spread over the later steps. Budgets are per image: in a batch an image that has stopped
  keeps its latent while the others go on, so each image gets what it gets alone (the batch
  makes the most calls any of its images makes). ``uniform`` spreads the budget evenly over
  every step (``evals_per_step = 2``: exactly 2 each). ``result.extras``: ``evaluations`` (the
  batch's calls per step) and ``evaluations_per_image`` ((B, N)).

Warm start (``start``). ``previous``: ``z^0 = f(q_{t-1})`` with ``q_{t-1}`` the previous step's
last prediction (made at level ``t-1``); ``f`` holds it fixed, so ``z^0`` is DDIM inversion with
the previous level's network output, at no cost. ``extrapolate`` (default): the prediction
(``x0`` and ``eps``, hence the velocity) is extended along the trajectory by the line through
the last two steps' predictions in the noise coordinate ``sigma`` (VP: ``s / a``; flow: ``s``),
``q = q_{t-1} + rho (q_{t-1} - q_{t-2})``, ``rho = (sigma_t - sigma_{t-1}) / (sigma_{t-1} -
sigma_{t-2})`` clipped at 1 (on SDXL-Turbo's trailing levels the unclipped ratio reaches 4.3);
the first step starts from ``x``, the second from ``previous``. First-order extrapolation of the
network output along the probability-flow path, at no network cost.

Cost: ``floor(evals_per_step x N)`` forwards (at least one per step), no backward. Per-sample
least squares in float64 with the ridge ``regularization`` (``gnri.core.anderson``).

Measured (``results/bench_gnri/gnri_2x.md``; 8 held-out world scenes, gap to the VAE ceiling,
NFE = 2N): world UNet Euler 10 trailing 0.06 dB (2 per step uniformly: 0.83; gnri_aa warm 1.23),
DDIM 10 leading 0.01 (the first step converges at 2: uniform), world flow model 4 steps 0.07
(uniform 0.14); Euler 4 trailing 1.13 dB (uniform 1.46, gnri_aa warm 1.87, DDIM 9.97 at N), where
the 0.5 dB bar is not met. At 1.5 per step: Euler 10 0.08, DDIM 10 0.02, flow 4 0.13, Euler 4
1.73. EDICT is exact (0.00) at 2N as a coupled pair with its own sampler.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

import torch

from gnri.catalog import inverter_info
from gnri.core import (
    Conditioning,
    Denoiser,
    Grid,
    InversionResult,
    Level,
    Prediction,
    StepInfo,
    StepProblem,
    Tensor,
    invert_with,
)
from gnri.core.anderson import combine, mixing_coefficients
from gnri.core.step import per_sample_rms
from gnri.methods.options import check_choice

Start = Literal["previous", "extrapolate", "x"]
First = Literal["chebyshev", "sigma", "fixed_point"]
Second = Literal["anderson", "chebyshev"]
Schedule = Literal["front", "uniform"]


def spectrum_floor(problem: StepProblem) -> float:
    """``m = 1 - lambda_1``: the smallest eigenvalue of ``I - J_f`` under the module's model."""
    xl, zl = problem.x_level, problem.z_level
    if problem.family == "flow":
        return xl.s / zl.s
    return (zl.a * xl.s / xl.a) / zl.s


def noise_scale(level: Level, family: str) -> float:
    """The level's noise-to-signal coordinate: VE ``sigma = s / a`` (VP) or ``s`` (flow)."""
    return level.s if family == "flow" else level.s / level.a


def warm_prediction(problem: StepProblem, history: list[tuple[float, Prediction]], start: str) -> Prediction | None:
    """The free prediction ``z^0`` is built from: None (use ``x``), the previous step's last
    prediction, or (``extrapolate``) the line through the last two, evaluated at this level's
    sigma with the ratio ``rho = (sigma_t - sigma_{t-1}) / (sigma_{t-1} - sigma_{t-2})`` clipped at 1."""
    if start == "x" or not history:
        return None
    if start == "previous" or len(history) < 2:
        return history[-1][1]
    (s2, q2), (s1, q1) = history[-2], history[-1]
    rho = min((noise_scale(problem.z_level, problem.family) - s1) / (s1 - s2), 1.0)
    return Prediction(q1.x0 + rho * (q1.x0 - q2.x0), q1.eps + rho * (q1.eps - q2.eps))


def chebyshev_nodes(m: float, degree: int) -> tuple[float, ...]:
    """The degree-``degree`` Chebyshev Richardson steps ``1 / mu_j`` on ``[m, 1]``, smallest first."""
    centre, half = (1.0 + m) / 2, (1.0 - m) / 2
    mus = [centre + half * math.cos((2 * j - 1) * math.pi / (2 * degree)) for j in range(1, degree + 1)]
    return tuple(1.0 / mu for mu in mus)


def evaluation_schedule(
    num_steps: int, evals_per_step: float, first_step_evals: int, schedule: str,
) -> tuple[int, ...]:
    """Network evaluations of each step, cleanest first: ``floor(evals_per_step x num_steps)`` in all
    (at least one per step). ``front`` gives the first step ``max(first_step_evals, its even share)``,
    capped so every later step keeps one, and spreads the rest evenly (extra ones to the cleaner
    steps); ``uniform`` spreads everything evenly."""
    total = max(num_steps, math.floor(evals_per_step * num_steps + 1e-9))
    head: tuple[int, ...] = ()
    if schedule == "front" and num_steps > 1:
        share = math.ceil(total / num_steps)
        head = (min(max(first_step_evals, share), total - (num_steps - 1)),)
    return head + spread(total - sum(head), num_steps - len(head))


def spread(total: int, steps: int) -> tuple[int, ...]:
    """``total`` evaluations over ``steps`` steps as evenly as possible, the extra ones to the cleaner steps."""
    base, extra = divmod(total, steps)
    return tuple(base + (1 if i < extra else 0) for i in range(steps))


def _where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Per-sample ``new`` where ``mask`` (B,) holds, else ``old``."""
    return torch.where(mask.view(-1, *([1] * (new.ndim - 1))), new, old)


def _per_sample(values: list[float], like: Tensor) -> Tensor:
    """One scalar per image as a tensor that broadcasts over ``like`` (B, ...), in its dtype and device."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))


def first_relaxation(m: float, evals: Tensor, first: str, omega_max: float, like: Tensor) -> Tensor:
    """Each image's ``omega`` of the first update ``z^1 = z^0 + omega r^0`` (see the module docstring):
    ``chebyshev``: the smaller degree-2 node, or the degree-1 node for an image with a single call;
    ``sigma``: ``1 / m`` clipped at ``omega_max``; ``fixed_point``: 1."""
    if first == "chebyshev":
        choices = [chebyshev_nodes(m, 2)[0] if int(k) >= 2 else chebyshev_nodes(m, 1)[0] for k in evals]
    else:
        choices = [(min(1.0 / m, omega_max) if m > 0 else omega_max) if first == "sigma" else 1.0] * len(evals)
    return _per_sample(choices, like)


def next_iterate(
    i: int, z: Tensor, fs: list[Tensor], rs: list[Tensor], *, omega: Tensor, second: str,
    nodes: list[tuple[float, ...]], regularization: float,
) -> Tensor:
    """The iterate after evaluation ``i`` (0-based) of ``f`` at ``z``: the relaxed step ``z + omega r^0``
    first, then Anderson mixing over the whole history ``fs``/``rs`` (``second='anderson'``) or each
    image's ``i``-th fixed Chebyshev node (0 past its own degree)."""
    if i == 0:
        return z + omega * rs[0]
    if second == "anderson":
        gamma = mixing_coefficients([b - a for a, b in zip(rs, rs[1:])], rs[-1], regularization)
        return fs[-1] - combine([b - a for a, b in zip(fs, fs[1:])], gamma)
    return z + _per_sample([w[i] if i < len(w) else 0.0 for w in nodes], z) * rs[-1]


def _keep(active: Tensor, pred: Prediction, kept: Prediction | None) -> Prediction:
    """``pred`` for the images still ``active`` (B,), ``kept`` for those that stopped."""
    if kept is None:
        return pred
    return Prediction(_where(active, pred.x0, kept.x0), _where(active, pred.eps, kept.eps))


def solve_step(
    problem: StepProblem, *, evals: Tensor, first: str, second: str, omega_max: float, regularization: float,
    warm: Prediction | None, min_evals: Tensor | None = None, stop_ratio: float = 0.0,
) -> tuple[Tensor, StepInfo, Prediction, Tensor]:
    """One step with at most ``evals[j]`` network calls for image ``j`` (a (B,) integer tensor).

    Returns the latent, per-call ``residual``/``step_size`` (NaN for an image past its own calls;
    ``info.iters``: the batch's calls), each image's last prediction and its calls (B,). Past
    ``min_evals[j]`` calls image ``j`` stops once its residual is at most ``stop_ratio`` times its
    first one (converged). An image that has stopped keeps its latent and prediction while the
    batch goes on, so every image's result is the one it gets alone.
    """
    m = spectrum_floor(problem)
    calls = int(evals.max())
    omega = first_relaxation(m, evals, first, omega_max, problem.x)
    nodes = [chebyshev_nodes(m, int(k)) for k in evals] if second == "chebyshev" else []  # each image's degree
    evals, floor = evals.to(problem.x.device), (evals if min_evals is None else min_evals).to(problem.x.device)
    may_stop = stop_ratio > 0 and bool((floor < evals).any())  # only then a host sync per call
    zs: list[Tensor] = []
    fs: list[Tensor] = []
    rs: list[Tensor] = []
    res_series: list[Tensor] = []
    step_series: list[Tensor] = []
    used = torch.zeros_like(evals)
    with torch.no_grad():
        z = problem.x if warm is None else problem.implicit_map(warm)
        out, kept = z, warm
        for i in range(calls):
            active = used < evals  # an image that stopped early has used >= evals (see below)
            pred = problem.predict(z)
            f = problem.implicit_map(pred)
            zs.append(z)
            fs.append(f)
            rs.append(f - z)
            z = next_iterate(i, z, fs, rs, omega=omega, second=second, nodes=nodes, regularization=regularization)
            out, kept = _where(active, z, out), _keep(active, pred, kept)
            rms = per_sample_rms(rs[-1])
            res_series.append(torch.where(active, rms, torch.nan))
            step_series.append(torch.where(active, per_sample_rms(z - zs[-1]), torch.nan))
            used = used + active.long()
            if may_stop and i >= 1:
                converged = active & (used >= floor) & (rms <= stop_ratio * per_sample_rms(rs[0]))
                evals = torch.where(converged, used, evals)  # converged: no more calls for it
                if not bool((used < evals).any()):
                    break
    series = {"residual": tuple(res_series), "step_size": tuple(step_series)}
    assert kept is not None  # at least one call was made
    return out, StepInfo(iters=len(rs), series=series), kept, used.cpu()


@inverter_info()
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    evals_per_step: float = 2.0,
    schedule: Schedule = "front",
    first_step_evals: int = 5,
    first_step_tol: float = 0.1,
    start: Start = "extrapolate",
    first: First = "chebyshev",
    second: Second = "anderson",
    omega_max: float = 4.0,
    regularization: float = 1e-10,
) -> InversionResult:
    """GNRI's fixed point at ``evals_per_step`` x N network calls: Chebyshev-relaxed step, then Anderson."""
    for name, value, choices in (("start", start, Start), ("first", first, First), ("second", second, Second),
                                 ("schedule", schedule, Schedule)):
        check_choice("inverter gnri_2x", name, value, choices)
    if not evals_per_step >= 1.0:
        raise ValueError(f"inverter gnri_2x: evals_per_step must be >= 1, got {evals_per_step}")
    if not (isinstance(first_step_evals, int) and first_step_evals >= 1):
        raise ValueError(f"inverter gnri_2x: first_step_evals must be an integer >= 1, got {first_step_evals!r}")
    if not first_step_tol >= 0:
        raise ValueError(f"inverter gnri_2x: first_step_tol must be >= 0, got {first_step_tol}")
    if not omega_max >= 1.0:
        raise ValueError(f"inverter gnri_2x: omega_max must be >= 1, got {omega_max}")
    if regularization < 0:
        raise ValueError(f"inverter gnri_2x: regularization must be >= 0, got {regularization}")
    plan = evaluation_schedule(grid.num_steps, evals_per_step, first_step_evals, schedule)
    total, share = sum(plan), math.ceil(sum(plan) / grid.num_steps)
    history: list[tuple[float, Prediction]] = []  # (sigma, last prediction) of the steps so far
    used: list[Tensor] = []  # each step's calls per image (B,)

    def solve(problem: StepProblem) -> tuple[Tensor, StepInfo]:
        i, batch = len(used), problem.x.shape[0]
        if i == 0:
            evals = torch.full((batch,), plan[0], dtype=torch.long)
            floor = torch.full_like(evals, min(share, plan[0]))
        else:  # what the first step saved goes to the later steps, image by image
            evals = torch.tensor([spread(total - int(c), len(plan) - 1)[i - 1] for c in used[0]], dtype=torch.long)
            floor = None
        z, info, pred, calls = solve_step(
            problem, evals=evals, first=first, second=second, omega_max=omega_max, regularization=regularization,
            warm=warm_prediction(problem, history, start), min_evals=floor, stop_ratio=first_step_tol if i == 0 else 0.0,
        )
        used.append(calls)
        history[:] = (history + [(noise_scale(problem.z_level, problem.family), pred)])[-2:]
        return z, info

    result = invert_with(solve, denoiser, x0, grid, cond)
    per_image = torch.stack(used, dim=1)  # (B, N)
    return replace(result, extras={"variant": "gnri_2x", "evaluations": tuple(s.iters for s in result.steps),
                                   "evaluations_per_image": per_image})
