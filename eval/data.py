"""Image + caption sources for the benchmark, and the one image-loading rule.

A dataset is a list of :class:`Entry` (no pixels yet). Three sources:

- :func:`folder_dataset`: a folder of images with ``captions.jsonl``, one
  ``{"image": "<path relative to the folder>", "caption": "..."}`` per line;
- :func:`coco_dataset`: a COCO captions JSON (``images[].id/file_name``,
  ``annotations[].image_id/caption``; the first caption of an image is used) and its image folder;
  with ``ids`` (a committed id list, e.g. ``datasets/coco2017_val_ids.txt``) only those images, in
  the list's order, so ``max_images=N`` takes the list's first N (:func:`subset_order` is the rule
  that ordered it);
- :func:`sample_dataset`: the built-in sample in ``datasets/sample/`` (drawn by
  :func:`draw_sample`; regenerate with ``python -m eval.data datasets/sample``).

A source that cannot be read at all (missing folder, invalid JSON file) raises a one-line
error. A bad *entry* becomes an Entry whose ``problem`` says why, so the harness records it
instead of crashing: a missing file, a missing, non-string, empty or whitespace-only caption,
a manifest line that is not UTF-8 (the other lines are still read), not JSON, or not an object
with a string ``image``, text that cannot be written as UTF-8 (lone surrogates), and an exact
repeat of an earlier (image, caption) pair. The same image listed again with a different
caption is kept under a distinct id: the second ``x.png`` is ``x.png#2``, the third ``x.png#3``.
A usable entry may carry a ``warning`` (:func:`with_caption_warnings`: its caption is longer
than the model's text encoders take, so the pipeline truncates it).

Image rule (:func:`gnri.images.load_image` + :func:`gnri.images.fit_to_size`): any PIL mode becomes RGB float in [0, 1]
(L/LA/P/RGBA via RGBA composited on white; integer greyscale scaled by its type's maximum, 16-bit
by 65535, 32-bit TIFF by 2^32 - 1 or 2^31 - 1; float greyscale taken as [0, 1]; EXIF orientation
applied); then the image is resized (bilinear, antialiased) so that it covers the target size with
its shorter side matching, and center-cropped to exactly (H, W). A file that cannot be read (empty,
truncated, not an image, more pixels than ``gnri.images.MAX_PIXELS``) raises
:class:`gnri.images.ImageError` (an OSError and a ValueError) in one line naming it: the harness
records the entry as skipped with that reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from gnri.models.base import ModelAdapter

Tensor = torch.Tensor
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CAPTIONS_FILE = "captions.jsonl"


@dataclass(frozen=True)
class Entry:
    """One benchmark item: ``image_id`` names it in the results table.

    ``problem`` is None for a usable entry, else a one-line reason it cannot be evaluated.
    ``warning`` is None, or one line about a usable entry the rows should carry (e.g. its
    caption is truncated by the text encoder).
    """

    image_id: str
    path: Path | None
    caption: str | None
    problem: str | None = None
    warning: str | None = None


def sample_dir() -> Path:
    """The built-in sample folder, ``<repo>/datasets/sample``."""
    return Path(__file__).resolve().parents[1] / "datasets" / "sample"


def sample_dataset() -> list[Entry]:
    """The built-in sample: small drawn images with captions (see :func:`draw_sample`)."""
    return folder_dataset(sample_dir())


UNCAPTIONED = "no {manifest} in the folder: empty caption (unconditional inversion)"


def uncaptioned_folder(root: Path, manifest: str = CAPTIONS_FILE) -> list[Entry]:
    """Every image of a folder without a manifest, sorted, with an empty caption and a warning
    (unconditional inversion: the model's empty-prompt conditioning)."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"dataset.path: {str(root)!r} has no {manifest} and no images ({', '.join(IMAGE_SUFFIXES)})")
    warning = UNCAPTIONED.format(manifest=manifest)
    return distinct_ids([Entry(p.relative_to(root).as_posix(), p, "", warning=warning) for p in files])


def folder_dataset(path: str | Path, captions: str = CAPTIONS_FILE) -> list[Entry]:
    """Entries of ``captions.jsonl`` in file order, then uncaptioned images (sorted) as problems;
    a folder without the manifest gives every image an empty caption and a warning
    (:func:`uncaptioned_folder`).

    Lines are split on ``\\n`` only (a caption may hold U+2028) and decoded one by one, so a
    line that is not UTF-8 is one problem entry and the rest of the file is still read.
    """
    root = Path(path)
    manifest = root / captions
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.path: folder {str(root)!r} does not exist")
    if not manifest.is_file():
        return uncaptioned_folder(root, manifest.name)
    entries: list[Entry] = []
    for lineno, raw in enumerate(manifest.read_bytes().split(b"\n"), start=1):
        where = f"{manifest.name} line {lineno}"
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as err:
            bad = f"byte 0x{raw[err.start]:02x} at column {err.start + 1}"
            entries.append(Entry(where, None, None, f"{where}: not UTF-8 ({bad})"))
            continue
        if line.strip():
            entries.append(_jsonl_entry(root, line, where))
    listed = {os.path.normpath(e.path) for e in entries if e.path is not None}
    for file in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = file.relative_to(root).as_posix()
        if os.path.normpath(file) not in listed:
            entries.append(Entry(rel, file, None, f"missing caption: {rel} is not in {manifest.name}"))
    return distinct_ids(entries)


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _jsonl_entry(root: Path, line: str, where: str) -> Entry:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        return Entry(where, None, None, f"{where}: invalid JSON ({err.msg})")
    except (ValueError, RecursionError) as err:  # e.g. an integer too long, nesting too deep
        return Entry(where, None, None, f"{where}: invalid JSON ({type(err).__name__})")
    if not isinstance(item, dict):
        return Entry(where, None, None, f"{where}: {_json_kind(item)}, not an object with 'image' and 'caption'")
    image = item.get("image")
    if not isinstance(image, str) or not image.strip():
        return Entry(where, None, None, f"{where}: needs a string 'image' field (got {_json_kind(image)})")
    return _entry(image, root, item.get("caption", None), where, "caption" in item)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _entry(image_id: str, folder: Path, caption: object, where: str, has_caption: bool = True) -> Entry:
    """The entry of ``image_id`` (a path relative to ``folder``) with ``caption`` as found."""
    if not _utf8(image_id) or any(ord(c) < 32 or c == "\x7f" for c in image_id):
        why = "control character or lone surrogate"
        return Entry(where, None, None, f"{where}: image name is not a valid file name ({why})")
    file = folder / image_id
    if isinstance(caption, str) and not _utf8(caption):
        return Entry(image_id, file, None, f"caption of {image_id} is not valid Unicode (a lone surrogate)")
    text = caption if isinstance(caption, str) else None
    if not file.is_file():
        return Entry(image_id, file, text, f"image file not found: {file}")
    if caption is None:
        return Entry(image_id, file, None, f"missing caption for {image_id}" if not has_caption
                     else f"missing caption for {image_id} (caption is null)")
    if not isinstance(caption, str):
        return Entry(image_id, file, None, f"caption of {image_id} must be a string, got {_json_kind(caption)}")
    if not caption.strip():
        return Entry(image_id, file, caption, f"empty caption for {image_id} (blank or whitespace only)")
    return Entry(image_id, file, caption)


def distinct_ids(entries: Iterable[Entry]) -> list[Entry]:
    """``entries`` with every ``image_id`` unique: a repeat of an id gets ``#2``, ``#3``, ... .

    A repeat with the same file and caption as an earlier entry becomes a problem
    ("duplicate of ..."): the pair would be counted twice.
    """
    entries = list(entries)
    taken = {e.image_id for e in entries}
    seen: dict[str, list[Entry]] = {}
    out = []
    for entry in entries:
        earlier = seen.setdefault(entry.image_id, [])
        if earlier:
            n = len(earlier) + 1
            while f"{entry.image_id}#{n}" in taken:
                n += 1
            new_id = f"{entry.image_id}#{n}"
            taken.add(new_id)
            same = next((e for e in earlier if (e.path, e.caption) == (entry.path, entry.caption)), None)
            problem = entry.problem
            if problem is None and same is not None:
                problem = f"duplicate of {same.image_id}: the same image and caption"
            earlier.append(entry)
            entry = replace(entry, image_id=new_id, problem=problem)
        else:
            earlier.append(entry)
        out.append(entry)
    return out


def with_caption_warnings(entries: Iterable[Entry], adapter: ModelAdapter) -> list[Entry]:
    """``entries`` with a ``warning`` on each usable one whose caption the adapter truncates.

    Uses ``adapter.prompt_warning(caption) -> str | None`` (:class:`gnri.models.base.ModelAdapter`).
    """
    out = []
    for entry in entries:
        if entry.problem is None and entry.caption:
            warning = adapter.prompt_warning(entry.caption)
            if warning:
                entry = replace(entry, warning=warning if entry.warning is None else f"{entry.warning}; {warning}")
        out.append(entry)
    return out


COCO_VAL_IDS = Path(__file__).resolve().parents[1] / "datasets" / "coco2017_val_ids.txt"
SUBSET_SALT = "gnri-bench:coco2017-val"  # the seed of the committed COCO order (subset_order)


def subset_order(ids: Iterable[int], salt: str = SUBSET_SALT) -> list[int]:
    """``ids`` in a fixed pseudo-random order: ascending SHA-256 hex digest of ``f"{salt}:{id}"``.

    A seeded shuffle that any language can redo, and whose prefixes are the subsets: the first
    N of the order is the N-image subset, for every N.
    """
    return sorted(set(int(i) for i in ids), key=lambda i: hashlib.sha256(f"{salt}:{i}".encode()).hexdigest())


def read_id_list(path: str | Path) -> list[int]:
    """Image ids, one per line (``#`` comments and blank lines skipped); one-line ValueError if bad.

    A relative path that does not exist from the working directory is read from the repository.
    """
    file = Path(path).expanduser()
    if not file.is_absolute() and not file.exists():
        file = Path(__file__).resolve().parents[1] / file
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ValueError(f"dataset.ids: cannot read {str(path)!r}: {err.strerror or err}") from None
    ids = []
    for n, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            if not text.isdigit():
                raise ValueError(f"dataset.ids: {file} line {n}: {text!r} is not an image id")
            ids.append(int(text))
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"dataset.ids: {file} " + ("lists no ids" if not ids else "repeats an id"))
    return ids


