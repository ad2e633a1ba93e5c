"""TurboEdit (Deutch, Gal, Garibi, Patashnik, Cohen-Or 2024, arXiv 2408.00735): few-step editing.

"TurboEdit: Text-Based Image Editing Using Few-Step Diffusion Models" (SIGGRAPH Asia 2024);
official code ``GiilDe/turbo-edit`` (read for this transcription: ``main.py`` ``run`` /
``set_pipeline``, ``utils.py`` ``create_xts``, ``deterministic_ddpm_step``, ``step_save_latents``,
``step_use_latents``, ``normalize``; ``run_configs/noise_shift_steps_4.yaml``). Not to be confused
with Wu et al.'s TurboEdit (encoder-based iterative inversion), the other "TurboEdit" of GNRI's Fig. 5.

It is edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024, arXiv 2304.06140, Eqs. 6-7)
made in few steps, with a "pseudo-guidance" on the prompt difference. With ``n`` sampling steps
``k = 0..n-1`` (noisiest first; the network sees ``levels[n-k]``, the step goes to ``levels[n-k-1]``):

1. ``x_ts``: ``x0`` noised *independently* per step, ``x_ts[k] = a_j x0 + s_j eps_k`` at level
   ``j = n - k - noise_shift`` (``create_xts``: ``noise_timesteps = t_k - noise_shift_delta *
   (t_0 - t_1)``; the "noise shift": the latent is one level cleaner than the timestep the network
   is told), ``x_ts[k] = x0`` where ``j <= 0`` and ``x_ts[n] = x0``; the noises are one
   ``torch.randn((m, *x0.shape))`` from a CPU generator seeded with ``seed``, as the code draws them;
2. per step, one network call on ``[x_ts[k]; x_hat; x_hat]`` with ``[source; source; target]``
   (the code's batch of 3: the inversion row, and the edit row evaluated with both prompts);
   ``mu(.)`` is the DDPM posterior mean from ``levels[n-k]`` to ``levels[n-k-1]`` of each
   prediction (``deterministic_ddpm_step``), here :func:`gnri.core.sample_step` with a zero noise
   (DDIM with eta = 1 *is* the DDPM posterior: its mean is the same);
3. the edit-friendly noise map ``z_k = x_ts[k+1] - mu_inv`` (``step_save_latents``), its norm
   clipped to ``max_norm_zs[k]`` with the coefficient ``c`` (``normalize``; ``c = 1`` when off),
   and the edit row's next latent (``step_use_latents``, in the code's order of terms):
   ``x_hat <- c x_ts[k+1] + (mu_src(x_hat) - c mu_inv) + w (mu_tgt(x_hat) - mu_src(x_hat))``,
   i.e. ``mu_src + w (mu_tgt - mu_src) + z_k`` when ``c = 1``. With target = source every step
   lands on ``x_ts[k+1]`` bit for bit, so the edit returns ``x0`` exactly.

Options (the official defaults): ``w = 1.5`` (``--w``, ``ws1``), ``noise_shift = 1``
(``noise_shift_delta``), ``seed = 2`` (``--seed``), ``max_norm_zs = None`` (off; the official
4-step config is ``[-1, -1, -1, 15.5]``, a whole-tensor L2 norm tuned for 64 x 64 x 4 latents).
The official schedule is SDXL-Turbo's DDPM timesteps of a 5-step trailing schedule without its
first step (799, 599, 399, 199): here ``ScheduleSpec("euler", 5, "trailing", strength=0.8)``;
the benchmark's Euler 4 trailing grid (999 .. 249) is a different schedule, not a different editor.
NFE: ``num_steps * forwards_per_call`` (one call per step on a batch of 3B).

Deviations from the official code, named:

- the inverter's ``result`` is not used: TurboEdit makes its own noisy latents from ``x0``
  (every inverter gives the same edit; run it once per pair);
- the inversion row's next latent is ``x_ts[k+1]`` itself, not ``mu + normalize(z)`` (equal up to
  round-off; the code returns ``mu + z`` to the pipeline, whose next inversion row is that sum);
- ``max_norm_zs`` clips the norm per sample (the code: over its batch of one);
- the src/tgt prompts' conditioning come at the edit guidance (the code: ``guidance_scale=0``,
  no CFG; with CFG each row is guided); a grid's stored ancestral noises are not used (the
  noise maps replace them); batched over B pairs (the code: one image).
"""

