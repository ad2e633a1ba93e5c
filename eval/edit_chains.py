"""Chains of successive edits for ``task=edit_chain``: the embedded world's, built from its grammar.

A :class:`ChainEntry` is an :class:`~eval.edit_data.EditEntry` whose ``caption`` is the source
scene's and whose ``steps`` are the captions after each edit, in order; each is one valid edit
of the one before (one attribute changed, :func:`eval.world.generator.changed_values`, so the
object stays visible). As an edit pair it is the one-shot edit source -> last caption:
``target_caption`` is the last step's caption, ``target_path`` its ground-truth render and
``mask()`` the pixels any edit of the chain touches, so ``task=edit`` on the same entries makes
the whole chain in one edit. ``step_masks`` hold each step's own edited region; ``edit_type``
spells the chain, ``attribute=value`` per step joined by ``>``, so it enters the unit key
(:func:`eval.units.entry_identity`) and a changed chain is a new unit.

:func:`world_chain_dataset`: chain ``i`` starts from held-out scene ``i`` (the sources of the
world's edit pairs) and draws its length (``min_steps`` .. ``max_steps``), each step's
attribute (one not yet edited while any is left, never the previous step's) and its new value
from ``numpy.random.default_rng([seed, CHAIN_STREAM, i])``. Background edits are left out by
default: a background edit touches every pixel but those the object fully covers, so a chain
holding one would leave (almost) no pixel to measure drift on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from eval.edit_data import EditEntry, Mask
from eval.world_data import default_world_cache, save_png

CHAIN_STREAM = 17  # the chains' random stream id, beside eval.world.generator.SPLITS (0..3)
OBJECT_ATTRIBUTES = ("size", "colour", "shape", "position")


@dataclass(frozen=True)
class ChainEntry(EditEntry):
    """A source and the captions after each of its successive edits (``steps``, at least one);
    ``step_masks[k]`` the edited region (H, W) bool of step ``k + 1`` at the source's size
    (empty: unknown). ``mask()`` is their union (the inherited pair fields: see the module doc)."""

    steps: tuple[str, ...] = ()
    step_masks: tuple[Mask, ...] = field(default=(), compare=False, repr=False)


def chain_steps(entry: EditEntry) -> tuple[str, ...]:
    """The captions after each edit: a chain's ``steps``, or a plain pair's target (a 1-step chain)."""
    steps = getattr(entry, "steps", ())
    if steps:
        return tuple(steps)
    return (entry.target_caption,) if entry.target_caption else ()


def union_mask(masks: Sequence[Mask]) -> np.ndarray:
    """The pixels any of ``masks`` marks as edited (bool HxW)."""
    out = np.asarray(masks[0](), dtype=bool).copy()
    for mask in masks[1:]:
        out |= np.asarray(mask(), dtype=bool)
    return out


def _step_mask(before: dict, after: dict, attribute: str) -> np.ndarray:
    from eval.world.generator import EditPair, keep_mask, scene_from_record

    return ~keep_mask(EditPair(scene_from_record(before), scene_from_record(after), attribute))


def _record(sc: object) -> dict:
    from eval.world.generator import scene_record

    return scene_record(sc)  # type: ignore[arg-type]


def world_chain(index: int, seed: int = 0, min_steps: int = 3, max_steps: int = 5,
                attributes: Sequence[str] = OBJECT_ATTRIBUTES) -> tuple[list[object], list[str]]:
    """(the scenes, source first, and each step's attribute) of chain ``index`` (see the module doc)."""
    from eval.world.generator import changed_values, scene

    rng = np.random.default_rng([seed, CHAIN_STREAM, index])
    length = int(rng.integers(min_steps, max_steps + 1))
    scenes, edited = [scene("heldout", index, seed)], []
    for _ in range(length):
        unused = [a for a in attributes if a not in edited]
        options = unused or [a for a in attributes if not edited or a != edited[-1]] or list(attributes)
        attribute = options[int(rng.integers(len(options)))]
        values = changed_values(scenes[-1].attrs, attribute)
        value = values[int(rng.integers(len(values)))]
        scenes.append(replace(scenes[-1], attrs=scenes[-1].attrs.with_(attribute, value)))
        edited.append(attribute)
    return scenes, edited


def world_chain_dataset(
    max_chains: int | None = 16,
    min_steps: int = 3,
    max_steps: int = 5,
    attributes: Sequence[str] | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> list[ChainEntry]:
    """``max_chains`` world chains of ``min_steps`` to ``max_steps`` edits of ``attributes``
    (None: size, colour, shape, position; add ``background`` at your own risk, see the module doc).
    Source and last-step renders are cached as PNGs named by their digest under ``cache_dir``."""
    from eval.world.generator import digest, render
    from eval.world.grammar import ATTRIBUTES

    chosen = tuple(attributes) if attributes is not None else OBJECT_ATTRIBUTES
    bad = [a for a in chosen if a not in ATTRIBUTES]
    if bad or not chosen:
        raise ValueError(f"dataset.attributes must be a non-empty list of {ATTRIBUTES}, got {list(chosen)}")
    if not 1 <= int(min_steps) <= int(max_steps):
        raise ValueError(f"dataset: need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    if len(chosen) < 2 and int(max_steps) > 1:
        raise ValueError("dataset.attributes: a chain of several edits needs at least two attributes")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_world_cache()
    entries = []
    for index in range(16 if max_chains is None else int(max_chains)):
        scenes, edited = world_chain(index, seed, int(min_steps), int(max_steps), chosen)
        records = [_record(sc) for sc in scenes]
        paths = []
        for sc in (scenes[0], scenes[-1]):
            image, _ = render(sc)  # type: ignore[arg-type]
            path = cache / f"{digest(image)}.png"
            save_png(image, path)
            paths.append(path)
        masks = tuple(partial(_step_mask, records[k], records[k + 1], edited[k]) for k in range(len(edited)))
        spelled = ">".join(f"{a}={r['attributes'][a]}" for a, r in zip(edited, records[1:]))
        entries.append(ChainEntry(
            f"chain_{index:03d}_{len(edited)}", paths[0], records[0]["caption"], target_caption=records[-1]["caption"],
            mask=partial(union_mask, masks), target_path=paths[1], edit_type=spelled,
            steps=tuple(r["caption"] for r in records[1:]), step_masks=masks,
        ))
    return entries


__all__ = ["ChainEntry", "chain_steps", "union_mask", "world_chain", "world_chain_dataset"]
