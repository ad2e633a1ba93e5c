"""Latent round-trip error: how far reconstruction lands from the encoded latent.

Measured in the adapter's own latent space (scaled/shifted/packed as its denoiser sees it), so
it isolates inversion error from the VAE's: ``latent_rmse = sqrt(mean((z_rec - z_enc)^2))`` per
sample, over every dimension but the batch one (layout-agnostic: UNet or packed Flux latents).
"""

from __future__ import annotations

from eval.metrics.base import Tensor


def latent_rmse(reconstructed: Tensor, encoded: Tensor) -> Tensor:
    """Per-sample RMS of ``reconstructed - encoded``: shape (B,)."""
    if reconstructed.shape != encoded.shape:
        raise ValueError(
            f"latent_rmse: shapes differ, {tuple(reconstructed.shape)} vs {tuple(encoded.shape)}"
        )
    diff = reconstructed.double() - encoded.double()
    return diff.flatten(1).pow(2).mean(dim=1).sqrt().float()

