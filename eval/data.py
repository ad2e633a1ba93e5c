"""Image + caption sources for the benchmark, and the one image-loading rule.

A dataset is a list of :class:`Entry` (no pixels yet). Three sources:

- :func:`folder_dataset`: a folder of images with ``captions.jsonl``, one
  ``{"image": "<path relative to the folder>", "caption": "..."}`` per line;
- :func:`coco_dataset`: a COCO captions JSON (``images[].id/file_name``,
  ``annotations[].image_id/caption``; the first caption of an image is used) and its image folder;
- :func:`sample_dataset`: the built-in sample in ``datasets/sample/`` (drawn by
  :func:`draw_sample`; regenerate with ``python -m eval.data datasets/sample``).

A source that cannot be read at all (missing folder, invalid JSON file) raises a one-line
error. A bad *entry* (missing or unreadable file, missing caption, malformed line) becomes an
Entry whose ``problem`` says why, so the harness records it instead of crashing.

Image rule (:func:`gnri.images.load_image` + :func:`gnri.images.fit_to_size`): any PIL mode becomes RGB float in [0, 1]
(L/LA/P/RGBA via RGBA composited on white; 16- and 32-bit integer greyscale scaled by 65535);
then the image is resized (bilinear, antialiased) so that it covers the target size with its
shorter side matching, and center-cropped to exactly (H, W).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw

Tensor = torch.Tensor
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CAPTIONS_FILE = "captions.jsonl"


@dataclass(frozen=True)
class Entry:
    """One benchmark item: ``image_id`` names it in the results table.

    ``problem`` is None for a usable entry, else a one-line reason it cannot be evaluated.
    """

    image_id: str
    path: Path | None
    caption: str | None
    problem: str | None = None


def sample_dir() -> Path:
    """The built-in sample folder, ``<repo>/datasets/sample``."""
    return Path(__file__).resolve().parents[1] / "datasets" / "sample"


def sample_dataset() -> list[Entry]:
    """The built-in sample: small drawn images with captions (see :func:`draw_sample`)."""
    return folder_dataset(sample_dir())


def folder_dataset(path: str | Path, captions: str = CAPTIONS_FILE) -> list[Entry]:
    """Entries of ``captions.jsonl`` in file order, then uncaptioned images (sorted) as problems."""
    root = Path(path)
    manifest = root / captions
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.path: folder {str(root)!r} does not exist")
    if not manifest.is_file():
        raise FileNotFoundError(f"dataset: {str(manifest)!r} not found (one JSON object per line)")
    entries: list[Entry] = []
    for lineno, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            entries.append(_jsonl_entry(root, line, f"{manifest.name} line {lineno}"))
    listed = {e.image_id for e in entries}
    for file in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = file.relative_to(root).as_posix()
        if rel not in listed:
            entries.append(Entry(rel, file, None, f"missing caption: {rel} is not in {manifest.name}"))
    return entries


def _jsonl_entry(root: Path, line: str, where: str) -> Entry:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        return Entry(where, None, None, f"{where}: invalid JSON ({err.msg})")
    if not isinstance(item, dict) or not isinstance(item.get("image"), str):
        return Entry(where, None, None, f"{where}: needs a string 'image' field")
    caption = item.get("caption")
    image_id = item["image"]
    return _entry(image_id, root / image_id, caption if isinstance(caption, str) else None)


def _entry(image_id: str, file: Path, caption: str | None) -> Entry:
    if not file.is_file():
        return Entry(image_id, file, caption, f"image file not found: {file}")
    if caption is None:
        return Entry(image_id, file, None, f"missing caption for {image_id}")
    return Entry(image_id, file, caption)


def coco_dataset(path: str | Path, images: str | Path | None = None) -> list[Entry]:
    """Entries of a COCO captions JSON ``path``; ``images`` defaults to the JSON's folder."""
    file = Path(path)
    folder = Path(images) if images is not None else file.parent
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"dataset.path: cannot read COCO captions {str(file)!r}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"dataset.path: {str(file)!r} has no 'images' list (COCO captions format)")
    captions: dict[object, str] = {}
    for ann in data.get("annotations", []):
        if isinstance(ann, dict) and isinstance(ann.get("caption"), str):
            captions.setdefault(ann.get("image_id"), ann["caption"].strip())
    entries = []
    for n, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            entries.append(Entry(f"images[{n}]", None, None, f"images[{n}]: needs 'file_name'"))
            continue
        entries.append(_entry(img["file_name"], folder / img["file_name"], captions.get(img.get("id"))))
    return entries


# The built-in sample: (file, caption, background top, background bottom, shapes).
# A shape is (kind, box as fractions of the side, fill colour).
SAMPLE_IMAGES = (
    ("red_circle.png", "a red circle on a blue background",
     (40, 60, 170), (20, 30, 110), (("ellipse", (0.25, 0.25, 0.75, 0.75), (220, 40, 40)),)),
    ("yellow_square.png", "a yellow square on a green background",
     (60, 150, 70), (30, 100, 40), (("rectangle", (0.28, 0.28, 0.72, 0.72), (240, 210, 50)),)),
    ("white_triangle.png", "a white triangle on a black background",
     (20, 20, 20), (50, 50, 50), (("triangle", (0.2, 0.2, 0.8, 0.8), (245, 245, 245)),)),
    ("orange_stripes.png", "two purple stripes on an orange background",
     (250, 160, 60), (220, 120, 30),
     (("rectangle", (0.15, 0.0, 0.35, 1.0), (120, 50, 150)), ("rectangle", (0.6, 0.0, 0.8, 1.0), (120, 50, 150)))),
    ("sun_over_sea.png", "a yellow sun above a dark blue sea under a light blue sky",
     (150, 200, 250), (110, 170, 240),
     (("rectangle", (0.0, 0.62, 1.0, 1.0), (20, 50, 120)), ("ellipse", (0.38, 0.2, 0.62, 0.44), (250, 220, 60)))),
    ("green_ring.png", "a green ring around a small pink dot on a grey background",
     (150, 150, 150), (110, 110, 110),
     (("ellipse", (0.15, 0.15, 0.85, 0.85), (40, 170, 60)), ("ellipse", (0.3, 0.3, 0.7, 0.7), (150, 150, 150)),
      ("ellipse", (0.44, 0.44, 0.56, 0.56), (240, 130, 180)))),
)
SAMPLE_SIDE = 64


def _draw(top: tuple[int, ...], bottom: tuple[int, ...], shapes: tuple, side: int) -> Image.Image:
    img = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(img)
    for y in range(side):
        f = y / (side - 1)
        draw.line([(0, y), (side, y)], fill=tuple(round(a + (b - a) * f) for a, b in zip(top, bottom, strict=True)))
    for kind, (x0, y0, x1, y1), fill in shapes:
        box = [round(v * (side - 1)) for v in (x0, y0, x1, y1)]
        if kind == "triangle":
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=fill)
        else:
            getattr(draw, kind)(box, fill=fill)
    return img


def draw_sample(out_dir: str | Path, side: int = SAMPLE_SIDE) -> list[Path]:
    """Write the built-in sample (deterministic PNGs + ``captions.jsonl``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines, files = [], []
    for name, caption, top, bottom, shapes in SAMPLE_IMAGES:
        _draw(top, bottom, shapes, side).save(out / name, optimize=True)
        lines.append(json.dumps({"image": name, "caption": caption}))
        files.append(out / name)
    (out / CAPTIONS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


if __name__ == "__main__":
    draw_sample(sys.argv[1] if len(sys.argv) > 1 else sample_dir())
