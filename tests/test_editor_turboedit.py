"""TurboEdit (gnri.edit.turboedit) against a by-hand transcription of ``GiilDe/turbo-edit`` on tiny models.

The oracle shares no code with the module: ``create_xts`` (noise timesteps shifted by
``noise_shift_delta * (t_0 - t_1)``, one ``randn`` draw, ``add_noise`` on ``alphas_cumprod``),
``deterministic_ddpm_step`` (the DDPM posterior mean from ``alphas_cumprod``), ``normalize`` and
the batch-of-3 ``step_save_latents`` / ``step_use_latents`` of ``utils.py``, on the raw UNet.
"""

from __future__ import annotations

import pytest
import torch

from gnri.core import Grid, InversionResult, Level
from gnri.edit.turboedit import edit
from gnri.models.base import AdapterDefaults, ScheduleSpec

OFFICIAL = ScheduleSpec("euler", 5, "trailing", strength=0.8)  # timesteps 799, 599, 399, 199


def _x0(seed: int = 5) -> torch.Tensor:
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def official_turboedit(ad, timesteps, x_0, e_src, e_tgt, w1, seed, max_norm_zs, noise_shift_delta=1):
    """main.py ``run`` + utils.py, by hand (no classifier-free guidance, as ``guidance_scale=0``)."""
    abar = ad.pipe.scheduler.alphas_cumprod.double()
    unet = ad.pipe.unet
    generator = torch.Generator(device="cpu").manual_seed(seed)
    # create_xts
    noising_delta = noise_shift_delta * (timesteps[0] - timesteps[1])
    noise_timesteps = [t - int(noising_delta) for t in timesteps]
    first_x_0_idx = len(noise_timesteps)
    for i in range(len(noise_timesteps)):
        if noise_timesteps[i] <= 0:
            first_x_0_idx = i
            break
    noise_timesteps = noise_timesteps[:first_x_0_idx]
    x_0_expanded = x_0.expand(len(noise_timesteps), -1, -1, -1)
    noise = torch.randn(x_0_expanded.size(), generator=generator, device="cpu")
    x_ts = [(abar[t] ** 0.5 * x_0_expanded[i] + (1 - abar[t]) ** 0.5 * noise[i]).float().unsqueeze(0)
            for i, t in enumerate(noise_timesteps)]
    x_ts += [x_0] * (len(timesteps) - first_x_0_idx) + [x_0]

    def ddpm_mean(eps, t, prev_t, sample):
        ab_t = abar[t]
        ab_prev = abar[prev_t] if prev_t >= 0 else torch.tensor(1.0, dtype=torch.float64)
        beta_t, beta_prev = 1 - ab_t, 1 - ab_prev
        cur_alpha = ab_t / ab_prev
        cur_beta = 1 - cur_alpha
        x0_pred = (sample - beta_t**0.5 * eps) / ab_t**0.5
        return ((ab_prev**0.5 * cur_beta) / beta_t * x0_pred + cur_alpha**0.5 * beta_prev / beta_t * sample).float()

    def normalize(z, i):
        max_norm = max_norm_zs[i]
        if max_norm < 0:
            return z, 1
        norm = torch.norm(z)
        if norm < max_norm:
            return z, 1
        coeff = max_norm / norm
        return z * coeff, coeff

    coeffs = []
    latent = x_ts[0].expand(3, -1, -1, -1)
    emb = torch.cat([e_src, e_src, e_tgt])
    for idx, t in enumerate(timesteps):
        prev_t = timesteps[idx + 1] if idx + 1 < len(timesteps) else -1
        model_output = unet(latent, t, encoder_hidden_states=emb).sample
        # step_save_latents (row 0)
        u_hat_t = ddpm_mean(model_output[:1], t, prev_t, latent[:1])
        z_t = x_ts[idx + 1] - u_hat_t
        _, nc = normalize(z_t, idx)
        coeffs.append(float(nc))
        # step_use_latents (rows 1, 2)
        x_t_hat_c_hat = ddpm_mean(model_output[1:], t, prev_t, latent[1:])
        x_t_minus_1_exact = x_ts[idx + 1].expand_as(x_t_hat_c_hat)
        x_t_c = u_hat_t[0].expand_as(x_t_hat_c_hat)
        x_t_hat_c = torch.zeros_like(x_t_hat_c_hat)
        x_t_hat_c[1:2] = x_t_hat_c_hat[0:1]
        cross_prompt_term = x_t_hat_c_hat - x_t_hat_c
        cross_trajectory_term = x_t_hat_c - nc * x_t_c
        x_t_minus_1_hat = nc * x_t_minus_1_exact + cross_trajectory_term + w1 * cross_prompt_term
        x_t_minus_1_hat[0:1] = x_t_minus_1_hat[1:2]
        # row 0 continues on mu + normalize(z) (= x_ts[idx + 1] up to round-off)
        latent = torch.cat([x_ts[idx + 1], x_t_minus_1_hat])
    return latent[2:], coeffs


