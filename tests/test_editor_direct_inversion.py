"""Oracles for Direct Inversion (:mod:`gnri.edit.direct_inversion`).

(1) A by-hand transcription of the official loop (``cure-lab/PnPInversion``:
``DirectInversion.ddim_loop`` / ``next_step``, ``offset_calculate`` / ``prev_step``,
``direct_inversion_p2p_guidance_forward`` with ``DDIMScheduler.step`` and the source row's
``noise_loss`` added; and the ``_add_target`` ablation), written on the raw tiny SD UNet in float64
with no attention controller, equals both branches of the editor after ``inverter=ddim``, with and
without guidance. (2) With the source prompt as target, the source branch is the source latent
exactly and the ``target_offset`` edit equals it to float precision, after inverters whose
reconstruction is *not* exact (DDIM, NPI's per-step negatives, a deliberately wrong trajectory on the
analytic toy, VP and flow). (3) Without attention control the edit is :func:`prompt_swap` (the
source branch contributes nothing); an attention hook sees the stacked ``[source; target]`` batch,
and the P2P hook runs on the tiny UNet. (4) Refusals.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from diffusers import DDIMScheduler

from baselines import ddim, negative_prompt
from gnri.core import Conditioning, CountingDenoiser, InversionResult, reconstruct
from gnri.edit import direct_inversion as di
from gnri.edit.edit import prompt_swap
from gnri.models import ScheduleSpec
from gnri.models.tiny import tiny_adapter
from gnri.toy import GaussianDenoiser, flow_grid, vp_grid

F64 = torch.float64
TOL = 1e-5  # relative, for diffusers' float32 coefficients (as tests/test_diffusers_oracles.py)
EXACT = 1e-9  # float64 batch round-off
SOURCE, TARGET = "a photo of a cat", "a photo of a dog"


@pytest.fixture(scope="module")
def sd64():
    return tiny_adapter("sd", dtype=F64)


def _x0(shape, seed=5):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _close(ours, ref, tol=TOL):
    err = (ours - ref).abs().max().item()
    assert err <= tol * max(1.0, ref.abs().max().item()), err


def _official(adapter, x0, src_emb, tgt_emb, null_emb, guidance, steps, add_target=False):
    """The official arithmetic (no attention controller): returns (x_stars, final [source; target] rows)."""
    unet = adapter.pipe.unet
    sched = DDIMScheduler.from_config(adapter.pipe.scheduler.config)
    sched.set_timesteps(steps)
    ratio = sched.config.num_train_timesteps // steps
    ac, final = sched.alphas_cumprod.to(F64), sched.final_alpha_cumprod.to(F64)

    def prev_step(eps, t, sample):
        prev_t = t - ratio
        a_t, a_prev = ac[t], (ac[prev_t] if prev_t >= 0 else final)
        x0_pred = (sample - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        return a_prev**0.5 * x0_pred + (1 - a_prev) ** 0.5 * eps

    def next_step(eps, t, sample):
        cur_t, next_t = min(t - ratio, 999), t
        a_t, a_next = (ac[cur_t] if cur_t >= 0 else final), ac[next_t]
        x0_pred = (sample - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        return a_next**0.5 * x0_pred + (1 - a_next) ** 0.5 * eps

    context = torch.cat([null_emb, null_emb, src_emb, tgt_emb])  # [uncond x2; source, target]

    def cfg_eps(latents, t):
        out = unet(torch.cat([latents] * 2), t, encoder_hidden_states=context).sample
        uncond, text = out.chunk(2)
        return uncond + guidance * (text - uncond)

    with torch.no_grad():
        latent, x_stars = x0.clone(), [x0]
        for i in range(steps):  # ddim_loop: the source prompt, no guidance
            t = int(sched.timesteps[len(sched.timesteps) - i - 1])
            latent = next_step(unet(latent, t, encoder_hidden_states=src_emb).sample, t, latent)
            x_stars.append(latent)
        noise_loss, latent_cur = [], torch.cat([x_stars[-1]] * 2)
        for i in range(steps):  # offset_calculate
            latent_prev = torch.cat([x_stars[len(x_stars) - i - 2]] * 2)
            t = int(sched.timesteps[i])
            rec = prev_step(cfg_eps(latent_cur, t), t, latent_cur)
            noise_loss.append(latent_prev - rec)
            latent_cur = rec + noise_loss[-1]
        latents = torch.cat([x_stars[-1]] * 2)
        for i, t in enumerate(sched.timesteps):  # direct_inversion_p2p_guidance_forward(_add_target)
            latents = sched.step(cfg_eps(latents, t), t, latents).prev_sample
            tail = latents[1:] + noise_loss[i][1:] if add_target else latents[1:]
            latents = torch.cat([latents[:1] + noise_loss[i][:1], tail])
    return x_stars, latents


@pytest.mark.parametrize("steps,guidance,add_target", [(4, 7.5, False), (6, 7.5, False), (4, 1.0, False),
                                                        (4, 7.5, True)])
def test_matches_official_loop_by_hand(sd64, steps, guidance, add_target):
    x0 = _x0(sd64.latent_shape(1))
    grid = sd64.grid(ScheduleSpec("ddim", steps), x0.shape)
    den = sd64.denoiser()
    result = ddim.invert(den, x0, grid, sd64.encode_prompts([SOURCE], 1.0))
    source = sd64.encode_prompts([SOURCE], guidance, [""])
    target = sd64.encode_prompts([TARGET], guidance, [""])
    null = sd64.encode_prompts([""], 1.0).positive["prompt_embeds"]
    x_stars, ref = _official(sd64, x0, source.positive["prompt_embeds"], target.positive["prompt_embeds"],
                             null, guidance, steps, add_target)
    for ours_z, ref_z in zip(result.trajectory, x_stars):
        _close(ours_z, ref_z)
    counting = CountingDenoiser(den)
    src_out, tgt_out = di.direct_inversion_pair(counting, result, grid, source, target, target_offset=add_target)
    _close(src_out, ref[:1])
    _close(tgt_out, ref[1:])
    per_call = 2 if guidance != 1.0 else 1
    assert counting.counter.forward == steps * per_call * (2 if add_target else 1)
    edited = di.edit(sd64, result, grid, source, target, denoiser=den, x0=x0, target_offset=add_target)
    torch.testing.assert_close(edited, tgt_out, rtol=0, atol=0)


def test_source_as_target_returns_x0_after_inexact_inverters(sd64):
    x0 = _x0(sd64.latent_shape(1))
    grid = sd64.grid(ScheduleSpec("ddim", 4), x0.shape)
    den = sd64.denoiser()
    cond = sd64.encode_prompts([SOURCE], 7.5, [""])
    for result in (ddim.invert(den, x0, grid, sd64.encode_prompts([SOURCE], 1.0)),
                   negative_prompt.invert(den, x0, grid, cond)):
        recon = reconstruct(den, result, grid, cond)
        assert (recon - x0).abs().max() > 1e-3  # the inverter alone does not reconstruct
        src_out, tgt_out = di.direct_inversion_pair(den, result, grid, cond, cond)
        assert torch.equal(src_out, x0)  # the source branch: the trajectory, ending on x0
        _close(tgt_out, recon, EXACT)  # the PIE-Bench edit with the source prompt: the reconstruction
        edited = di.edit(sd64, result, grid, cond, cond, denoiser=den, x0=x0, target_offset=True)
        _close(edited, x0, EXACT)


@pytest.mark.parametrize("grid", [vp_grid(6), flow_grid(6, shift=3.0)], ids=["vp", "flow"])
def test_toy_any_trajectory_source_as_target(grid):
    """On the analytic denoiser, with a trajectory no sampler would reconstruct (random latents)."""
    den = GaussianDenoiser(mean=0.2, std=0.7)
    x0 = torch.linspace(-2, 2, 8, dtype=F64).reshape(2, 4)
    gen = torch.Generator().manual_seed(0)
    traj = (x0,) + tuple(torch.randn(2, 4, generator=gen, dtype=F64) for _ in range(grid.num_steps))
    result = InversionResult(z=traj[-1], trajectory=traj, steps=())
    cond = Conditioning({"shift": torch.full((1, 1), 0.5, dtype=F64)})
    other = Conditioning({"shift": torch.full((1, 1), -1.0, dtype=F64)})
    src_out, tgt_out = di.direct_inversion_pair(den, result, grid, cond, other)
    assert torch.equal(src_out, x0)
    _close(tgt_out, prompt_swap(den, result, grid, other), EXACT)
    _close(di.edit(None, result, grid, cond, cond, denoiser=den, x0=x0, target_offset=True), x0, EXACT)
    assert (prompt_swap(den, result, grid, cond) - x0).abs().max() > 0.1


def test_without_attention_the_edit_is_prompt_swap(sd64):
    x0 = _x0(sd64.latent_shape(1), seed=8)
    grid = sd64.grid(ScheduleSpec("ddim", 5), x0.shape)
    den = sd64.denoiser()
    result = ddim.invert(den, x0, grid, sd64.encode_prompts([SOURCE], 1.0))
    source, target = (sd64.encode_prompts([p], 7.5, [""]) for p in (SOURCE, TARGET))
    edited = di.edit(sd64, result, grid, source, target, denoiser=den, x0=x0)
    _close(edited, prompt_swap(den, result, grid, target), EXACT)


def test_flux_stacks_its_shared_ids(tiny_flux_adapter):
    """Flux's ``txt_ids`` are not per-sample: the stacked pair keeps them once (float32, 3 flow steps)."""
    adapter = tiny_flux_adapter
    x0 = torch.randn(adapter.latent_shape(1), generator=torch.Generator().manual_seed(1))
    grid = adapter.grid(ScheduleSpec("flow_euler", 3), x0.shape)
    den = adapter.denoiser()
    source, target = (adapter.encode_prompts([p], 1.0) for p in (SOURCE, TARGET))
    result = ddim.invert(den, x0, grid, source)
    _close(di.edit(adapter, result, grid, source, target, denoiser=den, x0=x0),
           prompt_swap(den, result, grid, target), 1e-5)
    _close(di.edit(adapter, result, grid, source, source, denoiser=den, x0=x0, target_offset=True), x0, 1e-5)