from __future__ import annotations

from typing import Sequence

import torch

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Tensor, sample_step
from gnri.edit.edit import combine_conditioning
from gnri.models.base import ModelAdapter

W = 1.5  # main.py --w / run_configs ws1
NOISE_SHIFT = 1  # noise_shift_delta
SEED = 2  # main.py --seed
OFFICIAL_MAX_NORM_ZS_4 = (-1.0, -1.0, -1.0, 15.5)  # run_configs/noise_shift_steps_4.yaml (512 px SDXL-Turbo)


def noisy_latents(x0: Tensor, grid: Grid, noise_shift: int = NOISE_SHIFT, seed: int = SEED) -> list[Tensor]:
    """``x_ts[0..n]``: ``x0`` noised independently per sampling step with the noise shift (``create_xts``)."""
    n = grid.num_steps
    index = [n - k - noise_shift for k in range(n)]
    noisy = index[: next((k for k, j in enumerate(index) if j <= 0), n)]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn((len(noisy), *x0.shape), generator=gen).to(device=x0.device, dtype=x0.dtype)
    out = [grid.levels[j].a * x0 + grid.levels[j].s * noise[k] for k, j in enumerate(noisy)]
    return out + [x0] * (n - len(noisy)) + [x0]


def _clip_coefficient(z: Tensor, max_norm: float) -> Tensor:
    """``normalize``: ``max_norm / |z|`` per sample where the norm exceeds ``max_norm`` (>= 0), else 1."""
    ones = torch.ones(z.shape[0], *([1] * (z.dim() - 1)), dtype=z.dtype, device=z.device)
    if max_norm < 0:
        return ones
    norm = z.flatten(1).norm(dim=1).view_as(ones)
    return torch.where(norm < max_norm, ones, max_norm / norm)


def edit(
    adapter: ModelAdapter,
    result: InversionResult,
    grid: Grid,
    source: Conditioning,
    target: Conditioning,
    *,
    denoiser: Denoiser,
    x0: Tensor | None = None,
    w: float = W,
    noise_shift: int = NOISE_SHIFT,
    seed: int = SEED,
    max_norm_zs: Sequence[float] | None = None,
) -> Tensor:
    """The TurboEdit edit of ``x0`` at ``grid.levels[0]`` (the editor contract; ``result`` is not used).

    ``w``: pseudo-guidance on ``mu_tgt - mu_src`` (1: plain edit-friendly DDPM with the target
    prompt); ``noise_shift``: levels by which ``x_ts`` is cleaner than the network's timestep (0:
    no shift); ``seed``: the noise maps' CPU generator; ``max_norm_zs``: per-step L2 bound of the
    noise maps (negative: none). A ValueError (one line) on a flow grid or without ``x0``.
    """
    if grid.family != "vp":
        raise ValueError(
            f"turboedit: needs a VP (DDPM) grid for its posterior steps; model {adapter.name!r} is {grid.family}"
        )
    if x0 is None:
        raise ValueError("turboedit: needs the source's clean latent x0 (it noises x0 itself)")
    n = grid.num_steps
    if int(noise_shift) < 0:
        raise ValueError(f"turboedit: noise_shift must be >= 0, got {noise_shift}")
    norms = [-1.0] * n if max_norm_zs is None else [float(v) for v in max_norm_zs]
    if len(norms) != n:
        raise ValueError(f"turboedit: max_norm_zs has {len(norms)} entries for {n} steps")
    batch = x0.shape[0]
    x_ts = noisy_latents(x0, grid, int(noise_shift), seed)
    cond = combine_conditioning([source, source, target], torch.cat, batch)
    x_hat = x_ts[0]
    for k in range(n):
        src, dst = grid.levels[n - k], grid.levels[n - k - 1]
        pred = denoiser(torch.cat([x_ts[k], x_hat, x_hat]), src, cond)
        mu_inv, mu_src, mu_tgt = sample_step(pred, src, dst, torch.zeros_like(pred.x0)).chunk(3)
        c = _clip_coefficient(x_ts[k + 1] - mu_inv, norms[k])
        x_hat = c * x_ts[k + 1] + (mu_src - c * mu_inv) + w * (mu_tgt - mu_src)
    return x_hat