@pytest.mark.parametrize("max_norm_zs", [None, (-1.0, -1.0, -1.0, 0.5)])
def test_turboedit_equals_official_transcription(tiny_sd_adapter, max_norm_zs):
    ad = tiny_sd_adapter
    x0 = _x0()
    grid = ad.grid(OFFICIAL, x0.shape)
    timesteps = [int(lv.t) for lv in reversed(grid.levels[1:])]
    assert timesteps == [799, 599, 399, 199]
    src = ad.encode_prompts(["a photo of a red cat"], 1.0)
    tgt = ad.encode_prompts(["a painting of a blue dog"], 1.0)
    norms = max_norm_zs or (-1.0,) * 4
    with torch.no_grad():
        ref, coeffs = official_turboedit(ad, timesteps, x0, src.positive["prompt_embeds"],
                                         tgt.positive["prompt_embeds"], 1.5, 2, norms)
        out = edit(ad, InversionResult(z=x0, trajectory=(), steps=()), grid, src, tgt, denoiser=ad.denoiser(),
                   x0=x0, max_norm_zs=max_norm_zs)
    if max_norm_zs is not None:
        assert coeffs[-1] < 1  # the clipping is exercised
    assert (out - x0).abs().max() > 1e-2  # an edit, not the source
    torch.testing.assert_close(out, ref, atol=5e-5, rtol=1e-5)


def test_turboedit_same_prompt_returns_x0_exactly(tiny_sd_adapter, tiny_sdxl_adapter):
    for ad, spec in ((tiny_sd_adapter, OFFICIAL), (tiny_sdxl_adapter, ScheduleSpec("euler_ancestral", 4, "trailing"))):
        x0 = _x0(7)
        grid = ad.grid(spec, x0.shape)
        src = ad.encode_prompts(["a photo of a red cat"], 1.0)
        with torch.no_grad():
            out = edit(ad, InversionResult(z=x0, trajectory=(), steps=()), grid, src, src, denoiser=ad.denoiser(),
                       x0=x0, w=1.5)
        assert torch.equal(out, x0), ad.name


def test_turboedit_refusals():
    class FlowLike(AdapterDefaults):
        name, family = "flow_like", "flow"

    flow = Grid((Level(0.0, 1.0, 0.0), Level(1.0, 0.0, 1.0)), family="flow")
    result = InversionResult(z=torch.zeros(1, 4, 2, 2), trajectory=(), steps=())
    with pytest.raises(ValueError, match="turboedit: needs a VP"):
        edit(FlowLike(), result, flow, None, None, denoiser=None, x0=torch.zeros(1, 4, 2, 2))  # type: ignore[arg-type]
    vp = Grid((Level(0.0, 1.0, 0.0), Level(999.0, 0.07, 0.99)))
    with pytest.raises(ValueError, match="needs the source's clean latent"):
        edit(FlowLike(), result, vp, None, None, denoiser=None, x0=None)  # type: ignore[arg-type]
