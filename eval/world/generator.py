"""Deterministic, seeded generator of the embedded world: one flat shape on a flat background.

Every scene is a pure function of ``(seed, split, index)``: :func:`scene` draws its attributes
and continuous parameters from ``numpy.random.default_rng([seed, split_id, index])``, and
:func:`render` draws it anti-aliased (``supersample``-times supersampled coverage) with the
object's mask. :func:`edit_pair` changes exactly one attribute of a held-out scene and keeps
everything else (the jitter, the relative size), so the region outside both objects' masks is
identical in the two images. Manifests (JSON lines) store each scene's parameters and the
SHA-256 of its render, so images are regenerated, not committed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from eval.world.grammar import ATTRIBUTES, CHOICES, COLOURS, PALETTE, POSITIONS, SHAPES, SIZES, Attributes, caption

IMAGE_SIZE = 64
SUPERSAMPLE = 4
DEFAULT_SEED = 0
SPLITS: dict[str, int] = {"train": 0, "heldout": 1, "edit": 2, "distractor": 3}
# Geometry, as fractions of the image side: cell centres of the 3x3 grid, the jitter around
# them, and the side of the object's (square) bounding box for each size name.
ANCHORS: tuple[float, float, float] = (0.22, 0.5, 0.78)
JITTER = 0.03
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.16, 0.20), "large": (0.28, 0.34)}
RGB: dict[str, tuple[int, int, int]] = dict(PALETTE)
# Geometry of each shape in a unit square box: its area, and how far its centroid lies below
# the box centre (the triangle's centroid is a third of its height above the base).
SHAPE_AREA: dict[str, float] = {"square": 1.0, "circle": float(np.pi / 4), "diamond": 0.5, "triangle": 0.5}
SHAPE_CENTROID_DY: dict[str, float] = {"square": 0.0, "circle": 0.0, "diamond": 0.0, "triangle": 1 / 6}


@dataclass(frozen=True)
class Scene:
    """A fully specified scene: all five attributes plus the continuous parameters.

    ``dx, dy``: offset of the object's box centre from its grid anchor (fraction of the side);
    ``u`` in [0, 1]: where the box side lies within its size name's range.
    """

    attrs: Attributes
    dx: float
    dy: float
    u: float

    @property
    def caption(self) -> str:
        return caption(self.attrs)

    def box(self, size: int = IMAGE_SIZE) -> tuple[float, float, float, float]:
        """(centre x, centre y, width, height) of the object's square bounding box, in pixels."""
        row, col = divmod(POSITIONS.index(self.attrs.position), 3)
        lo, hi = SIZE_RANGES[self.attrs.size]
        side = (lo + self.u * (hi - lo)) * size
        return (ANCHORS[col] + self.dx) * size, (ANCHORS[row] + self.dy) * size, side, side


@dataclass(frozen=True)
class EditPair:
    """The same scene before and after changing one attribute."""

    source: Scene
    target: Scene
    attribute: str


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    return np.random.default_rng([seed, SPLITS[split], index])


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def scene(split: str, index: int, seed: int = DEFAULT_SEED) -> Scene:
    """The scene number ``index`` of ``split`` (deterministic in its arguments)."""
    rng = _rng(seed, split, index)
    colour = _choice(rng, COLOURS)
    attrs = Attributes(
        shape=_choice(rng, SHAPES), colour=colour, size=_choice(rng, SIZES), position=_choice(rng, POSITIONS),
        background=_choice(rng, [c for c in COLOURS if c != colour]),
    )
    dx, dy = (float(v) for v in rng.uniform(-JITTER, JITTER, size=2))
    return Scene(attrs, dx, dy, float(rng.uniform()))


def scenes(split: str, n: int, seed: int = DEFAULT_SEED, start: int = 0) -> list[Scene]:
    """Scenes ``start .. start + n - 1`` of ``split``."""
    return [scene(split, i, seed) for i in range(start, start + n)]


def changed_values(attrs: Attributes, attribute: str) -> list[str]:
    """The values ``attribute`` can change to while the object stays visible (colour != background)."""
    current = getattr(attrs, attribute)
    banned = {current}
    if attribute == "colour":
        banned.add(attrs.background)
    if attribute == "background":
        banned.add(attrs.colour)
    return [v for v in CHOICES[attribute] if v not in banned]


