"""Plug-and-Play (gnri.edit.pnp) against a by-hand transcription of the official loop on the tiny SD UNet.

The oracle shares no code with the module: it replaces the forward of the resnet and of the
self-attention layers as ``cure-lab/PnPInversion`` ``run_editing_pnp.py`` does
(``register_conv_control_efficient`` / ``register_attention_control_efficient``, rows
``[source, target]`` without guidance instead of the code's ``[source, uncond, cond]``), and steps
with the DDIM formulas of its ``ddim_sample`` on the scheduler's ``alphas_cumprod``.
"""

from __future__ import annotations

import pytest
import torch

from gnri.core import Grid, InversionResult, Level
from gnri.edit import prompt_swap
from gnri.edit.edit import stack_pair
from gnri.edit.pnp import edit, pnp_sample
from gnri.models.base import AdapterDefaults, ScheduleSpec

STEPS = 5


@pytest.fixture(scope="module")
def setup(tiny_sd_adapter):
    ad = tiny_sd_adapter
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(1, 4, 16, 16, generator=gen)
    grid = ad.grid(ScheduleSpec("ddim", STEPS), z.shape)
    result = InversionResult(z=z, trajectory=(), steps=())
    src = ad.encode_prompts(["a photo of a red cat"], 1.0)
    tgt = ad.encode_prompts(["a painting of a blue dog"], 1.0)
    return ad, grid, result, src, tgt


def official_pnp(ad, grid, z, e_src, e_tgt, f_frac, a_frac, feat, attns):
    """The official PnP sample loop, by hand (rows [source, target], no CFG)."""
    unet = ad.pipe.unet
    n = grid.num_steps
    timesteps = [int(lv.t) for lv in reversed(grid.levels[1:])]  # noisy -> clean, as scheduler.timesteps
    conv_t, qk_t = timesteps[: int(n * f_frac)], timesteps[: int(n * a_frac)]
    clock = {"t": None}
    abar = ad.pipe.scheduler.alphas_cumprod.double()

    def conv_forward(self):
        def forward(input_tensor, temb, *args, **kwargs):
            hidden_states = self.nonlinearity(self.norm1(input_tensor))
            if self.upsample is not None:
                input_tensor, hidden_states = self.upsample(input_tensor), self.upsample(hidden_states)
            elif self.downsample is not None:
                input_tensor, hidden_states = self.downsample(input_tensor), self.downsample(hidden_states)
            hidden_states = self.conv1(hidden_states)
            temb = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
            hidden_states = self.norm2(hidden_states + temb)
            hidden_states = self.conv2(self.dropout(self.nonlinearity(hidden_states)))
            if clock["t"] in conv_t:
                sb = hidden_states.shape[0] // 2
                hidden_states[sb:] = hidden_states[:sb]
            if self.conv_shortcut is not None:
                input_tensor = self.conv_shortcut(input_tensor)
            return (input_tensor + hidden_states) / self.output_scale_factor
        return forward

    def sa_forward(self):
        def forward(x, encoder_hidden_states=None, attention_mask=None, **kwargs):
            assert encoder_hidden_states is None
            q, k = self.to_q(x), self.to_k(x)
            if clock["t"] in qk_t:
                sb = q.shape[0] // 2
                q[sb:] = q[:sb]
                k[sb:] = k[:sb]
            q, k = self.head_to_batch_dim(q), self.head_to_batch_dim(k)
            v = self.head_to_batch_dim(self.to_v(x))
            sim = torch.einsum("b i d, b j d -> b i j", q, k) * self.scale
            out = torch.einsum("b i j, b j d -> b i d", sim.softmax(dim=-1), v)
            return self.to_out[0](self.batch_to_head_dim(out))
        return forward

    modules = dict(unet.named_modules())
    patched = [modules[feat]] + [modules[a] for a in attns]
    modules[feat].forward = conv_forward(modules[feat])
    for a in attns:
        modules[a].forward = sa_forward(modules[a])
    try:
        x = torch.cat([z, z])
        emb = torch.cat([e_src, e_tgt])
        for i, t in enumerate(timesteps):
            clock["t"] = t
            eps = unet(x, t, encoder_hidden_states=emb).sample
            prev = timesteps[i + 1] if i + 1 < n else None
            ab = abar[t]
            ab_prev = abar[prev] if prev is not None else grid.levels[0].a ** 2  # SD: final_alpha_cumprod
            mu, sigma, mu_prev, sigma_prev = ab**0.5, (1 - ab) ** 0.5, ab_prev**0.5, (1 - ab_prev) ** 0.5
            pred_x0 = (x - sigma * eps) / mu
            x = (mu_prev * pred_x0 + sigma_prev * eps).float()
    finally:
        for m in patched:
            del m.forward
    return x[:1], x[1:]


@pytest.mark.parametrize("f_frac,a_frac", [(0.8, 0.5), (0.0, 1.0)])
def test_pnp_equals_official_transcription(setup, f_frac, a_frac):
    ad, grid, result, src, tgt = setup
    feat = "up_blocks.1.resnets.1"  # the official layer; the tiny UNet has it
    attns = ["up_blocks.0.attentions.1.transformer_blocks.0.attn1"]  # the rule: every decoder attn1 but the first
    with torch.no_grad():
        s_ref, t_ref = official_pnp(ad, grid, result.z, src.positive["prompt_embeds"], tgt.positive["prompt_embeds"],
                                    f_frac, a_frac, feat, attns)
        s, t = pnp_sample(ad, result, grid, src, tgt, denoiser=ad.denoiser(), feature_steps=f_frac,
                          attention_steps=a_frac)
        swap = prompt_swap(ad.denoiser(), result, grid, tgt)
    assert (t_ref - swap).abs().max() > 1e-2  # the injection changes the edit: the comparison is not vacuous
    torch.testing.assert_close(s, s_ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(t, t_ref, atol=2e-5, rtol=1e-5)


def test_pnp_without_injection_is_the_prompt_swap(setup):
    ad, grid, result, src, tgt = setup
    den = ad.denoiser()
    with torch.no_grad():
        out = edit(ad, result, grid, src, tgt, denoiser=den, x0=None, feature_steps=0, attention_steps=0)
        alone = prompt_swap(den, result, grid, tgt)
        pair_result, pair_cond = stack_pair(result, src, tgt)
        in_pair = prompt_swap(den, pair_result, grid, pair_cond)[1:]
    assert torch.equal(out, in_pair)  # bit for bit: the hooks are inert outside their steps
    # the plain swap runs a batch of 1 instead of 2: equal up to the network's batch round-off
    torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-5)


def test_pnp_same_prompt_target_is_the_source(setup):
    ad, grid, result, src, _ = setup
    with torch.no_grad():
        s, t = pnp_sample(ad, result, grid, src, src, denoiser=ad.denoiser())
    assert torch.equal(s, t)
    cfg = ad.encode_prompts(["a photo of a red cat"], 3.0, [""])
    with torch.no_grad():
        s, t = pnp_sample(ad, result, grid, cfg, cfg, denoiser=ad.denoiser())
    assert torch.equal(s, t)


def test_pnp_refuses_a_non_unet_model():
    class FluxLike(AdapterDefaults):
        name, network_kind = "flux_like", "flux"

    grid = Grid((Level(0.0, 1.0, 0.0), Level(1.0, 0.0, 1.0)), family="flow")
    result = InversionResult(z=torch.zeros(1, 4, 2, 2), trajectory=(), steps=())
    with pytest.raises(ValueError, match="pnp: needs a UNet"):
        edit(FluxLike(), result, grid, None, None, denoiser=None, x0=None)  # type: ignore[arg-type]
