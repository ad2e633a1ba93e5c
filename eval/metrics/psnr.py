"""Peak signal-to-noise ratio, per image, on [0, 1] pixels.

``PSNR = 10 log10(data_range^2 / MSE)`` with the MSE taken over one image's channels and
pixels, never pooled over the batch (torchmetrics pools unless ``dim`` is given). Identical
images give ``+inf``, as in torchmetrics and skimage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eval.metrics.base import Tensor


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB of (B, ...) tensors: shape (B,), float32 or wider."""
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    diff = pred.double() - target.double()
    mse = diff.flatten(1).pow(2).mean(dim=1)
    return (10.0 * torch.log10(data_range**2 / mse)).float()


@dataclass
class PSNR:
    """The :class:`~eval.metrics.base.ImageMetric` wrapper of :func:`psnr` (data range 1)."""

    name: str = "psnr"
    higher_is_better: bool = True
    data_range: float = 1.0

    def unavailable_reason(self) -> str | None:
        return None

    def __call__(self, pred: Tensor, target: Tensor, prompts: list[str] | None = None) -> Tensor:
        return psnr(pred, target, self.data_range)
