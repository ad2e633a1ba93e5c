"""Peak signal-to-noise ratio, per image, on [0, 1] pixels.

``PSNR = 10 log10(data_range^2 / MSE)`` with the MSE taken over one image's channels and
pixels, never pooled over the batch (torchmetrics pools unless ``dim`` is given). Identical
images give ``+inf``, as in torchmetrics and skimage. The formula is :func:`gnri.quality.psnr`
(the project's one PSNR); this module re-exports it and adds the registry's metric object.
"""

from __future__ import annotations

from dataclasses import dataclass

from eval.metrics.base import PairScore, Tensor
from gnri.quality import psnr


@dataclass
class PSNR(PairScore):
    """The :class:`~eval.metrics.base.ImageMetric` wrapper of :func:`psnr` (data range 1)."""

    name: str = "psnr"
    higher_is_better: bool = True
    data_range: float = 1.0

    def unavailable_reason(self) -> str | None:
        return None

    def __call__(self, pred: Tensor, target: Tensor, prompts: list[str] | None = None) -> Tensor:
        return psnr(pred, target, self.data_range)


__all__ = ["PSNR", "psnr"]
