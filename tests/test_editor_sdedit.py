"""Oracles for SDEdit (:mod:`gnri.edit.sdedit`).

(1) A by-hand transcription of diffusers' ``StableDiffusionImg2ImgPipeline`` loop (``get_timesteps``'
``init_timestep`` rule, ``DDIMScheduler.add_noise``, ``DDIMScheduler.step`` with eta 0 on the UNet's
classifier-free-guided eps), sharing no code with the module, equals the editor on the tiny SD model
in float64 at 4 and 10 steps, with and without guidance; so does the diffusers pipeline itself, given
the latent as its 4-channel ``image``. (2) The step-count rule is diffusers' own ``get_timesteps``
(SD and Flux img2img) for many (steps, strength). (3) strength 1 starts from pure noise on a flow
grid (the output does not depend on the source); strength below 1/steps returns the source with no
network call, and with the source's own distribution the edit tends to the source as the strength
goes to 0. (4) A batch edits as its samples one at a time.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux_img2img import FluxImg2ImgPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import StableDiffusionImg2ImgPipeline

from gnri.core import Conditioning, CountingDenoiser, InversionResult
from gnri.edit import sdedit
from gnri.models import ScheduleSpec
from gnri.models.tiny import tiny_adapter
from gnri.toy import GaussianDenoiser, ZeroVelocityDenoiser, flow_grid, vp_grid

F64 = torch.float64
TOL = 1e-5  # relative, as tests/test_diffusers_oracles.py: diffusers keeps some coefficients in float32
SOURCE, TARGET = "a photo of a cat", "a photo of a dog"
SEED = 11


@pytest.fixture(scope="module")
def sd64():
    return tiny_adapter("sd", dtype=F64)


def _x0(shape, seed=5):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _unused_result(x0):
    return InversionResult(z=x0, trajectory=(), steps=())  # SDEdit ignores the inversion


def _assert_close(ours, ref):
    err = (ours - ref).abs().max().item()
    assert err <= TOL * max(1.0, ref.abs().max().item()), err


def _img2img_by_hand(adapter, x0, prompt_embeds, negative_embeds, guidance, steps, strength, seed):
    """diffusers' img2img loop written out: timesteps, add_noise, DDIM steps (eta 0) on the raw UNet."""
    sched = DDIMScheduler.from_config(adapter.pipe.scheduler.config)
    sched.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = sched.timesteps[t_start:]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=x0.dtype)
    z = sched.add_noise(x0, noise, timesteps[:1])
    cfg = guidance != 1.0
    context = torch.cat([negative_embeds, prompt_embeds]) if cfg else prompt_embeds
    unet = adapter.pipe.unet
    with torch.no_grad():
        for t in timesteps:
            inp = torch.cat([z, z]) if cfg else z
            eps = unet(inp, t, encoder_hidden_states=context).sample
            if cfg:
                uncond, text = eps.chunk(2)
                eps = uncond + guidance * (text - uncond)
            z = sched.step(eps, t, z, eta=0.0).prev_sample
    return z


@pytest.mark.parametrize("steps,strength,guidance", [(4, 0.5, 1.0), (4, 0.8, 7.5), (10, 0.7, 7.5), (10, 0.3, 1.0)])
def test_matches_img2img_loop_by_hand(sd64, steps, strength, guidance):
    x0 = _x0(sd64.latent_shape(1))
    cond = sd64.encode_prompts([TARGET], guidance)
    grid = sd64.grid(ScheduleSpec("ddim", steps), x0.shape)
    counting = CountingDenoiser(sd64.denoiser())
    ours = sdedit.edit(sd64, _unused_result(x0), grid, sd64.encode_prompts([SOURCE], guidance), cond,
                       denoiser=counting, x0=x0, strength=strength, seed=SEED)
    negative = None if cond.negative is None else cond.negative["prompt_embeds"]
    ref = _img2img_by_hand(sd64, x0, cond.positive["prompt_embeds"], negative, guidance, steps, strength, SEED)
    _assert_close(ours, ref)
    assert counting.counter.forward == min(int(steps * strength), steps) * (2 if guidance != 1.0 else 1)


@pytest.mark.parametrize("strength,guidance", [(0.6, 7.5), (1.0, 1.0)])
def test_matches_diffusers_img2img_pipeline(sd64, strength, guidance):
    """The pipeline itself, fed the latent as its ``image`` (4 channels: used as is) and a seeded generator."""
    steps = 5
    x0 = _x0(sd64.latent_shape(1))
    cond = sd64.encode_prompts([TARGET], guidance)
    grid = sd64.grid(ScheduleSpec("ddim", steps), x0.shape)
    ours = sdedit.edit(sd64, _unused_result(x0), grid, cond, cond, denoiser=sd64.denoiser(), x0=x0,
                       strength=strength, seed=SEED)
    components = {**sd64.pipe.components, "scheduler": DDIMScheduler.from_config(sd64.pipe.scheduler.config)}
    pipe = StableDiffusionImg2ImgPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    negative = None if cond.negative is None else cond.negative["prompt_embeds"]
    ref = pipe(prompt_embeds=cond.positive["prompt_embeds"], negative_prompt_embeds=negative, image=x0.clone(),
               strength=strength, num_inference_steps=steps, guidance_scale=guidance, eta=0.0,
               generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    _assert_close(ours, ref)


@pytest.mark.parametrize("steps", [1, 3, 4, 7, 10, 50, 100])
@pytest.mark.parametrize("strength", [0.01, 0.1, 0.25, 0.29, 0.3, 0.5, 0.6, 0.7, 0.75, 0.99, 1.0])
def test_step_count_is_diffusers_rule(steps, strength):
    sched = DDIMScheduler(steps_offset=1)
    sched.set_timesteps(steps)
    _, sd_k = StableDiffusionImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=sched), steps, strength, "cpu")
    assert sdedit.denoising_steps(steps, strength, "vp") == sd_k
    flow = FlowMatchEulerDiscreteScheduler()
    flow.set_timesteps(steps)
    _, flux_k = FluxImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=flow), steps, strength, "cpu")
    assert sdedit.denoising_steps(steps, strength, "flow") == flux_k


