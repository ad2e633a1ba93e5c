"""A run's plan: its units of work (one dataset item each), in order, each with its content key.

A unit is what one row group of ``results.csv`` describes: one image (reconstruct, exact), one
edit pair (edit) or two consecutive images (interpolate). Its key
(:func:`eval.settings.unit_key`) hashes the run's deciding settings with the item: its index,
ids, image-file hashes and captions, so a changed image file, caption or hyperparameter makes
a new unit and an unchanged one is found finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from eval.data import Entry
from eval.settings import RunSettings, file_digest, unit_key


@dataclass(frozen=True)
class Unit:
    """One unit of work: ``item`` names it in the rows, ``caption`` is the row caption."""

    index: int
    item: str
    caption: str
    entries: tuple[Entry, ...]
    key: str


def entry_identity(entry: Entry) -> dict[str, Any]:
    """The parts of a dataset entry that decide its result (files by content hash)."""
    out: dict[str, Any] = {"id": entry.image_id, "image": file_digest(entry.path), "caption": entry.caption,
                           "problem": entry.problem}
    target_caption = getattr(entry, "target_caption", None)
    if target_caption is not None:
        out["target_caption"] = target_caption
        out["target_image"] = file_digest(getattr(entry, "target_path", None))
        out["edit_type"] = getattr(entry, "edit_type", "")
        out["blend_words"] = list(getattr(entry, "blend_words", ()))
    return out


def _caption(entries: Sequence[Entry], task: str) -> str:
    if task == "edit":
        entry = entries[0]
        return f"{entry.caption or ''} -> {getattr(entry, 'target_caption', '') or ''}"
    return " -> ".join(e.caption or "" for e in entries)


def plan_units(settings: RunSettings, dataset: Sequence[Entry]) -> list[Unit]:
    """The run's units in dataset order (``max_images`` entries at most; interpolation pairs
    consecutive entries 0-1, 2-3, ...)."""
    entries = list(dataset)[: settings.max_images] if settings.max_images is not None else list(dataset)
    groups = list(zip(entries[0::2], entries[1::2])) if settings.task == "interpolate" else [(e,) for e in entries]
    run_fields = settings.key_fields()
    units = []
    for index, group in enumerate(groups):
        item = "|".join(e.image_id for e in group)
        key = unit_key(run_fields, {"index": index, "entries": [entry_identity(e) for e in group]})
        units.append(Unit(index, item, _caption(group, settings.task), tuple(group), key))
    return units
