"""FireFlow: midpoint steps of the rectified-flow ODE that reuse the previous midpoint velocity.

Reference: Deng, He, Mei, Wang, Tang, "FireFlow: Fast Inversion of Rectified Flow for Image
Semantic Editing", ICML 2025, arXiv 2412.07517 (the midpoint method with the start-of-step
velocity replaced by the previous step's midpoint velocity: second order at about the cost of
Euler); public code ``HolmesShuan/FireFlow-Fast-Inversion-of-Rectified-Flow-for-Image-Semantic-Editing``,
``src/flux/sampling.py::denoise_fireflow`` (one function, with ``inverse``, for both directions)
and ``denoise_midpoint`` (the same without reuse).

One step from ``src`` to ``dst``, ``h = sigma_dst - sigma_src`` (see
:mod:`baselines.midpoint_common`)::

    v1 = v_mid of the previous step   (the first step of a pass: a call v(z, src))
    z' = z + h v(z + (h/2) v1, mid)

NFE: one call per step plus one extra call at the start of every pass, so ``steps + 1`` for the
inversion and ``steps + 1`` for each reconstruction or edit (the sampler starts afresh, as the
code's ``denoise_fireflow`` does; x2 under classifier-free guidance). ``reuse=false`` is the
code's ``denoise_midpoint`` (plain midpoint, 2 calls per step), the ablation that isolates the
reuse. ``result.sampler`` is the same solver run down the grid. FireFlow's ``replace_v`` editing
(its default ``--editing_strategy``) is the editor ``task.editor=v_inject``
(:func:`gnri.edit.v_injection.injected_edit`).

Differences from the public code:
- Steps use the grid's sigmas (``Level.s``); the code steps in ``t``, the same numbers for Flux.
- The code inverts with FLUX-dev's guidance embedding at 1 and samples with ``--guidance`` (2
  in its scripts); here the conditioning passed in decides (in the harness: the run's
  ``guidance_scale`` for inversion and reconstruction, ``task.edit_guidance_scale`` for edits).
- Arithmetic runs in the latents' dtype (the code: bfloat16 on the GPU).
"""

from __future__ import annotations

from functools import partial

from baselines.midpoint_common import integrate, require_flow, sample, step_infos
from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Tensor

METHOD = "fireflow"


@inverter_info(families=("flow",))
def invert(
    denoiser: Denoiser, x0: Tensor, grid: Grid, cond: Conditioning, *, reuse: bool = True
) -> InversionResult:
    """FireFlow inversion: steps + 1 network calls (reuse); reconstruct with its own midpoint sampler."""
    if not isinstance(reuse, bool):
        raise ValueError(f"inverter {METHOD}: reuse must be true or false, got {reuse!r}")
    require_flow(METHOD, grid)
    run = integrate(denoiser, x0, grid.levels, cond, update="midpoint", reuse=reuse, method=METHOD)
    sampler = partial(sample, method=METHOD, update="midpoint", reuse=reuse)
    return InversionResult(z=run.latents[-1], trajectory=run.latents, steps=step_infos(run.calls), sampler=sampler)
