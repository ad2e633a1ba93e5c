"""Model adapters on the tiny pipelines: shapes, the prediction invariant, CFG, save/load,
grids from scheduler tables, option errors, configs, and exact round trips with a zeroed network."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from baselines import ddim
from gnri.core import Conditioning, sample
from gnri.models import ScheduleSpec, load_adapter
from gnri.models.common import guided, resolve_dtype
from gnri.models.schedules import ddim_levels, flow_levels
from gnri.models.tiny import tiny_adapter

ADAPTERS = ["tiny_sd_adapter", "tiny_sd_v_adapter", "tiny_sdxl_adapter", "tiny_flux_adapter"]
FAMILY = {"tiny_sd_adapter": "sd", "tiny_sd_v_adapter": "sd", "tiny_sdxl_adapter": "sdxl", "tiny_flux_adapter": "flux"}
CONF = Path(__file__).resolve().parents[1] / "conf"
PROMPTS = ["a photo of a cat", "a red house"]


def _spec(adapter, num_steps: int = 10, **kw) -> ScheduleSpec:
    return ScheduleSpec(kind="flow_euler" if adapter.family == "flow" else "ddim", num_steps=num_steps, **kw)


def _images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _cfg(adapter, w: float, **kw) -> Conditioning:
    """Classifier-free guidance at ``w`` as diffusers spells it: a UNet's guidance_scale, FLUX's true_cfg_scale."""
    if adapter.family == "flow":
        return adapter.encode_prompts(PROMPTS, 1.0, true_cfg_scale=w, **kw)
    return adapter.encode_prompts(PROMPTS, w, **kw)


def _latents(adapter, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(adapter.latent_shape(batch), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ADAPTERS)
def test_encode_decode_shapes_and_range(name, request):
    adapter = request.getfixturevalue(name)
    assert adapter.image_size() == (32, 32)
    with torch.no_grad():
        lat = adapter.encode_images(_images())
        img = adapter.decode_latents(lat)
    assert tuple(lat.shape) == adapter.latent_shape(2) and lat.dtype == torch.float32
    assert img.shape == (2, 3, 32, 32) and img.dtype == torch.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    with torch.no_grad():  # posterior mode: deterministic
        torch.testing.assert_close(adapter.encode_images(_images()), lat, rtol=0, atol=0)


@pytest.mark.parametrize("name", ADAPTERS)
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_prediction_invariant(name, guidance, request):
    """a*x0 + s*eps == z at clean, middle and noisiest levels, with and without CFG."""
    adapter = request.getfixturevalue(name)
    den = adapter.denoiser()
    cond = _cfg(adapter, guidance)
    assert cond.uses_cfg == (guidance > 1.0)
    assert den.forwards_per_call(cond) == (2 if guidance > 1.0 else 1)
    z = _latents(adapter)
    grid = adapter.grid(_spec(adapter), z.shape)
    with torch.no_grad():
        for level in (grid.levels[1], grid.levels[5], grid.levels[-1]):
            pred = den(z, level, cond)
            assert pred.x0.dtype == z.dtype and pred.eps.shape == z.shape
            err = (level.a * pred.x0 + level.s * pred.eps - z).abs().max()
            scale = max(1.0, pred.x0.abs().max().item(), pred.eps.abs().max().item())
            assert err <= 1e-6 * scale, (level, err)
            assert pred.eps.std() > 1e-3  # the tiny network is not trivial


@pytest.mark.parametrize("name", ADAPTERS)
def test_batched_cfg_equals_separate_calls(name, request):
    """One batched [uncond, cond] call equals uncond + w (cond - uncond) from two calls."""
    adapter = request.getfixturevalue(name)
    den, w = adapter.denoiser(), 4.0
    cond = _cfg(adapter, w, negative_prompts=["blurry", "dark"])
    z = _latents(adapter)
    level = adapter.grid(_spec(adapter), z.shape).levels[6]
    with torch.no_grad():
        both = den(z, level, cond)
        pos = den(z, level, Conditioning(cond.positive))
        neg = den(z, level, Conditioning({**cond.positive, **cond.negative}))  # type: ignore[arg-type]  # Flux: guidance
    ref = guided(neg, pos, w)
    torch.testing.assert_close(both.x0, ref.x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both.eps, ref.eps, rtol=1e-5, atol=1e-5)


def test_batch_one_conditioning_broadcasts(tiny_sd_adapter):
    den = tiny_sd_adapter.denoiser()
    one = tiny_sd_adapter.encode_prompts(PROMPTS[:1])
    two = tiny_sd_adapter.encode_prompts(PROMPTS[:1] * 2)
    z = _latents(tiny_sd_adapter)
    level = tiny_sd_adapter.grid(ScheduleSpec("ddim", 10), z.shape).levels[4]
    with torch.no_grad():
        torch.testing.assert_close(den(z, level, one).eps, den(z, level, two).eps)


def test_denoiser_is_differentiable_in_z(tiny_sd_adapter):
    den = tiny_sd_adapter.denoiser()
    cond = tiny_sd_adapter.encode_prompts(PROMPTS[:1])
    z = _latents(tiny_sd_adapter, batch=1).requires_grad_(True)
    level = tiny_sd_adapter.grid(ScheduleSpec("ddim", 10), z.shape).levels[3]
    den(z, level, cond).eps.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in tiny_sd_adapter.pipe.unet.parameters())


@pytest.mark.parametrize("name", ADAPTERS)
def test_save_then_load_gives_identical_predictions(name, request, tmp_path):
    adapter = request.getfixturevalue(name)
    adapter.save_pretrained(tmp_path)
    loaded = load_adapter(FAMILY[name], str(tmp_path))
    assert getattr(loaded, "prediction_type", None) == getattr(adapter, "prediction_type", None)
    assert loaded.image_size() == adapter.image_size()
    z = _latents(adapter)
    grid = adapter.grid(_spec(adapter), z.shape)
    assert loaded.grid(_spec(adapter), z.shape).levels == grid.levels
    with torch.no_grad():
        a = adapter.denoiser()(z, grid.levels[7], adapter.encode_prompts(PROMPTS, 3.0))
        b = loaded.denoiser()(z, grid.levels[7], loaded.encode_prompts(PROMPTS, 3.0))
        torch.testing.assert_close(a.eps, b.eps, rtol=0, atol=0)
        torch.testing.assert_close(adapter.encode_images(_images()), loaded.encode_images(_images()), rtol=0, atol=0)


def test_sdxl_added_conditioning(tiny_sdxl_adapter):
    cond = tiny_sdxl_adapter.encode_prompts(PROMPTS, 5.0)
    assert cond.positive["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 2
    assert cond.positive["text_embeds"].shape == (2, 32) and cond.positive["prompt_embeds"].shape[-1] == 64
    assert not cond.negative["prompt_embeds"].any()  # force_zeros_for_empty_prompt, as diffusers
    assert tiny_sdxl_adapter.encode_prompts(PROMPTS, 0.0).negative is None  # SDXL-Turbo: no CFG


def test_flux_guidance_embedding_is_used(tiny_flux_adapter):
    """The run's guidance_scale feeds the guidance embedding (FluxPipeline's guidance_scale)."""
    low = tiny_flux_adapter
    cond, high = low.encode_prompts(PROMPTS), low.encode_prompts(PROMPTS, 3.5)
    assert cond.positive["guidance"].tolist() == [1.0, 1.0] and high.positive["guidance"].tolist() == [3.5, 3.5]
    z = _latents(low)
    level = low.grid(_spec(low), z.shape).levels[3]
    with torch.no_grad():
        assert not torch.allclose(low.denoiser()(z, level, cond).eps, low.denoiser()(z, level, high).eps)
    assert torch.equal(low.unpack(z), low.unpack(low.pack(low.unpack(z))))
    assert torch.equal(low.pack(low.unpack(z)), z)


@pytest.mark.parametrize("family", ["sd", "flux"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_network_returns_float32(family, dtype):
    """The network may run in fp16/bf16; latents, predictions and noises stay float32."""
    half, full = tiny_adapter(family, dtype=dtype), tiny_adapter(family)
    with torch.no_grad():
        x = full.encode_images(_images())
        assert half.encode_images(_images()).dtype == torch.float32
        level = full.grid(_spec(full), x.shape).levels[4]
        p16 = half.denoiser()(x, level, half.encode_prompts(PROMPTS, 3.0))
        p32 = full.denoiser()(x, level, full.encode_prompts(PROMPTS, 3.0))
    assert p16.x0.dtype == p16.eps.dtype == torch.float32
    assert (level.a * p16.x0 + level.s * p16.eps - x).abs().max() <= 1e-5
    assert (p16.eps - p32.eps).abs().max() <= 0.05 * p32.eps.abs().max()


# --- grids ------------------------------------------------------------------------------------

def _monotone(grid) -> bool:
    a = [lv.a for lv in grid.levels]
    s = [lv.s for lv in grid.levels]
    return all(x > y for x, y in zip(a, a[1:])) and all(x < y for x, y in zip(s, s[1:]))


@pytest.mark.parametrize(
    "name,spec",
    [
        ("tiny_sd_adapter", ScheduleSpec("ddim", 10)),
        ("tiny_sd_adapter", ScheduleSpec("ddim", 50, "trailing")),
        ("tiny_sd_adapter", ScheduleSpec("ddim", 7, "linspace")),
        ("tiny_sd_adapter", ScheduleSpec("euler", 10)),
        ("tiny_sdxl_adapter", ScheduleSpec("euler", 4, "trailing")),
        ("tiny_sdxl_adapter", ScheduleSpec("euler_ancestral", 4, "trailing")),
        ("tiny_flux_adapter", ScheduleSpec("flow_euler", 4)),
        ("tiny_flux_adapter", ScheduleSpec("flow_euler", 8)),
    ],
)
def test_grid_monotone_and_length(name, spec, request):
    adapter = request.getfixturevalue(name)
    grid = adapter.grid(spec, adapter.latent_shape(1))
    identity_step = spec.spacing == "linspace" and spec.kind == "ddim"  # ends on t=0 = alphas_cumprod[0]
    assert grid.num_steps == spec.num_steps - identity_step and _monotone(grid)
    if adapter.family == "flow":
        assert (grid.levels[0].a, grid.levels[0].s) == (1.0, 0.0) and grid.levels[-1].s == pytest.approx(1.0)
        assert all(lv.a + lv.s == pytest.approx(1.0, abs=1e-12) for lv in grid.levels)
    else:
        assert all(lv.a**2 + lv.s**2 == pytest.approx(1.0, abs=1e-12) for lv in grid.levels)
    assert (grid.noises is not None) == (spec.kind == "euler_ancestral")


def test_ddim_grid_reads_scheduler_tables(tiny_sd_adapter):
    grid = tiny_sd_adapter.grid(ScheduleSpec("ddim", 10), (1, 4, 16, 16))
    sched = tiny_sd_adapter.pipe.scheduler
    assert [lv.t for lv in grid.levels[1:]] == [1.0 + 100 * i for i in range(10)]  # leading + steps_offset 1
    ab0 = float(sched.alphas_cumprod[0])  # set_alpha_to_one=False: DDIM ends at alphas_cumprod[0]
    assert grid.levels[0].a == pytest.approx(ab0**0.5, abs=1e-12)
    assert grid.levels[5].a**2 == pytest.approx(float(sched.alphas_cumprod[401]), abs=1e-9)
    one = ddim_levels({**sched.config, "set_alpha_to_one": True}, 10)
    assert (one[0].a, one[0].s) == (1.0, 0.0)


def test_euler_grid_is_ve_sigma_in_vp_coordinates(tiny_sdxl_adapter):
    grid = tiny_sdxl_adapter.grid(ScheduleSpec("euler", 4, "trailing"), (1, 4, 16, 16))
    assert [lv.t for lv in grid.levels] == [0.0, 249.0, 499.0, 749.0, 999.0]
    sigmas = [lv.s / lv.a for lv in grid.levels]
    assert sigmas == pytest.approx([0.0, 0.6932, 1.6129, 4.0817, 14.6146], abs=1e-4)
    assert (grid.levels[0].a, grid.levels[0].s) == (1.0, 0.0)


def test_strength_truncates_cleanest_steps(tiny_sdxl_adapter, tiny_sd_adapter):
    shape = (1, 4, 16, 16)
    full = tiny_sdxl_adapter.grid(ScheduleSpec("euler_ancestral", 4, "trailing"), shape)
    part = tiny_sdxl_adapter.grid(ScheduleSpec("euler_ancestral", 4, "trailing", strength=0.6), shape)
    assert part.num_steps == 2 and part.levels == full.levels[:3]
    assert [lv.t for lv in part.levels[1:]] == [249.0, 499.0]  # GNRI's demo inverts t = 249, 499
    assert all(torch.equal(a, b) for a, b in zip(part.noises, full.noises[:2]))
    ddim6 = tiny_sd_adapter.grid(ScheduleSpec("ddim", 10, strength=0.6), shape)
    assert ddim6.levels == tiny_sd_adapter.grid(ScheduleSpec("ddim", 10), shape).levels[:7]


def test_ancestral_noises_are_seeded(tiny_sdxl_adapter):
    shape = (2, 4, 16, 16)
    a = tiny_sdxl_adapter.grid(ScheduleSpec("euler_ancestral", 4, "trailing", noise_seed=7865), shape)
    b = tiny_sdxl_adapter.grid(ScheduleSpec("euler_ancestral", 4, "trailing", noise_seed=7865), shape)
    c = tiny_sdxl_adapter.grid(ScheduleSpec("euler_ancestral", 4, "trailing", noise_seed=1), shape)
    assert all(torch.equal(x, y) for x, y in zip(a.noises, b.noises))
    assert not torch.equal(a.noises[0], c.noises[0])
    gen = torch.Generator().manual_seed(7865)  # sampling order: the noisiest step draws first
    assert torch.equal(a.noises[-1], torch.randn(shape, generator=gen))
    assert a.noises[0].shape == shape


def test_flow_dynamic_shift_depends_on_resolution(tiny_flux_adapter):
    config = tiny_flux_adapter.pipe.scheduler.config
    small, large = flow_levels(config, 4, 64), flow_levels(config, 4, 4096)
    assert small != large and all(x.s <= y.s for x, y in zip(small, large))
    static = flow_levels({**config, "use_dynamic_shifting": False, "shift": 1.0}, 4, 64)
    assert [lv.s for lv in static] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert [lv.t for lv in static] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize(
    "name,spec,match",
    [
        ("tiny_sd_adapter", ScheduleSpec("flow_euler", 4), "schedule.kind='flow_euler'.*allowed: ddim, euler, eu"),
        ("tiny_sdxl_adapter", ScheduleSpec("flow_euler", 4), "schedule.kind"),
        ("tiny_flux_adapter", ScheduleSpec("ddim", 10), "schedule.kind='ddim'.*allowed: flow_euler"),
        ("tiny_flux_adapter", ScheduleSpec("euler", 4), "schedule.kind"),
        ("tiny_flux_adapter", ScheduleSpec("flow_euler", 4, "trailing"), "schedule.spacing"),
    ],
)
def test_incompatible_schedule_raises(name, spec, match, request):
    adapter = request.getfixturevalue(name)
    with pytest.raises(ValueError, match=match):
        adapter.grid(spec, adapter.latent_shape(1))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="model.family"):
        load_adapter("sd3", "x")
    with pytest.raises(ValueError, match="model.pretrained"):
        load_adapter("sd", None)
    with pytest.raises(ValueError, match="model dtype"):
        resolve_dtype("float8")


# --- exact round trips with the network output zeroed ------------------------------------------

def _zeroed(adapter, family: str):
    pipe = copy.deepcopy(adapter.pipe)
    layer = pipe.transformer.proj_out if family == "flux" else pipe.unet.conv_out
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    return load_adapter(family, pipe)


@pytest.mark.parametrize(
    "name,spec",
    [
        ("tiny_sd_adapter", ScheduleSpec("ddim", 10)),  # eps = 0
        ("tiny_sdxl_adapter", ScheduleSpec("euler", 4, "trailing")),  # eps = 0
        ("tiny_flux_adapter", ScheduleSpec("flow_euler", 4)),  # velocity = 0
    ],
)
def test_zero_network_inversion_closes(name, spec, request):
    adapter = _zeroed(request.getfixturevalue(name), FAMILY[name])
    cond = adapter.encode_prompts(PROMPTS, 1.0)
    with torch.no_grad():
        x0 = adapter.encode_images(_images())
        grid = adapter.grid(spec, x0.shape)
        result = ddim.invert(adapter.denoiser(), x0, grid, cond)
        rec = sample(adapter.denoiser(), result.z, grid, cond)
    assert (rec - x0).abs().max() <= 1e-6 * max(1.0, x0.abs().max().item())
    if adapter.family == "vp":  # eps = 0 scales x up the levels; zero velocity leaves it in place
        torch.testing.assert_close(result.z, x0 * grid.levels[-1].a / grid.levels[0].a)


# --- configs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted((CONF / "schedule").glob("*.yaml")), ids=lambda p: p.stem)
def test_schedule_configs_are_schedule_specs(path):
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    assert set(cfg) == {"kind", "num_steps", "spacing", "strength", "noise_seed"}
    ScheduleSpec(**cfg)


@pytest.mark.parametrize("stem", ["tiny_sd", "tiny_sdxl", "tiny_flux"])
def test_tiny_model_configs_instantiate(stem):
    adapter = instantiate(OmegaConf.load(CONF / "model" / f"{stem}.yaml"))
    assert adapter.image_size() == (32, 32) and adapter.name == stem


@pytest.mark.parametrize(
    "stem", ["sd15", "sd21", "sd21_base", "sdxl_turbo", "flux_schnell", "tiny_sd", "tiny_sdxl", "tiny_flux"]
)
def test_model_configs_have_target_and_pretrained(stem):
    cfg = OmegaConf.load(CONF / "model" / f"{stem}.yaml")
    assert cfg._target_ in ("gnri.models.load_adapter", "gnri.models.tiny.tiny_adapter")
    assert "pretrained" in cfg and cfg.family in ("sd", "sdxl", "flux")
