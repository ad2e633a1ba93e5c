"""Edit pairs for the editing benchmark: the embedded world's edit pairs and PIE-Bench.

An :class:`EditEntry` is a reconstruction :class:`~eval.data.Entry` (the source image, its
caption; the reconstruction harness can run on it) plus the edit: the target caption, the
edited region's mask, and for the world the ground-truth target image. COCO captions, the
reconstruction set, stay in :func:`eval.data.coco_dataset`.

- :func:`world_edit_dataset`: ``datasets/world/manifests/edits.jsonl`` (:mod:`eval.world`):
  each pair changes one attribute of a held-out scene. Scenes are re-rendered from the
  manifest (their SHA-256 is checked: a mismatch makes the entry a problem) and cached as
  lossless PNGs named by that digest under ``<cache_dir>/world``. The edited region is the
  complement of :func:`eval.world.generator.keep_mask` (object edits: anything either object
  covers; background edits: everything but the pixels the object fully covers).
- :func:`piebench_dataset`: PIE-Bench (``cure-lab/PnPInversion``, arXiv 2310.01506) as the user
  downloads it: a folder with ``mapping_file.json`` and ``annotation_images/``. Prompts have
  their ``[``/``]`` markers removed, ``blended_word`` is split on spaces, and the mask is the
  run-length encoding decoded as PnPInversion's ``mask_decode`` does (``(start, length)``
  pairs over the flattened 512 x 512 image, then the 1-pixel border set to edited).

Masks are (H, W) bool arrays, True on the EDITED region, at the source image's native size;
:func:`fit_mask` resizes one the way :func:`gnri.images.fit_to_size` resizes its image.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from eval.data import Entry
from eval.world_data import default_world_cache, save_png, world_dir
from gnri.images import fit_to_size

PIEBENCH_SIZE = (512, 512)  # PnPInversion's mask_decode image_shape
MAPPING_FILE = "mapping_file.json"
ANNOTATION_IMAGES = "annotation_images"
Mask = Callable[[], np.ndarray]


@dataclass(frozen=True)
class EditEntry(Entry):
    """One edit pair: ``caption`` is the source prompt, ``target_caption`` the edit prompt.

    ``mask()`` gives the edited region (H, W) bool at the source's native size (None: unknown);
    ``target_path`` a ground-truth target image (the world only); ``edit_type`` the attribute
    (world) or PIE-Bench's ``editing_type_id``; ``blend_words`` PIE-Bench's blended words.
    """

    target_caption: str | None = None
    mask: Mask | None = field(default=None, compare=False, repr=False)
    target_path: Path | None = None
    edit_type: str = ""
    blend_words: tuple[str, ...] = ()


def _world_mask(record: dict) -> np.ndarray:
    from eval.world.generator import EditPair, keep_mask, scene_from_record

    pair = EditPair(scene_from_record(record["source"]), scene_from_record(record["target"]), record["attribute"])
    return ~keep_mask(pair)


def _world_entry(record: dict, cache: Path) -> EditEntry:
    from eval.world.generator import digest, render, scene_from_record

    pair_id = f"edit_{int(record['index']):03d}_{record['attribute']}"
    paths = []
    for side in ("source", "target"):
        image, _ = render(scene_from_record(record[side]))
        sha = digest(image)
        if sha != record[side]["sha256"]:
            return EditEntry(pair_id, None, record["source"]["caption"],
                             f"world {side} render of {pair_id} does not match its manifest digest")
        path = cache / f"{sha}.png"
        save_png(image, path)
        paths.append(path)
    return EditEntry(
        pair_id, paths[0], record["source"]["caption"], target_caption=record["target"]["caption"],
        mask=partial(_world_mask, record), target_path=paths[1], edit_type=record["attribute"],
    )


def world_edit_dataset(
    manifest: str | Path | None = None,
    cache_dir: str | Path | None = None,
    attributes: Sequence[str] | None = None,
    max_pairs: int | None = None,
    per_type: int | None = None,
) -> list[EditEntry]:
    """The world's edit pairs (``manifest`` default ``datasets/world/manifests/edits.jsonl``).

    ``attributes`` keeps only pairs that change one of them; ``per_type`` the first N of each edit
    type (the changed attribute: position, shape, size, background, colour), in manifest order, so
    the types are balanced (the manifest holds 32 to 54 of each); ``max_pairs`` the first N kept.
    """
    from eval.world.generator import read_jsonl

    path = Path(manifest) if manifest is not None else world_dir() / "manifests" / "edits.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"dataset.manifest: world edit manifest {str(path)!r} not found")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_world_cache()
    rows = read_jsonl(path)
    if attributes is not None:
        rows = [r for r in rows if r["attribute"] in set(attributes)]
    if per_type is not None:
        if per_type < 1:
            raise ValueError(f"dataset.per_type must be >= 1 or null, got {per_type}")
        seen: dict[str, int] = {}
        kept = []
        for r in rows:
            seen[r["attribute"]] = seen.get(r["attribute"], 0) + 1
            if seen[r["attribute"]] <= per_type:
                kept.append(r)
        rows = kept
    rows = rows[:max_pairs] if max_pairs is not None else rows
    return [_world_entry(r, cache) for r in rows]


def decode_rle(encoded: Sequence[int], shape: tuple[int, int] = PIEBENCH_SIZE) -> np.ndarray:
    """PIE-Bench's ``mask_decode``: ``(start, length)`` pairs over the flattened image, border set.

    Returns (H, W) bool, True on the edited region.
    """
    if len(encoded) % 2:
        raise ValueError(f"PIE-Bench mask: run-length encoding has odd length {len(encoded)}")
    length = shape[0] * shape[1]
    flat = np.zeros(length, dtype=bool)
    for start, run in zip(encoded[0::2], encoded[1::2]):
        flat[int(start): int(start) + max(0, min(int(run), length - int(start)))] = True
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = True  # "to avoid annotation errors in boundary"
    mask[:, 0] = mask[:, -1] = True
    return mask


def strip_markers(prompt: str) -> str:
    """PIE-Bench prompts mark edited words with ``[`` ``]``; the benchmark removes them."""
    return prompt.replace("[", "").replace("]", "")


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # the header only: a decompression bomb is not decoded
                return im.size[1], im.size[0]
    except Exception:  # noqa: BLE001 - PIL also raises SyntaxError, DecompressionBombError, ...
        return None


def _piebench_entry(key: str, item: object, images: Path) -> EditEntry:
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in
                                              ("image_path", "original_prompt", "editing_prompt")):
        need = "needs image_path, original_prompt, editing_prompt"
        return EditEntry(key, None, None, f"{MAPPING_FILE} entry {key}: {need}")
    path = images / item["image_path"]
    source, target = strip_markers(item["original_prompt"]), strip_markers(item["editing_prompt"])
    blend = tuple(item.get("blended_word", "").split()) if isinstance(item.get("blended_word"), str) else ()
    base = {"target_caption": target, "edit_type": str(item.get("editing_type_id", "")), "blend_words": blend}
    if not path.is_file():
        return EditEntry(key, path, source, f"image file not found: {path}", **base)
    if not source.strip() or not target.strip():
        problem = f"{MAPPING_FILE} entry {key}: empty original_prompt or editing_prompt"
        return EditEntry(key, path, source, problem, **base)
    size = _image_size(path)
    if size is None:
        return EditEntry(key, path, source, f"cannot read PIE-Bench image {path}", **base)
    if size != PIEBENCH_SIZE:
        problem = f"PIE-Bench image {path.name} is {size}, its mask is {PIEBENCH_SIZE}"
        return EditEntry(key, path, source, problem, **base)
    rle = item.get("mask")
    mask = partial(decode_rle, tuple(int(v) for v in rle)) if isinstance(rle, list) else None
    return EditEntry(key, path, source, None if mask else f"{MAPPING_FILE} entry {key}: no 'mask'", mask=mask, **base)


def piebench_dataset(
    path: str | Path, images: str | Path | None = None, edit_types: Sequence[str | int] | None = None
) -> list[EditEntry]:
    """PIE-Bench's edit pairs from ``path`` (its data folder, or ``mapping_file.json`` itself).

    ``images`` defaults to ``annotation_images/`` beside the mapping file; ``edit_types`` keeps
    only those ``editing_type_id`` values (0 random, 1 change object, ..., 9 style).
    """
    root = Path(path)
    file = root if root.is_file() else root / MAPPING_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"dataset.path: cannot read PIE-Bench {str(file)!r}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"dataset.path: {str(file)!r} is not a PIE-Bench mapping (an object keyed by image id)")
    folder = Path(images) if images is not None else file.parent / ANNOTATION_IMAGES
    wanted = None if edit_types is None else {str(t) for t in edit_types}
    entries = [_piebench_entry(str(k), v, folder) for k, v in data.items()]
    return [e for e in entries if wanted is None or e.edit_type in wanted]


def fit_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """An edited-region mask resized as its image is (cover-resize, centre crop) to ``size``.

    A pixel counts as edited if any edited pixel contributes to it, so the background is only
    pixels untouched by the edit (conservative for background preservation).
    """
    resized = fit_to_size(torch.from_numpy(np.asarray(mask, dtype=np.float32))[None], size)[0]
    return resized > 0


EDITS_FILE = "edits.jsonl"


def mask_from_png(path: Path) -> np.ndarray:
    """An edited-region mask from an image file: True where it is bright (> 127 in grey)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def _edit_line(root: Path, line: str, where: str) -> EditEntry:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        return EditEntry(where, None, None, f"{where}: invalid JSON ({err.msg})")
    if not isinstance(item, dict) or not isinstance(item.get("image"), str):
        return EditEntry(where, None, None, f"{where}: needs a string 'image' field")
    source = item.get("source_caption", item.get("caption"))
    target = item.get("target_caption")
    path = root / item["image"]
    if not isinstance(source, str) or not isinstance(target, str) or not source.strip() or not target.strip():
        return EditEntry(item["image"], path, None, f"{where}: needs non-empty 'source_caption' and 'target_caption'")
    if not path.is_file():
        return EditEntry(item["image"], path, source, f"image file not found: {path}", target_caption=target)
    mask_name = item.get("mask")
    mask = None
    if isinstance(mask_name, str):
        if not (root / mask_name).is_file():
            return EditEntry(item["image"], path, source, f"{where}: mask file not found: {root / mask_name}",
                             target_caption=target)
        mask = partial(mask_from_png, root / mask_name)
    return EditEntry(item["image"], path, source, None, target_caption=target, mask=mask,
                     edit_type=str(item.get("edit_type", "")))


def edit_folder_dataset(path: str | Path, manifest: str = EDITS_FILE) -> list[EditEntry]:
    """Your own edit pairs: a folder with ``edits.jsonl``, one ``{"image": ..., "source_caption":
    ..., "target_caption": ..., "mask": <optional image, white = edited>}`` per line (``caption``
    is accepted for ``source_caption``). A bad line is an entry with its problem."""
    root = Path(path).expanduser()
    file = root / manifest
    if not file.is_file():
        raise FileNotFoundError(f"dataset.path: {str(file)!r} not found (one JSON edit pair per line)")
    entries = []
    for lineno, raw in enumerate(file.read_bytes().split(b"\n"), start=1):
        where = f"{manifest} line {lineno}"
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError:
            entries.append(EditEntry(where, None, None, f"{where}: not UTF-8"))
            continue
        if line.strip():
            entries.append(_edit_line(root, line, where))
    return entries
