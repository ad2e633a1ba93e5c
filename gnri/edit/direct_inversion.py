"""Direct Inversion ("PnP Inversion"): the source branch pinned to the inversion latents, the target branch free.

Reference: Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of Code", ICLR 2024
(arXiv 2310.01506, first titled "Direct Inversion"; official code ``cure-lab/PnPInversion``, snapshot
07f97f4: ``models/p2p/inversion.py::DirectInversion`` and
``models/p2p/p2p_guidance_forward.py::direct_inversion_p2p_guidance_forward``, driven by
``run_editing_p2p.py`` / ``models/p2p_editor.py::edit_image_directinversion`` as PIE-Bench's
``directinversion+p2p``). The paper's method section (the "3 lines" of its algorithm box) is the
arithmetic below; equation numbers were not re-checked here.

The official loop, with ``x*_0 .. x*_n`` the DDIM inversion latents of the source (``x_stars``) and
``prompts = [source, target]``:

1. ``offset_calculate``: for step ``i`` (noisiest first, timestep ``t``), at ``latent_cur = x*_{t}``
   (both rows), ``rec = prev_step(eps_cfg(latent_cur, t, prompts), t, latent_cur)`` (DDIM eta 0),
   ``noise_loss[i] = x*_{t-1} - rec`` (one row per prompt), then ``latent_cur = x*_{t-1}``;
2. ``direct_inversion_p2p_guidance_forward``: both rows start at ``x*_n``; per step,
   ``latents = scheduler.step(eps_cfg(latents, t, prompts), t, latents)`` under the P2P attention
   controller, then ``latents[0] += noise_loss[i][0]`` (the source row only; the target row is left
   as the step made it).

Because the source row sits at ``x*_t`` at every step and its attention is never rewritten (P2P edits
the target's maps from the source's), its prediction in step 2 is the one of step 1, so
``latents[0]`` after the correction *is* ``x*_{t-1}`` (up to round-off): the source branch is the
inversion trajectory replayed, for any inverter and any guidance, and ends on the source latent
``x0``. That is all the correction does. Here it is written as exactly that: after each step the
source branch is replaced by ``result.trajectory[level]`` (no separate offset pass; the official
offsets of the source row are ``trajectory[i] - step(pred)`` of the same call).

What the source branch contributes: only what an attention-control callback takes from it (P2P's
cross- and self-attention maps, PnP's features), computed on the true inversion latents instead of a
drifting reconstruction. **Without attention control it contributes nothing**: the target branch is
then the inverted latent sampled with the target conditioning, i.e. exactly
:func:`gnri.edit.prompt_swap` (equal up to batch round-off; tested). ``attention`` is the hook for
P2P/PnP: a callable ``attention(denoiser) -> context manager yielding the denoiser`` to use for the
stacked ``[source; target]`` calls (installed processors restored on exit);
:func:`p2p_attention` makes one from :mod:`gnri.edit.p2p`'s controller (PIE-Bench's
``directinversion+p2p``).

``target_offset=True`` is the official ablation ``direct_inversion_p2p_guidance_forward_add_target``
(the target row also gets ``noise_loss[i][1]``, the offset of the *target* prompt's step from the
inversion latents; computed with the plain denoiser, no attention control, as ``offset_calculate``
runs with the controller unregistered). With the source prompt as target, that branch too replays
the trajectory and the edit equals ``x0`` for any inverter; with the default (the PIE-Bench method)
and the source prompt as target, the edit is the inverter's plain reconstruction, and it is the
*source branch* (:func:`direct_inversion_pair`'s first output) that equals ``x0``.

Options: ``attention`` (default None: no attention control), ``target_offset`` (default False).

Differences from the official code, named:

- the inversion is whatever ``result`` holds (the run's inverter on ``grid``); the official code
  always runs plain DDIM inversion with the source prompt at guidance 1 (``ddim_loop``); with
  ``inverter=ddim`` (``timestep="dst"``, as the official ``next_step``) the trajectories coincide;
- no separate offset pass: the source row's offset is applied as the replacement of the same call
  (the official code makes one more batch-2 CFG call per step for ``offset_calculate``, so it costs
  one pass more per step; NFE here: one stacked ``[source; target]`` call per step, plus one
  target-only call per step with ``target_offset``);
- the offsets are not stored in the inversion result: they are recomputed from ``result.trajectory``
  (any inverter that records its trajectory works, null-text's per-step negatives replayed in both
  branches as :func:`gnri.core.reconstruct` does);
- grids: any family (the correction is model-agnostic; flow grids step the Euler step; ancestral
  grids' stored noise is used in both branches); the official code is SD 1.4 + DDIM 50 only;
- a result with its own sampler (EDICT's coupled pair) or without a trajectory (a derived state)
  is refused with a ValueError: its branches cannot be stepped and pinned level by level.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator

import torch

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Tensor, sample_step
from gnri.models.base import ModelAdapter

# attention(denoiser) -> a context manager yielding the denoiser for the stacked [source; target] calls.
Attention = Callable[[Denoiser], ContextManager[Denoiser]]


def _check(result: InversionResult, grid: Grid) -> None:
    if result.sampler is not None:
        raise ValueError("direct_inversion: the inverter has its own sampler (EDICT); its branches cannot be pinned")
    if len(result.trajectory) != grid.num_steps + 1:
        raise ValueError(
            f"direct_inversion: needs the inversion trajectory ({grid.num_steps + 1} latents), "
            f"got {len(result.trajectory)}"
        )


def _step_cond(cond: Conditioning, result: InversionResult, i: int) -> Conditioning:
    """The conditioning of step ``i``: ``cond``, with null-text's per-step negative and scale where stored."""
    if result.cond_per_step is None:
        return cond
    c = result.cond_per_step[i]
    return Conditioning(cond.positive, c.negative, c.guidance_scale, cond.guidance_distilled)


