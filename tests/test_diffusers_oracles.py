"""Oracles against diffusers itself on the tiny pipelines (the foundation issue's oracles 2 and 3).

(2) ``gnri.core.sample`` on the adapters' grids reproduces diffusers' own pipelines from the
same initial latent: DDIMScheduler (eta 0, eps and v, with and without CFG, leading and
trailing spacing) on SD, EulerDiscreteScheduler and EulerAncestralDiscreteScheduler (trailing)
on SDXL, FlowMatchEulerDiscreteScheduler on Flux (dynamic and static shift, guidance embedding,
true CFG). Ancestral: diffusers draws its step noises from the ``generator`` we pass it, seeded
with ``noise_seed``; the grid's stored list holds the same draws, so no noise is injected by hand.
(3) DDIM inversion (``baselines/ddim.py``, ``timestep="dst"``) equals a manual loop of
DDIMInverseScheduler.step on the same UNet, eps and v, with and without CFG.

Everything runs in float64 so that the tolerance tests the formulas, not float32 rounding;
diffusers still rounds some coefficients (and the Euler step) to float32, hence
``max|ours - diffusers| <= 1e-5 * max(1, max|diffusers|)``.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMInverseScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

from baselines import ddim
from gnri.core import sample
from gnri.models import ScheduleSpec
from gnri.models.tiny import tiny_adapter

TOL = 1e-5
PROMPTS = ["a photo of a cat", "a red house"]
F64 = torch.float64


def assert_matches(ours: torch.Tensor, ref: torch.Tensor) -> None:
    err = (ours - ref).abs().max().item()
    assert err <= TOL * max(1.0, ref.abs().max().item()), err


def _noise(shape: tuple[int, ...], seed: int = 3) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _with_scheduler(pipe, scheduler):
    """A pipeline sharing ``pipe``'s modules with another scheduler."""
    other = type(pipe)(**{**pipe.components, "scheduler": scheduler})
    other.set_progress_bar_config(disable=True)
    return other


@pytest.fixture(scope="module")
def sd64():
    return {pt: tiny_adapter("sd", prediction_type=pt, dtype=F64) for pt in ("epsilon", "v_prediction")}


@pytest.fixture(scope="module")
def sdxl64():
    return tiny_adapter("sdxl", dtype=F64)


# --- (2) sampling ---------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("guidance,spacing", [(1.0, "leading"), (7.5, "leading"), (3.0, "trailing")])
def test_ddim_sampling_matches_ddim_scheduler(sd64, prediction_type, guidance, spacing):
    adapter = sd64[prediction_type]
    z = _noise(adapter.latent_shape(2))
    cond = adapter.encode_prompts(PROMPTS, guidance)
    grid = adapter.grid(ScheduleSpec("ddim", 10, spacing), z.shape)
    with torch.no_grad():
        ours = sample(adapter.denoiser(), z, grid, cond)
    sched = type(adapter.pipe.scheduler).from_config(adapter.pipe.scheduler.config, timestep_spacing=spacing)
    assert not sched.config.clip_sample  # the tiny config, as SD 1.5's
    negative = None if cond.negative is None else cond.negative["prompt_embeds"]
    ref = _with_scheduler(adapter.pipe, sched)(
        prompt_embeds=cond.positive["prompt_embeds"], negative_prompt_embeds=negative, latents=z.clone(),
        num_inference_steps=10, guidance_scale=guidance, eta=0.0, output_type="latent",
    ).images
    assert_matches(ours, ref)


def _sdxl_reference(adapter, scheduler, z, cond, guidance: float, seed: int | None = None):
    """SDXL pipeline output from our VP latent ``z``: diffusers multiplies the given latents by
    ``init_noise_sigma`` (sigma_max for trailing spacing), its VE start is ``z sqrt(1+sigma_max^2)``."""
    scheduler.set_timesteps(4)
    sigma_max = float(scheduler.sigmas[0])
    latents = z * (1 + sigma_max**2) ** 0.5 / float(scheduler.init_noise_sigma)
    kw = {}
    if cond.negative is not None:
        kw = {"negative_prompt_embeds": cond.negative["prompt_embeds"],
              "negative_pooled_prompt_embeds": cond.negative["text_embeds"]}
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return _with_scheduler(adapter.pipe, scheduler)(
        prompt_embeds=cond.positive["prompt_embeds"], pooled_prompt_embeds=cond.positive["text_embeds"], **kw,
        latents=latents, num_inference_steps=4, guidance_scale=guidance, output_type="latent", generator=generator,
    ).images


