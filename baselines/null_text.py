"""Null-text inversion: a DDIM pivot, then per-step optimisation of the negative branch.

Reference: Mokady, Hertz, Aberman, Pritch, Cohen-Or, "Null-text Inversion for Editing Real
Images using Guided Diffusion Models", arXiv 2211.09794, CVPR 2023 (Algorithm 1); public code
``google/prompt-to-prompt``, ``null_text_w_ptp.ipynb`` (``NullInversion.null_optimization``,
copied in ``cure-lab/PnPInversion``, ``models/p2p/inversion.py``).

1. Pivot: DDIM inversion with the source prompt at guidance 1 -> ``z*_0 .. z*_T``.
2. From ``z_T = z*_T``, for each denoising step ``i`` (0 = noisiest), starting from the previous
   step's optimised negative: Adam with ``lr * (1 - lr_decay * i)`` for up to
   ``num_inner_steps`` iterations on ``mean((step(CFG(z_t; neg)) - z*_{t-1})^2)``, stopping
   once it is below ``early_stop + early_stop_slope * i`` (checked after the update, as the
   code does); then ``z_{t-1} = step(CFG(z_t; neg))`` with the adapter's own guidance.
3. Returns ``z*_T`` and ``cond_per_step[i]`` = the source conditioning with the optimised
   negative and ``cond.guidance_scale``, which :func:`gnri.core.reconstruct` replays.

The positive branch is predicted once per step without gradient and each inner iteration runs
only the negative branch, as the code does; the guided prediction is formed here as
``neg + w (pos - neg)`` on ``(x0, eps)`` (the adapter's CFG must be this linear combination).
Cost per step: 1 pivot forward, 1 positive forward, ``k`` negative forward+backward, 2 final.

Differences from the public code:
- The optimised tensors are every floating-point entry of ``cond.negative`` (``keys`` narrows
  it, e.g. ``[prompt_embeds]`` for SDXL's time ids); the code optimises SD's one embedding.
- Adam runs on a float32 (or float64) master copy cast to the adapter's dtype for each call.
- Batched: each sample's loss is its own mean square error; a sample that met its threshold
  is frozen (entries with a leading batch dimension) and the step ends when all have met it.
  The code inverts one image at a time.
- Gradients are taken only with respect to the negative tensors (``torch.autograd.grad``), so
  network parameters never accumulate ``.grad``.
- Refuses settings without classifier-free guidance (guidance-distilled models) with a
  ValueError; the harness records that as a skipped row.

Reported per step: ``iters`` = Adam iterations; ``series["objective"]`` = per-sample loss at
each iteration (before that iteration's update).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from baselines import ddim
from baselines._common import check_positive_int, per_sample, require_cfg
from gnri.catalog import inverter_info
from gnri.core import (
    Conditioning,
    Denoiser,
    Grid,
    InversionResult,
    Prediction,
    StepInfo,
    StepProblem,
    Tensor,
)


def _guided(neg: Prediction, pos: Prediction, w: float) -> Prediction:
    return Prediction(neg.x0 + w * (pos.x0 - neg.x0), neg.eps + w * (pos.eps - neg.eps))


def _master(t: Tensor) -> Tensor:
    dtype = torch.promote_types(t.dtype, torch.float32)
    return t.detach().to(dtype=dtype, copy=True).requires_grad_(True)


def _fit_negative(
    problem: StepProblem, z: Tensor, pos: Prediction, negative: dict[str, Tensor],
    params: dict[str, Tensor], lr: float, threshold: float, num_inner_steps: int,
) -> tuple[int, list[Tensor]]:
    """Adam on ``params`` (in place) so the guided step from ``z`` lands on ``problem.x``."""
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    done = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    objective: list[Tensor] = []
    for _ in range(num_inner_steps):
        branch = {**negative, **{k: p.to(negative[k].dtype) for k, p in params.items()}}
        neg = problem.denoiser(z, problem.z_level, Conditioning(branch))
        loss = problem.residual(_guided(neg, pos, problem.cond.guidance_scale)).flatten(1).pow(2).mean(1)
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        frozen = {k: p.detach().clone() for k, p in params.items()} if bool(done.any()) else {}
        for p, g in zip(params.values(), grads):
            p.grad = g
        opt.step()
        with torch.no_grad():
            for k, old in frozen.items():
                if old.ndim > 0 and old.shape[0] == done.shape[0]:
                    params[k].copy_(torch.where(per_sample(done, old), old, params[k]))
        objective.append(loss.detach())
        done = done | (loss.detach() < threshold)
        if bool(done.all()):
            break
    return len(objective), objective


@inverter_info(keeps="1 latent + T per-step null-text embeddings")
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    num_inner_steps: int = 10,
    lr: float = 1e-2,
    lr_decay: float = 1e-2,
    early_stop: float = 1e-5,
    early_stop_slope: float = 2e-5,
    keys: Sequence[str] | None = None,
    pivot_timestep: Literal["dst", "src"] = "dst",
) -> InversionResult:
    """Null-text inversion; the result carries the per-step negatives for reconstruction."""
    require_cfg("null_text", cond)
    check_positive_int("null_text", "num_inner_steps", num_inner_steps, minimum=0)
    n = grid.num_steps
    if not lr > 0.0 or not 0.0 <= lr_decay * (n - 1) < 1.0:
        raise ValueError(
            f"inverter null_text: need lr > 0 and 0 <= lr_decay * (steps - 1) < 1, "
            f"got lr={lr}, lr_decay={lr_decay}, steps={n}"
        )
    negative = dict(cond.negative or {})
    names = list(keys) if keys is not None else [k for k, v in negative.items() if v.is_floating_point()]
    bad = [k for k in names if k not in negative or not negative[k].is_floating_point()]
    if bad or not names:
        raise ValueError(
            f"inverter null_text: keys must name floating-point tensors of cond.negative "
            f"{sorted(negative)}, got {names}"
        )

    pivot = ddim.invert(denoiser, x0, grid, cond.with_guidance(1.0), timestep=pivot_timestep)
    per_step: list[Conditioning] = [cond] * n
    infos: list[StepInfo] = [StepInfo()] * n
    z = pivot.z
    for j in reversed(range(n)):
        i = n - 1 - j  # the code's index: denoising steps counted from the noisy end
        problem = StepProblem(
            denoiser, pivot.trajectory[j], grid.levels[j], grid.levels[j + 1], cond, grid.noise(j)
        )
        with torch.no_grad():
            pos = denoiser(z, problem.z_level, Conditioning(cond.positive))
        params = {k: _master(negative[k]) for k in names}
        with torch.enable_grad():
            iters, objective = _fit_negative(
                problem, z, pos, negative, params, lr * (1.0 - lr_decay * i),
                early_stop + early_stop_slope * i, num_inner_steps,
            )
        negative = {**negative, **{k: p.detach().to(negative[k].dtype, copy=True) for k, p in params.items()}}
        per_step[j] = Conditioning(cond.positive, negative, cond.guidance_scale)
        infos[j] = StepInfo(iters=iters, series={"objective": tuple(objective)})
        with torch.no_grad():
            z = problem.step_down(denoiser(z, problem.z_level, per_step[j]))
    return InversionResult(
        z=pivot.z, trajectory=pivot.trajectory, steps=tuple(infos), cond_per_step=tuple(per_step)
    )