def test_attention_hook_sees_the_stacked_pair():
    grid, den = vp_grid(3), GaussianDenoiser()
    x0 = torch.zeros(2, 3, dtype=F64)
    result = ddim.invert(den, x0, grid, Conditioning({}))
    seen, entered = [], []

    @contextlib.contextmanager
    def hook(inner):
        entered.append(True)

        def spy(z, level, cond):
            seen.append(z.shape[0])
            return inner(z, level, cond)
        yield spy
        entered.append(False)

    di.edit(None, result, grid, Conditioning({}), Conditioning({}), denoiser=den, x0=x0, attention=hook)
    assert entered == [True, False] and seen == [4, 4, 4]


def test_p2p_hook_runs(tiny_sd_adapter):
    from gnri.edit.p2p import make_controller

    adapter = tiny_sd_adapter
    x0 = torch.randn(adapter.latent_shape(1), generator=torch.Generator().manual_seed(2))
    grid = adapter.grid(ScheduleSpec("ddim", 4), x0.shape)
    den = adapter.denoiser()
    result = ddim.invert(den, x0, grid, adapter.encode_prompts([SOURCE], 1.0))
    source, target = (adapter.encode_prompts([p], 7.5, [""]) for p in (SOURCE, TARGET))
    controller = make_controller(adapter.prompt_tokenizer(), [SOURCE], [TARGET], grid.num_steps)
    hook = di.p2p_attention(adapter, grid, controller)
    src_out, tgt_out = di.direct_inversion_pair(den, result, grid, source, target, attention=hook)
    assert controller.edits > 0 and torch.equal(src_out, x0)
    plain = di.edit(adapter, result, grid, source, target, denoiser=den, x0=x0)
    assert (tgt_out - plain).abs().max() > 0  # the source branch now reaches the target through attention


def test_refusals():
    grid, den, x0 = vp_grid(3), GaussianDenoiser(), torch.zeros(1, 2, dtype=F64)
    cond = Conditioning({})
    good = ddim.invert(den, x0, grid, cond)
    own = InversionResult(z=good.z, trajectory=good.trajectory, steps=(), sampler=lambda *a: a[-1])
    derived = InversionResult(z=good.z, trajectory=(), steps=())
    for result, kw in ((own, {}), (derived, {}), (good, {"strength": 0.5})):
        with pytest.raises(ValueError):
            di.edit(None, result, grid, cond, cond, denoiser=den, x0=x0, **kw)
