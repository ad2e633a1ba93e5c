"""FlowEdit: inversion-free text-based editing with a rectified-flow model.

Reference: Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli, "FlowEdit: Inversion-Free Text-Based
Editing Using Pre-Trained Flow Models", arXiv 2412.08629, ICCV 2025 (its Algorithm 1; equation
numbers not verified here); public code ``fallenshock/FlowEdit``, ``FlowEdit_utils.py``
(``FlowEditFLUX``, ``FlowEditSD3``) with ``FLUX_exp.yaml`` / ``SD3_exp.yaml``.

An ODE from the source latent to the edit, driven by the difference of the target and source
velocities along noised copies of the source. From ``Z = x_src`` at the ``n_max``-th step from
the clean end, for each step ``sigma_i -> sigma_{i-1}`` (noisy -> clean)::

    for k in 1..n_avg:  N_k ~ N(0, I)
        Z_src = (1 - sigma_i) x_src + sigma_i N_k            # the noised source
        Z_tar = Z_src + (Z - x_src)                          # the same noise on the edit
        dV   += (V(Z_tar, sigma_i, c_tar) - V(Z_src, sigma_i, c_src)) / n_avg
    Z <- Z + (sigma_{i-1} - sigma_i) dV

with ``V = eps - x0`` the velocity. The last ``n_min`` steps (default 0) are plain sampling with the
target prompt from ``Z + (Z_src - x_src)`` (the code's SDEdit-style phase). NFE: 2 calls per step
and per average (x2 with classifier-free guidance), none in "inversion".

In this library "inversion" makes no network call: :func:`invert` returns the source latent as
``z`` and a ``sampler`` (source conditioning bound) that runs FlowEdit toward whatever
conditioning it is given, so prompt-swap editing (``task=edit``) is FlowEdit. With the source
prompt the velocity difference is exactly 0 and the sampler returns ``x_src`` unchanged; a
reconstruction task therefore measures nothing, and the harness records it as ``skipped``
(``@inverter_info(tasks=...)``: FlowEdit runs for ``task=edit`` only).

Defaults and differences from the public code, named:
- ``n_max=24``, ``n_min=0``, ``n_avg=1``: the FLUX settings (28 steps there; SD3: 50 steps,
  ``n_max=33``). ``n_max`` counts steps from the clean end, as the code's ``T_steps - i > n_max``
  skip; ``n_max >= num_steps`` runs every step, as the code does.
- Steps and velocities' times come from the grid (the adapter's flow schedule with its shift),
  as the code's ``scheduler.sigmas``.
- Guidance: the code's ``src_guidance_scale``/``tar_guidance_scale`` (SD3: classifier-free 3.5 /
  13.5; FLUX.1-dev: the distilled guidance embedding 1.5 / 5.5) are not hyperparameters here:
  each branch uses the guidance its conditioning carries, the source's from the run's guidance
  settings, the target's from the edit's (``task.edit_guidance_scale``). FLUX's distilled guidance
  travels inside the conditioning, so FLUX.1-dev's 1.5 / 5.5 is ``guidance_scale=1.5
  task.edit_guidance_scale=5.5``.
- Noise: drawn from a CPU ``torch.Generator`` seeded with ``seed`` in the code's order (per step,
  per average), one draw of one image's shape shared by the batch, afresh at every sampler call
  (so an edit is deterministic); the code uses the global generator (seed 10 for FLUX).
- ``Z_tar`` is computed as ``Z_src + (Z - x_src)`` (the code: ``Z + Z_src - x_src``): equal in exact
  arithmetic, and bit-exact ``Z_tar = Z_src`` while ``Z = x_src``.
- The source and target velocities are two calls (as the FLUX code; the SD3 code batches them).
- Refuses non-flow grids with a ValueError (a skipped row in the harness).
"""

from __future__ import annotations

from functools import partial

import torch

from baselines.flow_common import require_flow, velocity
from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Tensor

METHOD = "flowedit"
TASKS = ("edit",)  # the harness tasks FlowEdit applies to (declared with @inverter_info, read by eval.validate.task_refusal)
TASK_NOTE = "flowedit is inversion-free editing"


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"inverter {METHOD}: {name} must be an integer >= {minimum}, got {value!r}")


def _window(grid: Grid, n_max: int, n_min: int) -> int:
    """The number of steps run (``min(n_max, num_steps)``), checked against ``n_min``."""
    first = min(n_max, grid.num_steps)
    if n_min >= first:
        raise ValueError(f"inverter {METHOD}: n_min={n_min} must be < min(n_max, num_steps) = {first}")
    return first


def _draw(gen: torch.Generator, like: Tensor) -> Tensor:
    one = torch.randn(like.shape[1:], generator=gen, dtype=torch.float32)
    return one.to(device=like.device, dtype=like.dtype).expand_as(like)


def flowedit_sample(
    denoiser: Denoiser, grid: Grid, cond: Conditioning, z: Tensor, *, source_cond: Conditioning, n_max: int,
    n_min: int, n_avg: int, seed: int,
) -> Tensor:
    """FlowEdit from the source latent ``z`` toward ``cond`` (the target); the edit at ``grid.levels[0]``."""
    require_flow(METHOD, grid)
    first = _window(grid, n_max, n_min)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x_src, edit, tar = z, z, None
    for i in reversed(range(first)):
        src, dst = grid.levels[i + 1], grid.levels[i]
        if i >= n_min:
            delta = torch.zeros_like(x_src)
            for _ in range(n_avg):
                z_src = src.a * x_src + src.s * _draw(gen, x_src)
                z_tar = z_src + (edit - x_src)
                v_tar = velocity(denoiser(z_tar, src, cond))
                v_src = velocity(denoiser(z_src, src, source_cond))
                delta = delta + (v_tar - v_src) / n_avg
            edit = edit + (dst.s - src.s) * delta
        else:
            if tar is None:  # the SDEdit-style phase starts: the edit noised like the source
                tar = edit + (src.a * x_src + src.s * _draw(gen, x_src) - x_src)
            tar = tar + (dst.s - src.s) * velocity(denoiser(tar, src, cond))
    return edit if tar is None else tar


@inverter_info(families=("flow",), tasks=TASKS, task_note=TASK_NOTE, keeps="the source latent (no inversion)")
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    n_max: int = 24,
    n_min: int = 0,
    n_avg: int = 1,
    seed: int = 0,
) -> InversionResult:
    """FlowEdit (Kulikov et al., ICCV 2025): inversion-free editing; no network call here, the edit runs in the sampler."""
    require_flow(METHOD, grid)
    _check_int("n_max", n_max, 1)
    _check_int("n_min", n_min, 0)
    _check_int("n_avg", n_avg, 1)
    _check_int("seed", seed, 0)
    _window(grid, n_max, n_min)
    sampler = partial(flowedit_sample, source_cond=cond, n_max=n_max, n_min=n_min, n_avg=n_avg, seed=seed)
    return InversionResult(z=x0, trajectory=(x0,), steps=(), sampler=sampler)
