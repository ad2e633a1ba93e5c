"""RF-Solver: second-order Taylor steps of the rectified-flow ODE, for inversion and sampling.

Reference: Wang, Pu, Qi, Guo, Ma, Huang, Chen, Li, Shan, "Taming Rectified Flow for Inversion
and Editing", ICML 2025, arXiv 2411.04746 (RF-Solver-2: the second-order expansion of the
exact rectified-flow ODE solution with the velocity's time derivative estimated by a finite
difference at the half step); public code ``wangjiangshan0725/RF-Solver-Edit``,
``FLUX_Image_Edit/src/flux/sampling.py::denoise`` (the same function, with ``inverse``, runs
inversion and sampling).

One step from ``src`` to ``dst``, ``h = sigma_dst - sigma_src`` (see
:mod:`baselines.midpoint_common`)::

    v1 = v(z, src);  v2 = v(z + (h/2) v1, mid);  dv = (v2 - v1) / (h/2)
    z' = z + h v1 + (h^2/2) dv

Two network calls per step, in both directions (2 x steps NFE for inversion, the same again
for every reconstruction or edit; x2 again under classifier-free guidance). Inversion's first
call is at the known cleaner latent with the cleaner level's own timestep, as in the code.
``result.sampler`` is this solver run down the grid (``gnri.core.reconstruct`` uses it; an
edit is the same call with the target prompt). RF-Edit's value injection is the editor
``task.editor=v_inject`` (:func:`gnri.edit.v_injection.injected_edit`), usable after any
inverter on a Flux transformer.

Differences from the public code:
- Steps use the grid's sigmas (``Level.s``); the code steps in its timesteps ``t``, which for
  Flux are the same numbers.
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

METHOD = "rf_solver"


@inverter_info(families=("flow",))
def invert(denoiser: Denoiser, x0: Tensor, grid: Grid, cond: Conditioning) -> InversionResult:
    """RF-Solver inversion: 2 network calls per step; reconstruct with its own 2nd-order sampler."""
    require_flow(METHOD, grid)
    run = integrate(denoiser, x0, grid.levels, cond, update="taylor", reuse=False, method=METHOD)
    sampler = partial(sample, method=METHOD, update="taylor", reuse=False)
    return InversionResult(z=run.latents[-1], trajectory=run.latents, steps=step_infos(run.calls), sampler=sampler)
