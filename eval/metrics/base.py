"""The image-metric contract shared by every metric in ``eval.metrics``.

Images are float tensors (B, 3, H, W) in [0, 1]; a metric returns one value per image, shape
(B,), never pooled over the batch (means come later, from the tidy table). A metric that cannot
give a real number here (no real weights) says so through ``unavailable_reason`` and is recorded
as unavailable with that reason, never computed from random weights.
"""

from __future__ import annotations

from typing import Protocol

import torch

Tensor = torch.Tensor


class ImageMetric(Protocol):
    """``name`` is the ``metric`` column value; ``higher_is_better`` orients tables and plots."""

    name: str
    higher_is_better: bool

    def unavailable_reason(self) -> str | None:
        """None when the metric can run here, else a one-line reason (e.g. missing weights)."""
        ...

    def __call__(self, pred: Tensor, target: Tensor, prompts: list[str] | None = None) -> Tensor:
        """Per-image values, shape (B,). ``prompts`` is used by text-image metrics (CLIP)."""
        ...
