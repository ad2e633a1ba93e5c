"""PSNR against an independent reference, latent round-trip error, and the metric registry."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional import peak_signal_noise_ratio

from eval.metrics import build_metrics, registry
from eval.metrics.latent import latent_rmse
from eval.metrics.psnr import PSNR, psnr


def _pair(batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 3, 16, 16, generator=gen)
    noise = torch.randn(batch, 3, 16, 16, generator=gen) * torch.tensor([0.01, 0.05, 0.2])[:batch, None, None, None]
    return (target + noise).clamp(0, 1), target


def test_psnr_matches_torchmetrics_per_image() -> None:
    pred, target = _pair()
    reference = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(psnr(pred, target), reference, rtol=1e-5, atol=1e-4)


def test_psnr_matches_the_formula_and_is_not_pooled() -> None:
    pred, target = _pair()
    values = psnr(pred, target)
    assert values.shape == (3,)
    for i in range(3):
        mse = ((pred[i].double() - target[i].double()) ** 2).mean().item()
        assert values[i].item() == pytest.approx(10 * math.log10(1.0 / mse), rel=1e-5)
        assert psnr(pred[i : i + 1], target[i : i + 1])[0].item() == pytest.approx(values[i].item(), rel=1e-6)
    assert values[0] > values[1] > values[2]


def test_psnr_identical_images_is_inf_and_shapes_must_match() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert torch.isinf(psnr(x, x)).all()
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, x[:, :, :4])


def test_psnr_metric_object() -> None:
    metric = PSNR()
    pred, target = _pair(2)
    assert metric.name == "psnr" and metric.higher_is_better and metric.unavailable_reason() is None
    torch.testing.assert_close(metric(pred, target, ["a", "b"]), psnr(pred, target))


def test_latent_rmse_known_values_and_any_layout() -> None:
    encoded = torch.zeros(2, 4, 8, 8)
    shifted = encoded + torch.tensor([0.5, -2.0])[:, None, None, None]
    torch.testing.assert_close(latent_rmse(shifted, encoded), torch.tensor([0.5, 2.0]))
    packed = torch.randn(2, 16, 64)  # Flux-style (B, L, D)
    assert latent_rmse(packed, packed).abs().max().item() == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        latent_rmse(packed, packed[:, :8])


def test_build_metrics_by_name_and_errors() -> None:
    assert "psnr" in registry()
    [metric] = build_metrics(["psnr"])
    assert metric.name == "psnr"
    [ranged] = build_metrics(["psnr"], {"psnr": {"data_range": 2.0}})
    assert ranged.data_range == 2.0
    with pytest.raises(ValueError) as err:
        build_metrics(["psnr", "nope"])
    message = str(err.value)
    assert "\n" not in message and "'nope'" in message and "psnr" in message.split("valid:")[1]
    with pytest.raises(ValueError, match="not in metrics.names"):
        build_metrics(["psnr"], {"lpips": {}})
