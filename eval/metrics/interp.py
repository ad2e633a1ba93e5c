"""Per-path measures of an interpolation (``task=interpolate``): valid scenes, the Gaussian shell, CLIP.

Contract: ``frames`` are the regenerated images (N, 3, H, W) in [0, 1] at the path's weights, both
ends included; "interior" means ``frames[1:-1]`` (the ends are the two reconstructions, measured by
the fidelity rows). The functions return numbers; :func:`world_reason` says (one line) why the
checker does not apply, so the task records that reason instead of a number.

- :func:`valid_scene`: the embedded world's checker (:func:`eval.world.checker.detect`) reads exactly
  one object whose every attribute (shape, colour, size, position, background) is named in the
  world's vocabulary, with a shape template IoU of at least ``min_shape_iou`` (the checker's own
  default for a shape to count, :func:`eval.world.checker.check`). No caption is involved: an
  interpolant between "a red circle" and "a blue square" may be either, or a purple diamond.
- :func:`gnri.edit.paths.norm_deviation` (used by the task): ``| |z| / sqrt(d) - 1 |`` of a latent.
- :func:`clip_either`: per frame, the larger CLIP score to caption A or caption B.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from gnri.core import Tensor

NO_INTERIOR = "no interior interpolants (task.num_points must be >= 3)"
NOT_WORLD = "the captions are not of the embedded world's grammar; the checker reads world scenes only"


def world_reason(captions: Sequence[str]) -> str | None:
    """Why the world's checker does not apply to a pair with these captions (None: it does)."""
    try:
        from eval.world.grammar import parse
    except ImportError as err:  # pragma: no cover - the world ships with the repository
        return f"the embedded world (eval.world) is not importable: {err}"
    try:
        for caption in captions:
            parse(caption)
    except ValueError:
        return NOT_WORLD
    return None


def valid_scene(image: Any, min_shape_iou: float = 0.6) -> bool:
    """Whether the checker finds one object with every attribute in the vocabulary (module docstring)."""
    from eval.world.checker import detect

    found, _, count, iou = detect(image)
    named = all(value is not None for value in (found.shape, found.colour, found.size, found.position,
                                                 found.background))
    return count == 1 and named and iou >= min_shape_iou


def valid_fraction(frames: Tensor, min_shape_iou: float = 0.6) -> float:
    """Fraction of ``frames`` (N, 3, H, W) that are valid scenes."""
    if frames.shape[0] == 0:
        raise ValueError("valid_fraction: no frames")
    return sum(valid_scene(f.float().cpu(), min_shape_iou) for f in frames) / frames.shape[0]


def clip_either(clip: Any, frames: Tensor, caption_a: str, caption_b: str) -> Tensor:
    """Per frame ``max(CLIP(frame, caption_a), CLIP(frame, caption_b))``: shape (N,)."""
    n = frames.shape[0]
    to_a = clip(frames, frames, [caption_a] * n)
    to_b = clip(frames, frames, [caption_b] * n)
    return torch.maximum(to_a, to_b)


__all__ = ["NOT_WORLD", "NO_INTERIOR", "clip_either", "valid_fraction", "valid_scene", "world_reason"]