def coco_dataset(path: str | Path, images: str | Path | None = None, ids: str | Path | None = None) -> list[Entry]:
    """Entries of a COCO captions JSON ``path``; ``images`` defaults to the JSON's folder.

    An image's caption is its first non-blank one (stripped); an image listed twice with
    different captions is told apart as for :func:`folder_dataset`. ``ids``: a file of image
    ids (:func:`read_id_list`): only those images, in its order; an id the JSON lacks is a
    one-line error (the list is of another split or year).
    """
    file = Path(path)
    folder = Path(images) if images is not None else file.parent
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"dataset.path: cannot read COCO captions {str(file)!r}: {_first_line(err)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"dataset.path: {str(file)!r} has no 'images' list (COCO captions format)")
    annotations = data.get("annotations", [])
    captions: dict[object, str] = {}
    for ann in annotations if isinstance(annotations, list) else []:
        if isinstance(ann, dict) and isinstance(ann.get("caption"), str) and _hashable(ann.get("image_id")):
            key, text = ann.get("image_id"), ann["caption"].strip()
            if not captions.get(key):  # the first non-blank caption wins
                captions[key] = text
    wanted = read_id_list(ids) if ids is not None else None
    listed = data["images"]
    if wanted is not None:
        by_id = {img.get("id"): img for img in listed if isinstance(img, dict) and _hashable(img.get("id"))}
        absent = [i for i in wanted if i not in by_id]
        if absent:
            raise ValueError(f"dataset.ids: {len(absent)} of {len(wanted)} listed ids (first {absent[0]}) are not "
                             f"in {str(file)!r}; is it captions_val2017.json?")
        listed = [by_id[i] for i in wanted]
    entries = []
    for n, img in enumerate(listed):
        where = f"images[{n}]"
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str) or not img["file_name"].strip():
            entries.append(Entry(where, None, None, f"{where}: needs 'file_name'"))
            continue
        key = img.get("id")
        entries.append(_entry(img["file_name"], folder, captions.get(key) if _hashable(key) else None, where, False))
    return distinct_ids(entries)


def _hashable(value: object) -> bool:
    return isinstance(value, (int, str, float, type(None)))


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


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
