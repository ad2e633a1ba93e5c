"""Dtype safety (issue 16, item 4): a non-finite latent or image is a ``failed`` row with its reason.

Oracles: float16's largest value is 65504, so a VAE whose output layer is scaled to give values
near 1e5 overflows to inf in float16 and stays finite in float32 (IEEE 754, independent of the
code under test); NaN/inf counts of a hand-written tensor. Each model is a tiny random-weight
pipeline built in code, forced to overflow, run end to end through ``eval.tasks.reconstruct.evaluate``.
"""

from __future__ import annotations

import functools
import math

import pandas as pd
import pytest
import torch

from baselines import ddim
from eval.data import sample_dataset
from eval.finite import NonFiniteError, check_finite, nonfinite_reason
from eval.tasks.reconstruct import evaluate
from eval.metrics import build_metrics
from gnri.models import load_adapter
from gnri.models.common import vae_dtype
from gnri.models.base import ScheduleSpec
from gnri.models.tiny import tiny_pipeline, tiny_vae

FP16_MAX = 65504.0  # IEEE 754 binary16's largest finite value


def _run(adapter) -> pd.DataFrame:
    return evaluate(adapter, ScheduleSpec("ddim", 2), functools.partial(ddim.invert), "ddim", sample_dataset()[:1],
                    build_metrics(["psnr"]), warmup=0, progress=False, time_network=False, cache_dir=None)


def _overflowing_sd(dtype: str, force_upcast: bool, scale: float = 1e4, bias: float = 6e4):
    """Tiny SD whose VAE decoder output layer is scaled (in the VAE's own dtype, every weight
    representable) so that its output exceeds float16's range but not float32's."""
    pipe = tiny_pipeline("sd")
    pipe.vae.register_to_config(force_upcast=force_upcast)
    adapter = load_adapter("sd", pipe, dtype=dtype, name="tiny_sd_overflow")
    conv = adapter.pipe.vae.decoder.conv_out
    with torch.no_grad():
        conv.weight.mul_(scale)
        conv.bias.fill_(bias)
    assert torch.isfinite(conv.weight).all()
    return adapter


def test_nonfinite_reason_counts_nan_and_inf() -> None:
    x = torch.tensor([1.0, math.nan, math.inf, -math.inf, 0.5])
    assert nonfinite_reason(x, "decoded image") == (
        "non-finite values in the decoded image: 1 NaN, 2 inf of 5 (float32; a half-precision overflow or a "
        "diverging method)")
    assert nonfinite_reason(torch.ones(3), "latent") is None
    assert check_finite(torch.ones(2), "latent").tolist() == [1.0, 1.0]
    with pytest.raises(NonFiniteError, match="non-finite values in the latent: 0 NaN, 1 inf"):
        check_finite(torch.tensor([math.inf]), "latent")


def test_an_overflowing_decoder_gives_nan_never_a_white_image() -> None:
    """inf clamped to [0, 1] would be a plain white image with a finite PSNR: it must stay non-finite."""
    adapter = _overflowing_sd("float32", force_upcast=True, scale=1e38, bias=3e38)  # overflows float32 too
    with torch.no_grad():
        image = adapter.decode_latents(torch.zeros(adapter.latent_shape(1)))
    assert torch.isnan(image).any() and not (image == 1.0).all()


def test_fp16_vae_overflow_is_a_failed_row_naming_non_finite_values() -> None:
    adapter = _overflowing_sd("float16", force_upcast=False)
    assert 6e4 < FP16_MAX  # the bias alone fits; bias plus the scaled weights' sum does not
    assert adapter.pipe.vae.dtype == torch.float16  # the config does not ask for an upcast
    df = _run(adapter)
    assert (df["status"] == "failed").all() and df["value"].isna().all()
    assert df["reason"].str.contains("non-finite values in the VAE round-trip image").all()