def edit_pair(index: int, seed: int = DEFAULT_SEED, attribute: str | None = None) -> EditPair:
    """Held-out scene ``index`` and a copy with one attribute (random unless given) changed."""
    rng = _rng(seed, "edit", index)
    attribute = attribute or _choice(rng, ATTRIBUTES)
    if attribute not in ATTRIBUTES:
        raise ValueError(f"edit attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    source = scene("heldout", index, seed)
    value = _choice(rng, changed_values(source.attrs, attribute))
    return EditPair(source, replace(source, attrs=source.attrs.with_(attribute, value)), attribute)


def distractors(attrs: Attributes, k: int, rng: np.random.Generator) -> list[Attributes]:
    """``k`` distinct attribute sets, each differing from ``attrs`` in exactly one attribute."""
    out: list[Attributes] = []
    while len(out) < k:
        attribute = _choice(rng, ATTRIBUTES)
        other = attrs.with_(attribute, _choice(rng, changed_values(attrs, attribute)))
        if other not in out:
            out.append(other)
    return out


def heldout_distractors(index: int, k: int = 4, seed: int = DEFAULT_SEED) -> list[Attributes]:
    """The ``k`` one-attribute-changed distractor captions of held-out scene ``index`` (CLIP test)."""
    return distractors(scene("heldout", index, seed).attrs, k, _rng(seed, "distractor", index))


def shape_coverage(shape: str, box: tuple[float, float, float, float], size: int,
                   supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel of a ``size`` x ``size`` image covered by the shape (float32, HxW).

    The shape fills ``box = (cx, cy, width, height)`` (pixels; pixel (i, j) spans
    [j, j+1) x [i, i+1)): the box itself (square), the inscribed ellipse (circle), the rhombus
    through the box's edge midpoints (diamond), or the upward triangle with its apex at the top
    edge's midpoint and the bottom edge as base. Scenes always use square boxes.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    cx, cy, width, height = box
    s = supersample
    coords = (np.arange(size * s, dtype=np.float64) + 0.5) / s
    x = (coords[None, :] - cx) / (width / 2)  # the box is [-1, 1]^2 in these coordinates
    y = (coords[:, None] - cy) / (height / 2)
    if shape == "square":
        inside = (np.abs(x) <= 1) & (np.abs(y) <= 1)
    elif shape == "circle":
        inside = x * x + y * y <= 1
    elif shape == "diamond":
        inside = np.abs(x) + np.abs(y) <= 1
    else:  # triangle: half-width grows linearly from 0 at the apex (y = -1) to 1 at the base
        inside = (y >= -1) & (y <= 1) & (np.abs(x) <= (y + 1) / 2)
    return inside.reshape(size, s, size, s).mean(axis=(1, 3)).astype(np.float32)


def render(sc: Scene, size: int = IMAGE_SIZE, supersample: int = SUPERSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HxWx3, object mask bool HxW = coverage >= 1/2) of a scene."""
    cov = shape_coverage(sc.attrs.shape, sc.box(size), size, supersample)[..., None]
    fg = np.asarray(RGB[sc.attrs.colour], np.float32)
    bg = np.asarray(RGB[sc.attrs.background], np.float32)
    image = np.rint((1 - cov) * bg + cov * fg).astype(np.uint8)
    return image, cov[..., 0] >= 0.5


def render_many(scs: list[Scene], size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Stacked renders: images (N, H, W, 3) uint8 and masks (N, H, W) bool."""
    pairs = [render(sc, size) for sc in scs]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def keep_mask(pair: EditPair, size: int = IMAGE_SIZE) -> np.ndarray:
    """Pixels an edit must leave unchanged (bool HxW).

    Object edits keep everything outside both objects' coverage; a background edit keeps
    the pixels fully covered by the object.
    """
    a = shape_coverage(pair.source.attrs.shape, pair.source.box(size), size)
    if pair.attribute == "background":
        return a >= 1.0
    b = shape_coverage(pair.target.attrs.shape, pair.target.box(size), size)
    return (a <= 0.0) & (b <= 0.0)


def digest(image: np.ndarray) -> str:
    """SHA-256 of an image's bytes (determinism oracle stored in manifests)."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def scene_record(sc: Scene, size: int = IMAGE_SIZE) -> dict:
    """JSON-ready description of a scene: caption, attributes, parameters, render digest."""
    return {"caption": sc.caption, "attributes": asdict(sc.attrs), "dx": sc.dx, "dy": sc.dy, "u": sc.u,
            "sha256": digest(render(sc, size)[0])}


def scene_from_record(rec: dict) -> Scene:
    """Inverse of :func:`scene_record` (the digest is not checked here)."""
    return Scene(Attributes(**rec["attributes"]).validate(), float(rec["dx"]), float(rec["dy"]), float(rec["u"]))


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write one JSON object per line."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines manifest."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"world manifest not found: {p}")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