@pytest.mark.parametrize("guidance", [0.0, 5.0])
def test_euler_trailing_matches_euler_scheduler(sdxl64, guidance):
    """SDXL-Turbo's setting: EulerDiscreteScheduler, trailing, VE latents <-> our VP latents."""
    z = _noise(sdxl64.latent_shape(2))
    cond = sdxl64.encode_prompts(PROMPTS, guidance)
    grid = sdxl64.grid(ScheduleSpec("euler", 4, "trailing"), z.shape)
    with torch.no_grad():
        ours = sample(sdxl64.denoiser(), z, grid, cond)
    sched = EulerDiscreteScheduler.from_config(sdxl64.pipe.scheduler.config, timestep_spacing="trailing")
    assert_matches(ours, _sdxl_reference(sdxl64, sched, z, cond, guidance))  # final sigma 0: VE == VP


def test_euler_ancestral_with_stored_noise_matches_scheduler(sdxl64):
    """The stored noise list equals what EulerAncestralDiscreteScheduler draws from a generator
    seeded with ``noise_seed``: the deterministic ancestral sampler is diffusers' own sampler."""
    z = _noise(sdxl64.latent_shape(1))
    cond = sdxl64.encode_prompts(PROMPTS[:1], 0.0)
    spec = ScheduleSpec("euler_ancestral", 4, "trailing", noise_seed=7865)
    grid = sdxl64.grid(spec, z.shape)
    with torch.no_grad():
        ours = sample(sdxl64.denoiser(), z, grid, cond)
        deterministic = sample(sdxl64.denoiser(), z, grid.with_noises(None), cond)
    sched = EulerAncestralDiscreteScheduler.from_config(sdxl64.pipe.scheduler.config, timestep_spacing="trailing")
    ref = _sdxl_reference(sdxl64, sched, z, cond, 0.0, seed=spec.noise_seed)
    assert_matches(ours, ref)
    assert (ours - deterministic).abs().max() > 1e-3  # the noise mattered


@pytest.mark.parametrize("variant", ["dev", "schnell"])
@pytest.mark.parametrize("true_cfg", [1.0, 4.0])
def test_flow_sampling_matches_flow_match_euler(variant, true_cfg):
    """FluxPipeline (packed latents, ids, mu/shift, guidance embedding) vs the shared sampler."""
    dev = variant == "dev"
    from gnri.models import load_adapter
    from gnri.models.tiny import tiny_flux_pipeline

    adapter = load_adapter("flux", tiny_flux_pipeline(guidance_embeds=dev, dynamic_shift=dev), dtype=F64)
    z = _noise(adapter.latent_shape(2))
    cond = adapter.encode_prompts(PROMPTS, 3.5 if dev else 1.0, true_cfg_scale=true_cfg)  # schnell: no embedding
    grid = adapter.grid(ScheduleSpec("flow_euler", 4), z.shape)
    with torch.no_grad():
        ours = sample(adapter.denoiser(), z, grid, cond)
    kw = {}
    if cond.negative is not None:
        kw = {"negative_prompt_embeds": cond.negative["prompt_embeds"],
              "negative_pooled_prompt_embeds": cond.negative["pooled_prompt_embeds"], "true_cfg_scale": true_cfg}
    ref = adapter.pipe(
        prompt_embeds=cond.positive["prompt_embeds"], pooled_prompt_embeds=cond.positive["pooled_prompt_embeds"],
        **kw, latents=z.clone(), num_inference_steps=4, guidance_scale=3.5, height=32, width=32,
        output_type="latent",
    ).images
    assert ref.shape == z.shape  # packed (B, L, 4C)
    assert_matches(ours, ref)


# --- (3) DDIM inversion vs DDIMInverseScheduler ----------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_ddim_inversion_matches_ddim_inverse_scheduler(sd64, prediction_type, guidance):
    adapter = sd64[prediction_type]
    cond = adapter.encode_prompts(PROMPTS, guidance)
    with torch.no_grad():
        x0 = adapter.encode_images(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=F64))
        grid = adapter.grid(ScheduleSpec("ddim", 10), x0.shape)
        result = ddim.invert(adapter.denoiser(), x0, grid, cond)
        inverse = DDIMInverseScheduler.from_config(adapter.pipe.scheduler.config)
        inverse.set_timesteps(10)
        x, trajectory = x0.clone(), [x0]
        for t in inverse.timesteps:
            if cond.negative is None:
                out = adapter.pipe.unet(x, t, encoder_hidden_states=cond.positive["prompt_embeds"]).sample
            else:
                emb = torch.cat([cond.negative["prompt_embeds"], cond.positive["prompt_embeds"]])
                uncond, text = adapter.pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample.chunk(2)
                out = uncond + guidance * (text - uncond)
            x = inverse.step(out, t, x).prev_sample
            trajectory.append(x)
    assert [lv.t for lv in grid.levels[1:]] == [float(t) for t in inverse.timesteps]
    for ours, ref in zip(result.trajectory, trajectory, strict=True):
        assert_matches(ours, ref)
