"""RF-Inversion: controlled forward ODE toward a fixed noise sample, controlled reverse ODE toward the image.

Reference: Rout, Chen, Ruiz, Caramanis, Shakkottai, Chu, "Semantic Image Inversion and Editing
using Rectified Stochastic Differential Equations", arXiv 2410.10792, ICLR 2025 (Algorithm 1, the
controlled forward ODE, Eq. 8; Algorithm 2, the controlled reverse ODE, Eq. 17); the reference
implementation is diffusers' community pipeline ``examples/community/pipeline_flux_rf_inversion.py``
(``RFInversionFluxPipeline.invert`` and ``__call__`` with ``inverted_latents``).

In this package's convention (``sigma`` = ``level.s``, velocity ``v = eps - x0`` toward noise):

- inversion, step ``i`` from ``x`` at ``sigma_i`` to ``sigma_{i+1}``, with a fixed noise ``y1``::

      u      = v(x, sigma_i)                       (network; ``timestep="src"``: the point's own time)
      u_cond = (y1 - x) / (1 - sigma_i)            (the straight path's velocity to y1)
      x     <- x + (sigma_{i+1} - sigma_i) (u + gamma (u_cond - u))

  ``gamma = 0`` is Euler inversion (``baselines.ddim`` with the same ``timestep``); ``gamma = 1``
  lands exactly on ``y1`` (the last step has ``(sigma_N - sigma_{N-1}) / (1 - sigma_{N-1}) = 1``).
- regeneration (``result.sampler``, the source latent ``y0 = x0`` bound), denoising step ``k``
  (0 = noisiest) from ``sigma_src`` to ``sigma_dst``::

      w      = -v(z, sigma_src)                    (the pipeline's ``v_t = -noise_pred``, toward data)
      w_cond = (y0 - z) / sigma_src
      z     <- z + (sigma_src - sigma_dst) (w + eta_k (w_cond - w)),   eta_k = eta on start <= k < stop

  with ``start``/``stop`` fractions of the steps turned into indices as the pipeline does
  (``int(start * N)``, ``min(int(stop * N), N)``). ``eta = 0`` is the shared Euler sampler.

Defaults: ``gamma = 0.5`` (``invert``'s default), ``eta = 0.9``, ``start = 0``, ``stop = 0.25``
(the issue's and the paper's editing setting; the pipeline's ``__call__`` defaults to
``eta = 1.0`` and its docstring example uses ``stop_timestep = 0.38``); 28 steps is the
pipeline's default, here the schedule's choice. NFE: one call per step both ways.

Differences from the pipeline:
- Step sizes and network times come from the grid, level by level (the paper's Algorithm 1 on
  its grid). The pipeline's ``invert`` feeds the network ``t_i = i / N`` (unshifted) and pairs it
  with the step sizes of the shifted sigma list read from its noisy end, which differ on shifted
  schedules. ``timestep="dst"`` feeds the noisier level's time instead (as ``inverter=ddim``).
- ``y1`` is drawn from a local generator seeded by ``seed`` (one sample of one image's shape,
  shared by the batch, so a result does not depend on batch composition); the pipeline uses
  ``torch.randn_like`` on the global generator.
- Inversion uses the conditioning it is given (the harness's source caption at the run's
  guidance); the paper and pipeline invert with the empty prompt at guidance 0.
- Refuses non-flow grids with a ValueError (a skipped row in the harness).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch

from baselines.flow_common import check_unit_interval, euler, require_flow, velocity
from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Level, StepInfo, Tensor

METHOD = "rf_inversion"
TIMESTEPS = ("src", "dst")


def target_noise(x0: Tensor, seed: int) -> Tensor:
    """The fixed noise sample ``y1``: one standard normal draw of ``x0[0]``'s shape, broadcast to the batch."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    one = torch.randn(x0.shape[1:], generator=gen, dtype=torch.float32)
    return one.to(device=x0.device, dtype=x0.dtype).expand_as(x0)


def window(num_steps: int, start: float, stop: float) -> tuple[int, int]:
    """Denoising step indices ``[first, last)`` where ``eta`` applies (the pipeline's rounding)."""
    return int(start * num_steps), min(int(stop * num_steps), num_steps)


def sample_controlled(
    denoiser: Denoiser, grid: Grid, cond: Conditioning, z: Tensor, *, source: Tensor, eta: float, start: float,
    stop: float,
) -> Tensor:
    """RF-Inversion's controlled reverse ODE (Algorithm 2) from ``z`` at ``grid.levels[-1]`` toward ``source``."""
    if source.shape != z.shape:
        raise ValueError(f"inverter {METHOD}: stored source has shape {tuple(source.shape)} but z has {tuple(z.shape)}")
    first, last = window(grid.num_steps, start, stop)
    for k, i in enumerate(reversed(range(grid.num_steps))):
        src, dst = grid.levels[i + 1], grid.levels[i]
        v = velocity(denoiser(z, src, cond))
        if first <= k < last and eta != 0.0:
            toward_data = -v
            controlled = toward_data + eta * ((source - z) / src.s - toward_data)
            z = z + (src.s - dst.s) * controlled
        else:
            z = euler(z, v, src, dst)
    return z


@inverter_info(families=("flow",), keeps="2 latents (the noise and the source latent the reverse controller pulls toward)")
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    gamma: float = 0.5,
    eta: float = 0.9,
    start: float = 0.0,
    stop: float = 0.25,
    seed: int = 0,
    timestep: Literal["src", "dst"] = "src",
) -> InversionResult:
    """RF-Inversion (Rout et al., ICLR 2025): controlled forward ODE with ``gamma``, controlled reverse ODE with ``eta``."""
    require_flow(METHOD, grid)
    check_unit_interval(METHOD, "gamma", gamma)
    check_unit_interval(METHOD, "eta", eta)
    check_unit_interval(METHOD, "start", start)
    check_unit_interval(METHOD, "stop", stop)
    if start > stop:
        raise ValueError(f"inverter {METHOD}: start must be <= stop, got start={start!r} stop={stop!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"inverter {METHOD}: seed must be an integer >= 0, got {seed!r}")
    if timestep not in TIMESTEPS:
        raise ValueError(f"inverter {METHOD}: timestep must be one of {TIMESTEPS}, got {timestep!r}")
    y1 = target_noise(x0, seed)
    x, trajectory = x0, [x0]
    for i in range(grid.num_steps):
        here, there = grid.levels[i], grid.levels[i + 1]
        at = here if timestep == "src" else Level(t=there.t, a=here.a, s=here.s)
        u = velocity(denoiser(x, at, cond))
        if gamma != 0.0:
            u = u + gamma * ((y1 - x) / (1.0 - here.s) - u)
        x = euler(x, u, here, there)
        trajectory.append(x)
    sampler = partial(sample_controlled, source=x0, eta=eta, start=start, stop=stop)
    return InversionResult(
        z=x, trajectory=tuple(trajectory), sampler=sampler, extras={"target_noise": y1},
        steps=tuple(StepInfo(iters=1) for _ in range(grid.num_steps)),
    )
