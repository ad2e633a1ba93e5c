"""Editing after any inverter: regenerate from the inverted state with a target prompt.

The plain prompt swap is GNRI's public editing (``dvirsamuel/NewtonRaphsonInversion``,
``main.py``: SDXL-Turbo, negative prompt ``""``, edit guidance 1.2): the inverted state is
sampled again with the target prompt's conditioning by :func:`gnri.core.reconstruct`, which
replays whatever the inverter left besides the latent (null-text's and NPI's per-step
negative branch with its guidance scale, EDICT's coupled sampler). With the source prompt and
the inversion's guidance it *is* the reconstruction, bit for bit.

Inverted states are also combined here (no network calls): :func:`stack_pair` stacks one
state twice for a source/target pair batch (Prompt-to-Prompt), :func:`combine_results` maps
any function over the states of several inversions (interpolation). A state is the latent
``z``, the tensors of ``cond_per_step``, and, for a method with its own sampler, the batch
tensors bound in that sampler (it must be a :class:`functools.partial`, as EDICT's, whose
``y`` latent is bound that way).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import torch

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Tensor, reconstruct

EDIT_GUIDANCE_TURBO = 1.2  # GNRI's main.py: edit_cfg for SDXL-Turbo (issue #10: "a bit more strength")

# f(list of per-result tensors) -> combined tensor; used for latents and conditioning alike.
Combine = Callable[[list[Tensor]], Tensor]


def edit_conditioning(
    adapter: Any, prompts: Sequence[str], guidance_scale: float, negative_prompt: str = "",
    true_cfg_scale: float = 1.0,
) -> Conditioning:
    """The target prompts' conditioning: ``negative_prompt`` as the negative branch when guided
    (``true_cfg_scale``: FLUX's true classifier-free guidance, passed only when it is on)."""
    extra = {"true_cfg_scale": true_cfg_scale} if float(true_cfg_scale) != 1.0 else {}
    return adapter.encode_prompts(list(prompts), guidance_scale, [negative_prompt] * len(prompts), **extra)


def prompt_swap(denoiser: Denoiser, result: InversionResult, grid: Grid, target_cond: Conditioning) -> Tensor:
    """The edited latent at ``grid.levels[0]``: the inverted state sampled with ``target_cond``.

    Per-step conditioning keeps its negative branch and guidance scale (only the positive is
    swapped); a method's own sampler is used as is. Nothing else differs from reconstruction.
    """
    return reconstruct(denoiser, result, grid, target_cond)


def _broadcast(t: Tensor, batch: int) -> Tensor:
    return t.expand(batch, *t.shape[1:]) if t.shape[0] == 1 and batch > 1 else t


def _combine_dict(parts: list[dict[str, Tensor] | None], fn: Combine, batch: int) -> dict[str, Tensor] | None:
    if parts[0] is None:
        if any(p is not None for p in parts):
            raise ValueError("edit: the states mix conditionings with and without a negative branch")
        return None
    keys = list(parts[0])
    if any(p is None or list(p) != keys for p in parts):
        raise ValueError("edit: the states' conditionings have different keys")
    return {k: fn([_broadcast(p[k], batch) for p in parts]) for k in keys}  # type: ignore[index]


def combine_conditioning(conds: Sequence[Conditioning], fn: Combine, batch: int) -> Conditioning:
    """Apply ``fn`` key by key to the positive and negative branches (batch-1 tensors broadcast).

    The guidance scale must agree: one call of the denoiser applies one.
    """
    scales = {c.guidance_scale for c in conds}
    if len(scales) != 1:
        raise ValueError(f"edit: conditionings with different guidance scales {sorted(scales)} cannot be combined")
    positive = _combine_dict([c.positive for c in conds], fn, batch)
    negative = _combine_dict([c.negative for c in conds], fn, batch)
    return Conditioning(positive or {}, negative, conds[0].guidance_scale)


def _sampler_state(result: InversionResult) -> tuple[Callable[..., Tensor] | None, dict[str, Tensor]]:
    """(the sampler function, its bound batch tensors) of a result with its own sampler."""
    sampler = result.sampler
    if sampler is None:
        return None, {}
    if not isinstance(sampler, partial):
        raise ValueError(
            "edit: the inverter's own sampler is not a functools.partial, so its bound state cannot be combined"
        )
    batch = result.z.shape[0]
    tensors = {k: v for k, v in sampler.keywords.items() if isinstance(v, Tensor) and v.shape[:1] == (batch,)}
    return sampler.func, tensors


def combine_results(
    results: Sequence[InversionResult], fn: Combine, cond_fn: Combine | None = None
) -> InversionResult:
    """A derived inversion state: ``fn`` over the latents and sampler tensors, ``cond_fn``
    (default ``fn``) over the per-step conditionings.

    Every result must come from the same kind of inverter (all pure latents, all per-step
    conditioning, or all the same sampler function with the same other settings). The derived
    result has no trajectory (its ``trajectory`` is empty) and the first result's step reports.
    """
    first = results[0]
    if any(r.pure_latent != first.pure_latent or (r.cond_per_step is None) != (first.cond_per_step is None)
           for r in results):
        raise ValueError("edit: cannot combine inversions of different kinds (pure latent / per-step / own sampler)")
    z = fn([r.z for r in results])
    per_step = None
    if first.cond_per_step is not None:
        steps = zip(*[r.cond_per_step for r in results])  # type: ignore[misc]
        per_step = tuple(combine_conditioning(list(cs), cond_fn or fn, first.z.shape[0]) for cs in steps)
    sampler = None
    func, _ = _sampler_state(first)
    if func is not None:
        states = [_sampler_state(r) for r in results]
        if any(f is not func for f, _ in states):
            raise ValueError("edit: cannot combine inversions made with different samplers")
        keywords = dict(first.sampler.keywords)  # type: ignore[union-attr]
        keywords.update({k: fn([s[k] for _, s in states]) for k in states[0][1]})
        sampler = partial(func, **keywords)
    return InversionResult(z=z, trajectory=(), steps=first.steps, cond_per_step=per_step, sampler=sampler,
                           extras={})


def stack_pair(
    result: InversionResult, source_cond: Conditioning, target_cond: Conditioning
) -> tuple[InversionResult, Conditioning]:
    """The state twice, ``[source; target]`` along the batch, and the two conditionings stacked.

    Sampling the stacked pair gives the source's regeneration in the first half and the edit in
    the second (both branches share per-step negatives and the guidance scale).
    """
    batch = result.z.shape[0]

    def twice(parts: list[Tensor]) -> Tensor:
        return torch.cat([parts[0], parts[0]])

    def both(parts: list[Tensor]) -> Tensor:
        return torch.cat(parts)

    if (source_cond.negative is None) != (target_cond.negative is None):
        raise ValueError("edit: source and target conditionings must both use guidance or both not")
    return combine_results([result], twice), combine_conditioning([source_cond, target_cond], both, batch)

