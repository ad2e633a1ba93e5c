"""SSIM per image (Wang et al. 2004), via torchmetrics' functional implementation.

Convention, fixed so numbers are comparable across runs: Gaussian window sigma 1.5 (11 taps),
K1 = 0.01, K2 = 0.03, data range 1 (images in [0, 1]; never estimated from the batch, which
would pool over images), borders reflect-padded (torchmetrics), mean over channels and pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from eval.metrics.base import PairScore, Tensor

DATA_RANGE = 1.0


@dataclass
class SSIM(PairScore):
    """Structural similarity of ``pred`` to ``target``, one value per image, higher is better."""

    sigma: float = 1.5
    k1: float = 0.01
    k2: float = 0.03
    name: str = "ssim"
    higher_is_better: bool = True

    def unavailable_reason(self) -> str | None:
        return None

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor, prompts: list[str] | None = None) -> Tensor:
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(
                f"ssim: pred and target must both be (B, 3, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        dtype = torch.promote_types(pred.dtype, torch.float32)
        return structural_similarity_index_measure(
            pred.to(dtype), target.to(dtype), gaussian_kernel=True, sigma=self.sigma,
            reduction="none", data_range=DATA_RANGE, k1=self.k1, k2=self.k2,
        ).reshape(-1)