def test_strength_one_starts_from_pure_noise():
    """On a flow grid the noisiest level is pure noise (a = 0): the edit forgets the source."""
    grid = flow_grid(6)
    assert grid.levels[-1].a == 0.0
    den, cond = GaussianDenoiser(mean=0.3, std=0.5), Conditioning({})
    a, b = torch.zeros(2, 3, dtype=F64), torch.full((2, 3), 4.0, dtype=F64)
    out_a = sdedit.edit(None, _unused_result(a), grid, cond, cond, denoiser=den, x0=a, strength=1.0, seed=3)
    out_b = sdedit.edit(None, _unused_result(b), grid, cond, cond, denoiser=den, x0=b, strength=1.0, seed=3)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-12)
    assert (out_a - a).abs().max() > 0.1  # and it is a sample, not the source
    zero = sdedit.edit(None, _unused_result(a), grid, cond, cond, denoiser=ZeroVelocityDenoiser(), x0=a, strength=1.0)
    torch.testing.assert_close(zero, sdedit.seeded_noise(a, 0), rtol=0, atol=1e-12)  # v = 0 keeps the noise


def test_strength_to_zero_returns_the_source(sd64):
    x0 = _x0(sd64.latent_shape(1))
    cond = sd64.encode_prompts([SOURCE], 1.0)
    grid = sd64.grid(ScheduleSpec("ddim", 10), x0.shape)
    counting = CountingDenoiser(sd64.denoiser())
    out = sdedit.edit(sd64, _unused_result(x0), grid, cond, cond, denoiser=counting, x0=x0, strength=0.09)
    assert torch.equal(out, x0) and counting.counter.forward == 0  # int(10 * 0.09) == 0 steps
    # With the source's own distribution (the exact posterior of a point mass at x0), the edit tends to x0.
    src = torch.linspace(-1.0, 1.0, 6, dtype=F64).reshape(1, 6)
    den, toy = GaussianDenoiser(mean=src, std=1e-3), vp_grid(100)
    errors = [(sdedit.edit(None, _unused_result(src), toy, Conditioning({}), Conditioning({}), denoiser=den,
                           x0=src, strength=s, seed=1) - src).abs().max().item() for s in (0.8, 0.4, 0.1, 0.02)]
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:])) and errors[-1] < 1e-3, errors


def test_batch_equals_one_at_a_time(sd64):
    x0 = _x0(sd64.latent_shape(2))
    cond = sd64.encode_prompts([TARGET, TARGET], 7.5)
    grid = sd64.grid(ScheduleSpec("ddim", 4), x0.shape)
    both = sdedit.edit(sd64, _unused_result(x0), grid, cond, cond, denoiser=sd64.denoiser(), x0=x0, strength=0.75)
    one = sd64.encode_prompts([TARGET], 7.5)
    for i in range(2):
        alone = sdedit.edit(sd64, _unused_result(x0[i:i + 1]), grid, one, one, denoiser=sd64.denoiser(),
                            x0=x0[i:i + 1], strength=0.75)
        _assert_close(both[i:i + 1], alone)


def test_bad_options():
    grid, cond, x0 = vp_grid(4), Conditioning({}), torch.zeros(1, 2)
    for kw in ({"strength": 0.0}, {"strength": 1.5}, {"strenght": 0.5}, {"noise": torch.zeros(2, 2)}):
        with pytest.raises(ValueError):
            sdedit.edit(None, _unused_result(x0), grid, cond, cond, denoiser=GaussianDenoiser(), x0=x0, **kw)


def test_x0_none_falls_back_to_the_trajectory():
    grid, cond, den = vp_grid(4), Conditioning({}), GaussianDenoiser(mean=0.1)
    x0 = torch.linspace(-1, 1, 4, dtype=F64).reshape(1, 4)
    with_traj = InversionResult(z=x0, trajectory=(x0,) * 5, steps=())
    given = sdedit.edit(None, with_traj, grid, cond, cond, denoiser=den, x0=x0, strength=0.5)
    torch.testing.assert_close(sdedit.edit(None, with_traj, grid, cond, cond, denoiser=den, x0=None, strength=0.5),
                               given, rtol=0, atol=0)
    with pytest.raises(ValueError):
        sdedit.edit(None, _unused_result(x0), grid, cond, cond, denoiser=den, x0=None)
