"""Negative-prompt inversion (NPI): DDIM inversion, then the source prompt as the negative.

Reference: Miyake, Iohara, Saito, Tanaka, "Negative-prompt Inversion: Fast Image Inversion for
Editing with Text-guided Diffusion Models", arXiv 2305.16807: null-text inversion's optimised
null embeddings are approximated by the source prompt embedding, so no optimisation is needed.
Reference code: ``cure-lab/PnPInversion``, ``models/p2p/inversion.py::NegativePromptInversion``
(with ``npi_interp``, a slerp from the prompt embedding towards the null embedding).

1. DDIM inversion with the source prompt at guidance 1 (one network call per step).
2. ``cond_per_step[i]`` = the source conditioning with ``negative := positive`` (or
   ``slerp(interp, positive, negative)`` per sample) and ``cond.guidance_scale``. For
   reconstruction CFG collapses to the conditional prediction; for editing the target prompt
   is guided away from the source prompt.

Differences from the reference code:
- ``interp`` slerps every floating-point tensor the two branches share, per sample (flattened
  over all but the first dimension, as ``slerp_tensor``), falling back to linear interpolation
  where the two are parallel or one is zero (the reference divides by zero there).
- Refuses settings without classifier-free guidance (no negative branch or guidance 1:
  guidance-distilled models) with a ValueError; without CFG the method is DDIM inversion.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch

from baselines import ddim
from baselines._common import require_cfg
from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Tensor


def slerp(val: float, low: Tensor, high: Tensor) -> Tensor:
    """Per-sample spherical interpolation over all but the first dimension (lerp if degenerate)."""
    rows = low.shape[0] if low.ndim else 1
    a, b = low.reshape(rows, -1), high.reshape(rows, -1)
    norms = a.norm(dim=1) * b.norm(dim=1)
    cos = ((a * b).sum(1) / torch.where(norms > 0, norms, torch.ones_like(norms))).clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    so = torch.sin(omega)
    parallel = (so <= torch.finfo(so.dtype).eps) | (norms == 0)
    safe = torch.where(parallel, torch.ones_like(so), so)
    wa = torch.where(parallel, torch.full_like(so, 1.0 - val), torch.sin((1.0 - val) * omega) / safe)
    wb = torch.where(parallel, torch.full_like(so, val), torch.sin(val * omega) / safe)
    return (wa[:, None] * a + wb[:, None] * b).reshape(low.shape)


@inverter_info()
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    interp: float = 0.0,
    timestep: Literal["dst", "src"] = "dst",
) -> InversionResult:
    """NPI: DDIM inversion at guidance 1; reconstruction replays CFG with negative = positive."""
    require_cfg("negative_prompt", cond)
    if not 0.0 <= interp <= 1.0:
        raise ValueError(f"inverter negative_prompt: interp must be in [0, 1], got {interp!r}")
    result = ddim.invert(denoiser, x0, grid, cond.with_guidance(1.0), timestep=timestep)
    negative = dict(cond.positive)
    if interp > 0.0:
        null = cond.negative or {}
        for k, v in cond.positive.items():
            if k not in null or not v.is_floating_point():
                continue
            if null[k].shape != v.shape:
                raise ValueError(
                    f"inverter negative_prompt: interp needs the branches' shapes to match, "
                    f"{k!r} is {tuple(v.shape)} vs {tuple(null[k].shape)}"
                )
            negative[k] = slerp(interp, v, null[k])
    step = Conditioning(cond.positive, negative, cond.guidance_scale)
    return replace(result, cond_per_step=tuple(step for _ in range(grid.num_steps)))
