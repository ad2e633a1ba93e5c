"""Memory options (issue 16, item 5): model CPU offload, VAE slicing and tiling as model-config
options, and the memory a method needs beyond plain generation's.

Oracles: the same model without the option (slicing and offload do not change a value; tiling
with tiles covering the whole image is the untiled decode); on a CPU, offload's hooks run with
the CPU as the execution device (no memory saved, the code path exercised); on a machine without
CUDA the request for a CUDA execution device is checked by recording the call.
"""

from __future__ import annotations

import functools

import pytest
import torch
from diffusers import StableDiffusionPipeline

from baselines import ddim
from eval.data import sample_dataset
from eval.tasks.reconstruct import evaluate
from eval.metrics import build_metrics
from eval.timing import generation_peak_mb, memory_beyond_generation
from gnri.core import sample
from gnri.models import load_adapter
from gnri.models.base import ScheduleSpec
from gnri.models.tiny import tiny_pipeline


def _psnr(adapter) -> float:
    df = evaluate(adapter, ScheduleSpec("ddim", 3), functools.partial(ddim.invert), "ddim", sample_dataset()[:1],
                  build_metrics(["psnr"]), warmup=0, progress=False, time_network=False, cache_dir=None)
    return float(df[df["metric"] == "psnr"]["value"].iloc[0])


def test_vae_slicing_decodes_a_batch_image_by_image_with_the_same_values() -> None:
    plain = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd")
    sliced = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd", vae_slicing=True)
    assert sliced.pipe.vae.use_slicing and not plain.pipe.vae.use_slicing
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(sliced.encode_images(images), plain.encode_images(images), rtol=1e-5, atol=1e-5)
        z = plain.encode_images(images)
        torch.testing.assert_close(sliced.decode_latents(z), plain.decode_latents(z), rtol=1e-5, atol=1e-5)


def test_vae_tiling_is_set_and_a_whole_image_tile_is_the_untiled_decode() -> None:
    plain = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd")
    tiled = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd", vae_tiling=True)
    assert tiled.pipe.vae.use_tiling and not plain.pipe.vae.use_tiling
    z = torch.randn(plain.latent_shape(1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # 32 px images, 32 px tiles (the VAE's sample size): one tile, no seam
        torch.testing.assert_close(tiled.decode_latents(z), plain.decode_latents(z), rtol=1e-5, atol=1e-5)
        tiled.pipe.vae.tile_sample_min_size, tiled.pipe.vae.tile_latent_min_size = 16, 8  # force 4 tiles
        out = tiled.decode_latents(z)
    assert out.shape == (1, 3, 32, 32) and bool(torch.isfinite(out).all())


def test_model_cpu_offload_runs_the_hooks_and_gives_the_same_reconstruction() -> None:
    plain = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd")
    offloaded = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd", offload="model", device="cpu")
    assert hasattr(offloaded.pipe.unet, "_hf_hook") and hasattr(offloaded.pipe.vae, "_hf_hook")
    assert _psnr(offloaded) == pytest.approx(_psnr(plain), abs=1e-4)


def test_offload_builds_on_the_cpu_and_asks_for_the_requested_device(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(StableDiffusionPipeline, "enable_model_cpu_offload",
                        lambda self, gpu_id=None, device=None: calls.append(device))
    adapter = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd", offload="model", device="cuda:1")
    assert calls == [torch.device("cuda:1")] and adapter.device == torch.device("cuda:1")
    assert adapter.pipe.unet.device.type == "cpu"  # never moved whole to the device first


def test_memory_beyond_generation_subtracts_plain_generation_measured_the_same_way() -> None:
    adapter = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd")
    z = torch.randn(adapter.latent_shape(1), generator=torch.Generator().manual_seed(0))
    cond = adapter.encode_prompts(["a red circle"])
    grid = adapter.grid(ScheduleSpec("ddim", 2), tuple(z.shape))
    generation = generation_peak_mb(lambda: sample(adapter.denoiser(), z, grid, cond), torch.device("cpu"))
    assert generation > 0  # CPU: the process's peak resident set during the call, weights included
    assert memory_beyond_generation(generation + 12.5, generation) == pytest.approx(12.5)
