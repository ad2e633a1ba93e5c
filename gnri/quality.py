"""Image quality numbers the library and the benchmark share: the one PSNR of the project.

``eval.metrics.psnr`` wraps :func:`psnr` (no second formula); ``gnri`` never imports ``eval``.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB of (B, ...) tensors: shape (B,), float32.

    ``10 log10(data_range^2 / MSE)`` with the MSE over one image's channels and pixels (in float64),
    never pooled over the batch; identical images give ``+inf`` (as torchmetrics and skimage).
    """
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    diff = pred.double() - target.double()
    mse = diff.flatten(1).pow(2).mean(dim=1)
    return (10.0 * torch.log10(data_range**2 / mse)).float()


__all__ = ["psnr"]
