"""FTEdit's inversion: fixed-point Euler inversion with an averaged velocity; regeneration adds the stored residual.

Reference: Xu, Jiang, Hu, Luo, He, Zhang, Wang, Wu, Ling, Wang, "Unveil Inversion and Invariance
in Flow Transformer for Versatile Image Editing", arXiv 2411.15843, CVPR 2025; public code
``Pengchengpcx/FTEdit``, ``inversion/flow_fixpoint_residual_new.py``
(``Inversed_flow_fixpoint_residual.fixpoint_step``, ``recovery_img``, ``edit_img_with_residual``)
and ``edit_real_sd35.py`` (defaults ``num_fixpoint_steps=2``, ``average_step_ranges=(0, 5)``).

Inversion step ``i`` from ``x`` at ``sigma_i`` to ``sigma_{i+1}`` (velocity ``v = eps - x0``), with
``K = num_fixpoint_steps`` and ``[lo, hi) = average_range``::

    z_0 = x
    for j = 0..K:   v_j = v(z_j, sigma_{i+1});   z_{j+1} = x + (sigma_{i+1} - sigma_i) v_j
    x_{i+1} = x + (sigma_{i+1} - sigma_i) mean(v_j for lo <= j < hi)    (z_{K+1} if the range is empty)

``K + 1`` network calls per step. The defaults average every call (``(0, 5)`` covers ``j = 0, 1, 2``).

Regeneration (``result.sampler``, the inversion trajectory bound), denoising step from level
``i + 1`` to ``i``: ``z_i = z_{i+1} + (sigma_i - sigma_{i+1}) v(z_{i+1}, c) + r_i``, where the
residual ``r_i`` is ``residual=``:

- ``"source"`` (default, the code): on the source branch only, computed on the fly as the code's
  ``edit_img_with_residual`` does, ``r_i = x_i - (Euler step of the current latent)``: regenerating
  with the inversion's conditioning follows the stored trajectory and returns ``x_0`` (N calls);
  any other conditioning (an edit) is plain Euler (the code's target branch, without its AdaLN /
  attention injection, which is not part of this inverter).
- ``"all"``: ``r_i = x_i - (x_{i+1} + (sigma_i - sigma_{i+1}) v(x_{i+1}, c_source))`` is stored at the
  end of inversion (N more calls, counted as inversion) and added whatever the conditioning, as
  edit-friendly DDPM adds its noise maps (the code's docstring: "with DDPM edit friendly
  inversion"); ``recovery_img(residual_list)`` of the code is this sampler with the source prompt.
- ``"none"``: plain Euler (the fixed-point inversion alone; a pure latent).

Differences from the public code: the network sees the grid's levels (the code reads the
scheduler's tables the same way); arithmetic runs in the latents' dtype (the code mixes float32
and float64 steps); inversion uses the conditioning it is given (the code: the source prompt at
``inv_cfg``); ``skip_steps`` is the schedule's ``strength`` here. Refuses non-flow grids with a
ValueError (a skipped row in the harness).
"""

from __future__ import annotations

from functools import partial
from typing import Literal, Sequence

import torch

from baselines._common import check_positive_int
from baselines.flow_common import euler, require_flow, same_conditioning, velocity
from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, StepInfo, Tensor

METHOD = "ftedit"
RESIDUALS = ("source", "all", "none")


def sample_residual(
    denoiser: Denoiser, grid: Grid, cond: Conditioning, z: Tensor, *, trajectory: Tensor,
    source_cond: Conditioning, residuals: Tensor | None,
) -> Tensor:
    """Euler regeneration plus FTEdit's residual (``trajectory``: ``(B, N+1, ...)``; ``residuals``: ``(B, N, ...)``).

    ``residuals=None``: the residual is computed on the fly toward ``trajectory`` on the source branch only.
    """
    source_branch = residuals is None and same_conditioning(cond, source_cond)
    for i in reversed(range(grid.num_steps)):
        src, dst = grid.levels[i + 1], grid.levels[i]
        z_next = euler(z, velocity(denoiser(z, src, cond)), src, dst)
        if residuals is not None:
            z_next = z_next + residuals[:, i]
        elif source_branch:
            z_next = z_next + (trajectory[:, i] - z_next)
        z = z_next
    return z


def _average_range(average_range: Sequence[int]) -> tuple[int, int]:
    if (
        not isinstance(average_range, (list, tuple)) or len(average_range) != 2
        or any(isinstance(b, bool) or not isinstance(b, int) for b in average_range)
        or not 0 <= average_range[0] <= average_range[1]
    ):
        raise ValueError(
            f"inverter {METHOD}: average_range must be two integers [lo, hi] with 0 <= lo <= hi, got {average_range!r}"
        )
    return int(average_range[0]), int(average_range[1])


@inverter_info(families=("flow",), exact_reconstruction=True,
               keeps="the T+1-latent trajectory (+ T residuals with residual=all); residual=none: 1 latent, not exact")
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    num_fixpoint_steps: int = 2,
    average_range: Sequence[int] = (0, 5),
    residual: Literal["source", "all", "none"] = "source",
) -> InversionResult:
    """FTEdit (Xu et al., CVPR 2025): fixed-point Euler inversion with an averaged velocity, residual-corrected regeneration."""
    require_flow(METHOD, grid)
    check_positive_int(METHOD, "num_fixpoint_steps", num_fixpoint_steps, minimum=0)
    lo, hi = _average_range(average_range)
    if residual not in RESIDUALS:
        raise ValueError(f"inverter {METHOD}: residual must be one of {RESIDUALS}, got {residual!r}")
    x, trajectory, steps = x0, [x0], []
    for i in range(grid.num_steps):
        here, there = grid.levels[i], grid.levels[i + 1]
        z, total, count, drift = x, None, 0, []
        for j in range(num_fixpoint_steps + 1):
            v = velocity(denoiser(z, there, cond))
            if lo <= j < hi:
                total = v if total is None else total + v
                count += 1
            z_new = euler(x, v, here, there)
            drift.append((z_new - z).flatten(1).pow(2).mean(1).sqrt())
            z = z_new
        x = z if total is None else euler(x, total / count, here, there)
        trajectory.append(x)
        steps.append(StepInfo(iters=num_fixpoint_steps + 1, series={"residual": tuple(drift)}))
    sampler = None
    if residual != "none":
        stacked = torch.stack(trajectory, dim=1)
        stored = None
        if residual == "all":
            stored = torch.stack([
                trajectory[i] - euler(trajectory[i + 1], velocity(denoiser(trajectory[i + 1], grid.levels[i + 1], cond)),
                                      grid.levels[i + 1], grid.levels[i])
                for i in range(grid.num_steps)
            ], dim=1)
        sampler = partial(sample_residual, trajectory=stacked, source_cond=cond, residuals=stored)
    return InversionResult(z=x, trajectory=tuple(trajectory), steps=tuple(steps), sampler=sampler)
