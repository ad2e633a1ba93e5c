"""Edit-friendly DDPM inversion: independently noised latents and the noise maps that reproduce them.

Reference: Huberman-Spiegelglas, Kulikov, Michaeli, "An Edit Friendly DDPM Noise Space: Inversion
and Manipulations", arXiv 2304.06140, CVPR 2024 (Sec. 3 and its inversion algorithm; equation
numbers not verified here); public code ``inbarhub/DDPM_inversion``,
``ddm_inversion/inversion_utils.py`` (``sample_xts_from_x0``, ``inversion_forward_process``,
``reverse_step``, ``get_variance``) and ``main_run.py`` (``--mode our_inv``).

The DDPM sampler writes ``x_{t-1} = mu_t(x_t) + sigma_t z_t``. Inversion:

1. draw every noisy latent independently, ``x_t = a_t x0 + s_t n_t`` with ``n_t ~ N(0, I)``
   (not a Markov chain: the "auxiliary" sequence of the paper, ``sample_xts_from_x0``);
2. from the noisiest step down, with the network's prediction at ``x_t`` (source prompt, the
   conditioning's guidance: the code's ``cfg_src``), ``mu_t = a_{t-1} x0_hat + sqrt(s_{t-1}^2 -
   eta c_t^2) eps_hat`` and the noise map ``z_t = (x_{t-1} - mu_t) / (eta c_t)``; ``x_{t-1}`` is
   then recomposed as ``mu_t + eta c_t z_t`` (the code's "correction to avoid error accumulation"),
   so the sampler sees exactly the latents inversion saw.

The sampler (``result.sampler``) runs the same step with the stored maps and any prompt: with the
source conditioning it reproduces ``x0`` to float round-off; with a target prompt it edits
(``cfg_tar`` is the edit conditioning's guidance). One network call per step both ways.

``c_t`` is the DDPM posterior std between consecutive levels, from their ``a, s`` alone:
``c^2 = s_{t-1}^2 (1 - (a_t s_{t-1})^2 / (a_{t-1} s_t)^2)``, the variance of q(x_{t-1} | x_t, x0)
for the Gaussian path ``q(x_t | x0) = N(a_t x0, s_t^2 I)`` with Markov transitions (Kingma et al.,
"Variational Diffusion Models", 2021, the posterior ``q(z_s | z_t, x)``: ``sigma_{t|s}^2 sigma_s^2 /
sigma_t^2``). On VP levels (``a^2 + s^2 = 1``) it is the code's ``get_variance``
``(1 - ab_prev)/(1 - ab_t) (1 - ab_t/ab_prev)``, and ``mu_t`` at ``eta = 1`` is DDPM's posterior
mean (the code's ``mu_tilde``).

Flow grids (``grid.family == "flow"``, ``a = 1 - sigma``, ``s = sigma``): the same formula, read
on the flow's own levels. A flow path is a VP path in rescaled coordinates (divide by
``sqrt(a^2 + s^2)``: same SNR ``a^2/s^2``, same x0), and the posterior above depends only on the
path, so this is DDPM sampling of the flow model (its Markov SDE counterpart at the grid's
levels), written in the flow's coordinates; the network's velocity enters through
``x0_hat = z - sigma v``, ``eps_hat = z + (1 - sigma) v``. At ``sigma = 1`` (SNR 0) the first step
is ``x0_hat`` scaled plus fresh noise, as DDPM's first step from pure noise. This is a choice (the
paper and code are for DDPM/SD only); it needs no change of the model or its time input.

Options and differences from the public code, named:
- ``eta`` (code ``--eta``, default 1): the code's convention, direction ``sqrt(s_{t-1}^2 - eta
  c^2)`` and noise std ``eta c`` (DDIM's eta would use ``eta^2 c^2`` in the direction; the two
  agree at eta = 1). ``0 < eta <= 1``; the code's eta = 0 mode is plain DDIM inversion
  (``inverter=ddim``).
- ``skip`` (code ``--skip 36`` of ``--num_diffusion_steps 100``): sampling starts from the stored
  latent ``round(skip * num_steps)`` steps below the noisiest level and uses the cleaner steps'
  maps, as ``inversion_reverse_process(xT=wts[T - skip], zs=zs[:T - skip])``. Here it is the
  fraction of the grid's steps (0.36: the code's 36 of 100), so it carries over to any step
  count. The maps of skipped steps are not computed (the code computes and never uses them):
  outputs are identical, inversion NFE drops to the steps used.
- ``zero_last`` (default false): the code sets the cleanest step's map to zero after extracting
  it (``zs[0] = 0``), so its reconstruction is off by that step's noise term; false keeps it and
  reconstructs exactly, as the paper states. Where ``c = 0`` (a clean end with ``s = 0``: Euler
  and flow grids) the map is undefined; the stored term is then the residual ``x_{t-1} - mu_t``
  itself (so reconstruction stays exact); ``zero_last=true`` drops it, as the code would.
- Stored per step is the term ``eta c_t z_t`` (batch first: ``(B, steps, ...)``), not ``z_t``;
  ``extras["noise_maps"]`` holds ``z_t`` (zero where ``c = 0``) and ``extras["noise_std"]`` the
  ``eta c_t``.
- ``seed``: the ``n_t`` come from a CPU ``torch.Generator`` seeded with ``seed`` (one draw of one
  image's shape per level, cleanest first, shared by the batch, so a result does not depend on
  batch composition); the code uses the global generator. The grid's own stored ancestral noise
  (``euler_ancestral`` schedules) belongs to the shared sampler and is not used.
- Guidance: the code's ``--cfg_src 3.5`` / ``--cfg_tar 15`` are the run's ``guidance_scale`` and
  the edit's guidance (``task.edit_guidance_scale``), not hyperparameters here.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from gnri.catalog import inverter_info
from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Level, Prediction, StepInfo, Tensor

METHOD = "edit_friendly"


def posterior_std(src: Level, dst: Level) -> float:
    """``c``: the std of q(x_dst | x_src, x0) for the path ``N(a x0, s^2)`` (dst cleaner than src)."""
    if dst.s == 0.0:
        return 0.0
    if dst.a <= 0.0 or src.s <= 0.0:
        raise ValueError(
            f"inverter {METHOD}: step t={src.t} -> t={dst.t} needs a > 0 at the cleaner level and s > 0 at the noisier"
        )
    ratio = (src.a * dst.s) / (dst.a * src.s)  # sqrt(SNR_src / SNR_dst), <= 1 on a valid grid
    return dst.s * math.sqrt(max(1.0 - ratio * ratio, 0.0))


def step_mean(pred: Prediction, dst: Level, c: float, eta: float) -> Tensor:
    """``mu = a_dst x0_hat + sqrt(s_dst^2 - eta c^2) eps_hat`` (the code's ``reverse_step`` without noise)."""
    return dst.a * pred.x0 + math.sqrt(max(dst.s * dst.s - eta * c * c, 0.0)) * pred.eps


def sample_noised(x0: Tensor, grid: Grid, seed: int) -> list[Tensor]:
    """``x_i = a_i x0 + s_i n_i`` at every level (``x_0 = x0``), the ``n_i`` independent (``sample_xts_from_x0``)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = [x0]
    for level in grid.levels[1:]:
        n = torch.randn(x0.shape[1:], generator=gen, dtype=torch.float32).to(device=x0.device, dtype=x0.dtype)
        out.append(level.a * x0 + level.s * n.expand_as(x0))
    return out


def sample_with_maps(
    denoiser: Denoiser, grid: Grid, cond: Conditioning, z: Tensor, *, noise: Tensor, start: Tensor | None,
    eta: float,
) -> Tensor:
    """The DDPM sampler with stored noise terms ``noise[:, i]`` (step ``levels[i+1] -> levels[i]``).

    Starts from ``start`` at ``levels[noise.shape[1]]`` when given (``skip``), else from ``z`` at
    ``levels[-1]``; returns the latent at ``levels[0]``.
    """
    steps = noise.shape[1]
    if steps > grid.num_steps or (start is None and steps != grid.num_steps):
        raise ValueError(
            f"inverter {METHOD}: {steps} stored noise maps do not fit a grid of {grid.num_steps} steps"
        )
    x = z if start is None else start
    if x.shape[0] != noise.shape[0] or x.shape[1:] != noise.shape[2:]:
        raise ValueError(
            f"inverter {METHOD}: stored noise maps of shape {tuple(noise.shape)} do not fit a latent of {tuple(x.shape)}"
        )
    for i in reversed(range(steps)):
        src, dst = grid.levels[i + 1], grid.levels[i]
        x = step_mean(denoiser(x, src, cond), dst, posterior_std(src, dst), eta) + noise[:, i]
    return x


def _check(eta: float, skip: float, seed: int) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 < float(eta) <= 1.0:
        raise ValueError(f"inverter {METHOD}: eta must be in (0, 1], got {eta!r} (eta = 0 is inverter=ddim)")
    if isinstance(skip, bool) or not isinstance(skip, (int, float)) or not 0.0 <= float(skip) < 1.0:
        raise ValueError(f"inverter {METHOD}: skip must be a fraction of the steps in [0, 1), got {skip!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"inverter {METHOD}: seed must be an integer >= 0, got {seed!r}")


@inverter_info(exact_reconstruction=True,
               keeps="1 latent + T noise maps (+ the start latent when skip > 0); zero_last=true: not exact")
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    eta: float = 1.0,
    skip: float = 0.36,
    zero_last: bool = False,
    seed: int = 0,
) -> InversionResult:
    """Edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024): stored noise maps, exact reconstruction."""
    _check(eta, skip, seed)
    used = grid.num_steps - int(round(skip * grid.num_steps))
    if used < 1:
        raise ValueError(f"inverter {METHOD}: skip={skip!r} leaves no step of {grid.num_steps}")
    xs = sample_noised(x0, grid, seed)
    terms: list[Tensor] = [torch.zeros_like(x0)] * used
    maps: list[Tensor] = [torch.zeros_like(x0)] * used
    stds: list[float] = [0.0] * used
    for i in reversed(range(used)):
        src, dst = grid.levels[i + 1], grid.levels[i]
        c = posterior_std(src, dst)
        mu = step_mean(denoiser(xs[i + 1], src, cond), dst, c, eta)
        std = eta * c
        term = xs[i] - mu
        if zero_last and i == 0:
            term = torch.zeros_like(term)
        terms[i], stds[i] = term, std
        maps[i] = term / std if std > 0.0 else torch.zeros_like(term)
        if i > 0:
            xs[i] = mu + term  # the code's correction: the latent the sampler will see next
    noise = torch.stack(terms, dim=1)
    start = None if used == grid.num_steps else xs[used]
    sampler = partial(sample_with_maps, noise=noise, start=start, eta=float(eta))
    steps = tuple(StepInfo(iters=1 if i < used else 0) for i in range(grid.num_steps))
    return InversionResult(
        z=xs[-1], trajectory=tuple(xs), steps=steps, sampler=sampler,
        extras={"noise_maps": torch.stack(maps, dim=1), "noise_std": tuple(stds)},
    )
