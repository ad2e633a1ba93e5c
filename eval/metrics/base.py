"""The metric contract shared by every metric in ``eval.metrics``: reconstruction, edit and diagnostic.

Images are float tensors (B, 3, H, W) in [0, 1]; a metric returns one value per image, shape
(B,), never pooled over the batch (means come later, from the tidy table). A metric that cannot
give a real number here (no real weights) says so through ``unavailable_reason`` and is recorded
as unavailable with that reason, never computed from random weights.

- :class:`Sample`: what one row's metrics see (the candidate image, its source, captions, the
  edited region, the ground-truth target, the reconstruction).
- :class:`Metric`: ``name``, ``higher_is_better``, ``unavailable_reason()``, ``score(sample)``;
  ``score`` raises :class:`MetricUnavailable` when the metric does not apply to this sample.
- :class:`ImageMetric`: the pair protocol ``metric(pred, target, prompts)`` of the reconstruction
  metrics (PSNR, SSIM, LPIPS, CLIP score); :class:`PairScore` gives such a class its ``score``.
- :class:`CachedReference`: the optional method-free half of a metric (LPIPS's source features),
  computed once per source image and shared by every method of a sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Sample:
    """One row's inputs, (1, 3, H, W) images in [0, 1] of one size on one device.

    ``candidate``: the image being scored (the reconstruction, or the edit); ``reference``: the
    source image; ``caption``: what the candidate should show (the image caption, or the edit's
    target caption); ``source_caption``: the source's caption (edits); ``region``: the edited
    region as a bool mask fitted to the image size (None: no mask for this pair); ``target``: the
    ground-truth target image fitted to the size (None: none); ``reconstruction``: the source's
    reconstruction (edits).
    """

    candidate: Tensor
    reference: Tensor
    caption: str
    source_caption: str = ""
    region: Tensor | None = None
    target: Tensor | None = None
    reconstruction: Tensor | None = None


class MetricUnavailable(Exception):
    """Raised by :meth:`Metric.score` when the metric does not apply to this sample; the message is
    the reason (the row's status is ``unavailable``)."""


class Metric(Protocol):
    """``name`` is the ``metric`` column value; ``higher_is_better`` orients tables and plots."""

    name: str
    higher_is_better: bool

    def unavailable_reason(self) -> str | None:
        """None when the metric can run here, else a one-line reason (e.g. missing weights)."""
        ...

    def score(self, sample: Sample) -> Tensor:
        """The sample's value, shape (1,) (or (B,)); :class:`MetricUnavailable` when it does not apply."""
        ...


class ImageMetric(Protocol):
    """A pair metric: ``name`` is the ``metric`` column value; ``higher_is_better`` orients tables and plots."""

    name: str
    higher_is_better: bool

    def unavailable_reason(self) -> str | None:
        """None when the metric can run here, else a one-line reason (e.g. missing weights)."""
        ...

    def __call__(self, pred: Tensor, target: Tensor, prompts: list[str] | None = None) -> Tensor:
        """Per-image values, shape (B,). ``prompts`` is used by text-image metrics (CLIP)."""
        ...


class PairScore:
    """Mixin: the :class:`Metric` ``score`` of a pair metric, ``self(candidate, reference, [caption])``."""

    def score(self, sample: Sample) -> Tensor:
        return self(sample.candidate, sample.reference, [sample.caption])  # type: ignore[operator]


@runtime_checkable
class CachedReference(Protocol):
    """A metric whose reference half does not depend on the method (LPIPS: the source's features).

    ``score_with(pred, reference_features(target, prompts), prompts)`` equals the metric's value of
    ``pred`` against ``target``; callers cache the features per source image.
    """

    def reference_features(self, target: Tensor, prompts: list[str] | None = None) -> Any: ...

    def score_with(self, pred: Tensor, features: Any, prompts: list[str] | None = None) -> Tensor: ...


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


__all__ = ["CachedReference", "ImageMetric", "Metric", "MetricUnavailable", "PairScore", "Sample", "Tensor", "one_line"]