def _stack_branch(src: dict[str, Tensor] | None, tgt: dict[str, Tensor] | None, batch: int) -> dict[str, Tensor] | None:
    """``[source; target]`` key by key; a tensor both share that is not per-sample (Flux's ``txt_ids``) is kept once."""
    if src is None or tgt is None:
        if src is not None or tgt is not None:
            raise ValueError("direct_inversion: source and target conditionings must both use guidance or both not")
        return None
    if list(src) != list(tgt):
        raise ValueError("direct_inversion: source and target conditionings have different keys")
    out = {}
    for key, a in src.items():
        b = tgt[key]
        shared = not isinstance(a, Tensor) or a.ndim == 0 or a.shape[0] not in (1, batch)
        if shared:
            if isinstance(a, Tensor) and not torch.equal(a, b):
                raise ValueError(f"direct_inversion: conditioning {key!r} is shared, not per-sample, but differs")
            out[key] = a
            continue
        a, b = (t.expand(batch, *t.shape[1:]) if t.ndim and t.shape[0] == 1 else t for t in (a, b))
        out[key] = torch.cat([a, b])
    return out


def _pair(source: Conditioning, target: Conditioning, batch: int) -> Conditioning:
    """The stacked ``[source; target]`` conditioning of one call (one guidance scale)."""
    if source.guidance_scale != target.guidance_scale:
        raise ValueError(
            f"direct_inversion: source and target guidance differ ({source.guidance_scale}, {target.guidance_scale})"
        )
    return Conditioning(_stack_branch(source.positive, target.positive, batch) or {},
                        _stack_branch(source.negative, target.negative, batch), source.guidance_scale,
                        source.guidance_distilled)


def _twice(noise: Tensor | None) -> Tensor | None:
    """An ancestral grid's stored noise for the stacked pair (a batch-1 noise broadcasts as it is)."""
    return noise if noise is None or noise.shape[0] == 1 else torch.cat([noise, noise])


@torch.no_grad()
def direct_inversion_pair(
    denoiser: Denoiser,
    result: InversionResult,
    grid: Grid,
    source: Conditioning,
    target: Conditioning,
    *,
    attention: Attention | None = None,
    target_offset: bool = False,
) -> tuple[Tensor, Tensor]:
    """(source branch, target branch) at ``grid.levels[0]``; the source branch is ``trajectory[0]``."""
    _check(result, grid)
    if (source.negative is None) != (target.negative is None):
        raise ValueError("direct_inversion: source and target conditionings must both use guidance or both not")
    traj, batch = result.trajectory, result.z.shape[0]
    z_src, z_tgt = traj[-1], result.z

    scope = contextlib.nullcontext(denoiser) if attention is None else attention(denoiser)
    with scope as pair_denoiser:
        for i in reversed(range(grid.num_steps)):
            src_level, dst_level = grid.levels[i + 1], grid.levels[i]
            pair_cond = _pair(_step_cond(source, result, i), _step_cond(target, result, i), batch)
            pred = pair_denoiser(torch.cat([z_src, z_tgt]), src_level, pair_cond)
            stepped = sample_step(pred, src_level, dst_level, _twice(grid.noise(i)))
            z_tgt = stepped[batch:]
            if target_offset:  # official add_target ablation: the target prompt's offset on the trajectory
                own = denoiser(traj[i + 1], src_level, _step_cond(target, result, i))
                z_tgt = z_tgt + (traj[i] - sample_step(own, src_level, dst_level, grid.noise(i)))
            # The direct correction: stepped[:batch] + (traj[i] - stepped[:batch]), i.e. the trajectory.
            z_src = traj[i]
    return z_src, z_tgt


def edit(
    adapter: ModelAdapter,
    result: InversionResult,
    grid: Grid,
    source: Conditioning,
    target: Conditioning,
    *,
    denoiser: Denoiser,
    x0: Tensor,
    attention: Attention | None = None,
    target_offset: bool = False,
    **options: Any,
) -> Tensor:
    """Direct Inversion's edit: the target branch at ``grid.levels[0]`` (module docstring).

    ``x0`` is unused beyond a shape check (the source branch ends on ``result.trajectory[0]``); None is accepted.
    """
    if options:
        raise ValueError(f"direct_inversion: unknown options {sorted(options)} (known: attention, target_offset)")
    if x0 is not None and result.trajectory and result.trajectory[0].shape != x0.shape:
        raise ValueError("direct_inversion: the inversion's trajectory does not start at a latent of x0's shape")
    return direct_inversion_pair(
        denoiser, result, grid, source, target, attention=attention, target_offset=target_offset
    )[1]


def p2p_attention(adapter: ModelAdapter, grid: Grid, controller: Any) -> Attention:
    """Prompt-to-Prompt control for :func:`edit`'s ``attention`` (``directinversion+p2p``).

    ``controller``: a :class:`gnri.edit.p2p.P2PController` for the pairs
    (:func:`gnri.edit.p2p.make_controller`); the adapter's probability processors are installed
    for the block, as :func:`gnri.edit.p2p.p2p_sample` does.
    """
    from gnri.edit.p2p import P2PDenoiser

    if adapter.network_kind != "unet":
        raise ValueError(f"direct_inversion: p2p needs a UNet model; {adapter.name!r} has {adapter.network_kind}")

    @contextlib.contextmanager
    def scope(denoiser: Denoiser) -> Iterator[Denoiser]:
        with adapter.attention_processors(lambda name, _: adapter.probability_processor(controller, name)):
            yield P2PDenoiser(denoiser, controller, grid)

    return scope