def test_force_upcast_keeps_the_fp16_vae_in_float32_and_the_same_run_is_ok() -> None:
    adapter = _overflowing_sd("float16", force_upcast=True)
    assert adapter.pipe.unet.dtype == torch.float16 and adapter.pipe.vae.dtype == torch.float32
    df = _run(adapter)
    measured = df[df["status"] != "unavailable"]  # time_network=false: the bare-network rows
    assert set(measured["metric"]) >= {"psnr", "psnr_vae_ceiling"}
    assert (measured["status"] == "ok").all() and measured["value"].notna().all()


def test_a_non_finite_encoded_latent_is_failed_before_any_inversion() -> None:
    pipe = tiny_pipeline("sd")
    with torch.no_grad():
        pipe.vae.encoder.conv_out.bias.fill_(math.inf)  # injected: the encoder's output is inf
    df = _run(load_adapter("sd", pipe, name="tiny_sd_inf_encoder"))
    assert (df["status"] == "failed").all() and df["value"].isna().all()
    assert df["reason"].str.contains("non-finite values in the encoded latent").all()


def test_vae_dtype_rules() -> None:
    """SD/SDXL: float32 under float16 when force_upcast; FLUX: never float16; else the network's."""
    assert vae_dtype(torch.float16, force_upcast=True) == torch.float32
    assert vae_dtype(torch.float16, force_upcast=False) == torch.float16  # the fp16-fix VAE
    assert vae_dtype(torch.bfloat16, force_upcast=True) == torch.bfloat16
    assert vae_dtype(torch.float16, force_upcast=False, never_half=True) == torch.float32
    assert vae_dtype(torch.float32, force_upcast=True) == torch.float32


def test_flux_vae_runs_in_bf16_or_fp32_never_fp16() -> None:
    pipe = tiny_pipeline("flux")
    pipe.vae.register_to_config(force_upcast=False)  # even a config that allows it
    fp16 = load_adapter("flux", pipe, dtype="float16", name="tiny_flux")
    assert fp16.pipe.transformer.dtype == torch.float16 and fp16.pipe.vae.dtype == torch.float32
    bf16 = load_adapter("flux", tiny_pipeline("flux"), dtype="bfloat16", name="tiny_flux")
    assert bf16.pipe.vae.dtype == torch.bfloat16


def test_the_fp16_fix_vae_option_replaces_the_vae_and_runs_in_fp16(tmp_path) -> None:
    """``vae=<folder>`` (as madebyollin/sdxl-vae-fp16-fix, whose config has force_upcast false)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        fixed = tiny_vae()
    fixed.register_to_config(force_upcast=False)
    fixed.save_pretrained(tmp_path / "vae_fix")
    adapter = load_adapter("sdxl", tiny_pipeline("sdxl"), dtype="float16", vae=str(tmp_path / "vae_fix"),
                           name="tiny_sdxl")
    assert adapter.pipe.vae.dtype == torch.float16 and adapter.pipe.unet.dtype == torch.float16
    want = fixed.decoder.conv_out.weight.to(torch.float16)
    assert torch.equal(adapter.pipe.vae.decoder.conv_out.weight, want)
    default = load_adapter("sdxl", tiny_pipeline("sdxl"), dtype="float16", name="tiny_sdxl")
    assert default.pipe.vae.dtype == torch.float32  # SDXL's own VAE config: force_upcast
    with pytest.raises(ValueError, match="model.vae applies to sd and sdxl"):
        load_adapter("flux", tiny_pipeline("flux"), vae=str(tmp_path / "vae_fix"))


def test_non_finite_interpolated_images_are_failed_rows() -> None:
    """The interpolation task decodes its frames itself (no VAE round trip first): checked there."""
    from eval.tasks.interpolate import evaluate_interpolation

    adapter = _overflowing_sd("float32", force_upcast=True, scale=1e38, bias=3e38)  # decoder overflows float32
    df = evaluate_interpolation(adapter, ScheduleSpec("ddim", 2), ddim.invert, "ddim", sample_dataset()[:2],
                                num_points=3, max_images=2, progress=False)
    assert (df["status"] == "failed").all() and df["value"].isna().all()
    assert df["reason"].str.contains("non-finite values in the interpolated images").all()
