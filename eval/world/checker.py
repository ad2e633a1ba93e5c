"""Deterministic checker: does an image show what a caption of the world grammar says?

It reads the scene back from pixels, using nothing but the image: the background is the
per-channel median colour; a first mask (distance to the background > ``fg_threshold``) gives
the object's colour (median of its largest component); the object mask is then the pixels
whose estimated coverage, the projection of ``pixel - background`` on ``object - background``,
is at least 1/2 (the generator's own mask rule). Colours are named by the nearest palette entry
within ``colour_tolerance``. For each shape, the square box whose rendering has the object's
area and centroid is fitted and scored by soft intersection-over-union with the object's
coverage; the best shape names the object, and its box gives the position (the grid cell of
the nearest anchor) and the size (side below or above the midpoint of the two size ranges).
Each attribute the caption states is compared, and the scene must hold exactly one object
(components smaller than ``min_area`` of the image are ignored as noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from eval.world.generator import (ANCHORS, RGB, SHAPE_AREA, SHAPE_CENTROID_DY, SIZE_RANGES, SUPERSAMPLE,
                                  shape_coverage)
from eval.world.grammar import COLOURS, POSITIONS, SHAPES, Attributes, parse

_PALETTE = np.asarray([RGB[c] for c in COLOURS], np.float32) / 255.0
_EIGHT = np.ones((3, 3), bool)
# Renders quantise coverage to 1/SUPERSAMPLE^2 and pixels to uint8: a pixel covered exactly 1/2
# may read back a hair below it, so the mask threshold sits half a quantum lower.
_MASK_LEVEL = 0.5 - 0.5 / SUPERSAMPLE**2


@dataclass(frozen=True)
class Verdict:
    """``ok``: every stated attribute matches and there is exactly one object.

    ``checks``: per stated attribute (and ``count``) whether it matches; ``found``: what the
    image shows (None where it cannot be read); ``mask``: the detected object mask (HxW bool);
    ``shape_iou``: the best template IoU.
    """

    ok: bool
    checks: dict[str, bool]
    found: Attributes
    mask: np.ndarray = field(repr=False)
    shape_iou: float = 0.0


def to_hwc(image: object) -> np.ndarray:
    """HxWx3 float64 in [0, 1] from a uint8/float HxWx3 array or a (3, H, W) [0, 1] tensor."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"checker expects one image (HxWx3 or 3xHxW), got shape {arr.shape}")
    if arr.shape[-1] != 3 and arr.shape[0] == 3:
        arr = arr.transpose(1, 2, 0)
    if arr.shape[-1] != 3:
        raise ValueError(f"checker expects 3 colour channels, got shape {arr.shape}")
    return arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else np.clip(arr.astype(np.float64), 0.0, 1.0)


def name_colour(rgb: np.ndarray, tolerance: float) -> str | None:
    """Nearest palette colour to an RGB triple in [0, 1], or None if none is within ``tolerance``."""
    d = np.linalg.norm(_PALETTE - rgb[None, :], axis=1)
    return COLOURS[int(d.argmin())] if d.min() <= tolerance else None


def _cell(v: float) -> int:
    """Grid index (0, 1, 2) of a coordinate given as a fraction of the side: nearest anchor."""
    return int(np.abs(np.asarray(ANCHORS) - v).argmin())


def detect(image: object, *, fg_threshold: float = 0.2, colour_tolerance: float = 0.25,
           min_area: float = 0.004) -> tuple[Attributes, np.ndarray, int, float]:
    """Read the scene: (found attributes, object mask, number of objects, best shape IoU)."""
    img = to_hwc(image)
    h, w, _ = img.shape
    bg = np.median(img.reshape(-1, 3), axis=0)
    background = name_colour(bg, colour_tolerance)
    empty = np.zeros((h, w), bool)
    rough = np.linalg.norm(img - bg, axis=-1) > fg_threshold
    labels, n = ndimage.label(rough, structure=_EIGHT)
    if n == 0:
        return Attributes(background=background), empty, 0, 0.0
    areas = ndimage.sum_labels(np.ones_like(rough), labels, index=np.arange(1, n + 1))
    blob = labels == 1 + int(areas.argmax())
    core = ndimage.binary_erosion(blob, structure=_EIGHT)
    fg = np.median(img[core if core.sum() >= 4 else blob], axis=0)
    direction = fg - bg
    coverage = (img - bg) @ direction / max(float(direction @ direction), 1e-12)
    labels, n = ndimage.label(coverage >= _MASK_LEVEL, structure=_EIGHT)
    if n == 0:
        return Attributes(background=background), empty, 0, 0.0
    areas = ndimage.sum_labels(np.ones((h, w)), labels, index=np.arange(1, n + 1))
    mask = labels == 1 + int(areas.argmax())
    count = int((areas >= min_area * h * w).sum())
    if count == 0:
        return Attributes(background=background), empty, 0, 0.0
    # Soft coverage of the object (its component plus a one-pixel rim), then, for each shape,
    # the square box whose rendering has the same area and centroid, scored by soft IoU.
    soft = np.clip(coverage, 0.0, 1.0) * ndimage.binary_dilation(mask, structure=_EIGHT)
    area = float(soft.sum())
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    mx, my = float((soft * xs).sum() / area), float((soft * ys).sum() / area)
    ious, boxes = [], []
    for shape in SHAPES:
        side = float(np.sqrt(area / SHAPE_AREA[shape]))
        box = (mx, my - SHAPE_CENTROID_DY[shape] * side, side, side)
        template = shape_coverage(shape, box, h)
        ious.append(float(np.minimum(template, soft).sum() / np.maximum(template, soft).sum()))
        boxes.append(box)
    best = int(np.argmax(ious))
    cx, cy, side, _ = boxes[best]
    size_cut = (SIZE_RANGES["small"][1] + SIZE_RANGES["large"][0]) / 2
    found = Attributes(
        shape=SHAPES[best],
        colour=name_colour(fg, colour_tolerance),
        size="small" if side / h < size_cut else "large",
        position=POSITIONS[3 * _cell(cy / h) + _cell(cx / w)],
        background=background,
    )
    return found, mask, count, ious[best]


def check(image: object, caption: str | Attributes, *, min_shape_iou: float = 0.6, **detect_options: float
          ) -> Verdict:
    """Whether ``image`` shows ``caption`` (a caption string or Attributes); see the module doc."""
    attrs = parse(caption) if isinstance(caption, str) else caption.validate()
    found, mask, count, iou = detect(image, **detect_options)
    checks = {name: getattr(found, name) == value for name, value in attrs.stated().items()}
    if "shape" in checks:
        checks["shape"] = checks["shape"] and iou >= min_shape_iou
    checks["count"] = count == 1
    return Verdict(all(checks.values()), checks, found, mask, iou)
