"""The long-tailed world: training scenes whose concepts (shape x colour) follow a long tail.

The paper's rare-concept result (Table 3) bins ImageNet classes by how often LAION-2B shows them
(head > 1M, medium, tail < 10K). Here a *concept* is one of the 28 (shape, colour) pairs; a fixed,
seeded shuffle puts :data:`BIN_SIZES` of them in the head, medium and tail bins, and the
training set shows each concept exactly :data:`COUNTS_PER_CONCEPT` times per bin (the tail a
handful of times). Every other attribute (size, position, background != colour) and the
continuous parameters are drawn as in :func:`eval.world.generator.scene`, from
``default_rng([seed, LONGTAIL_SPLIT_ID, index])``, so each scene is a pure function of
``(index, seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.world.generator import JITTER, Scene
from eval.world.grammar import COLOURS, POSITIONS, SHAPES, SIZES, Attributes

BINS: tuple[str, ...] = ("head", "medium", "tail")
BIN_SIZES: dict[str, int] = {"head": 8, "medium": 10, "tail": 10}
COUNTS_PER_CONCEPT: dict[str, int] = {"head": 2100, "medium": 315, "tail": 5}
LONGTAIL_SPLIT_ID = 7  # beside generator.SPLITS' ids 0-3: its own random stream
BIN_SEED = 2312  # the shuffle that assigns concepts to bins (fixed: the bins are part of the world)


@dataclass(frozen=True)
class Concept:
    """A (shape, colour) pair, its frequency bin and its count in the long-tailed training set."""

    shape: str
    colour: str
    bin: str
    count: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def caption(self) -> str:
        """The prompt that names the concept and nothing else (``a red circle``)."""
        return f"a {self.colour} {self.shape}"


def concepts() -> list[Concept]:
    """All 28 concepts in training order (head first), each with its bin and count."""
    pairs = [(s, c) for s in SHAPES for c in COLOURS]
    order = np.random.default_rng(BIN_SEED).permutation(len(pairs))
    out, k = [], 0
    for name in BINS:
        for i in order[k:k + BIN_SIZES[name]]:
            out.append(Concept(*pairs[int(i)], bin=name, count=COUNTS_PER_CONCEPT[name]))
        k += BIN_SIZES[name]
    return out


def train_size() -> int:
    """Scenes in the long-tailed training set (the sum of every concept's count)."""
    return sum(c.count for c in concepts())


def concept_blocks() -> list[tuple[int, Concept]]:
    """``(first training index, concept)`` per concept: training scenes lie in blocks of each count."""
    out, start = [], 0
    for c in concepts():
        out.append((start, c))
        start += c.count
    return out


def concept_of_index(index: int, blocks: list[tuple[int, Concept]] | None = None) -> Concept:
    """The concept of training scene ``index`` (``blocks``: :func:`concept_blocks`, passed to save
    recomputing it in loops)."""
    blocks = blocks or concept_blocks()
    end = blocks[-1][0] + blocks[-1][1].count
    if not 0 <= index < end:
        raise ValueError(f"long-tailed training index must be in [0, {end}), got {index}")
    return next(c for start, c in reversed(blocks) if index >= start)


def concept_scene(concept: Concept | tuple[str, str], index: int, seed: int, stream: int = LONGTAIL_SPLIT_ID) -> Scene:
    """A scene of ``concept`` with the other attributes drawn from ``rng([seed, stream, index])``."""
    shape, colour = (concept.shape, concept.colour) if isinstance(concept, Concept) else concept
    rng = np.random.default_rng([seed, stream, index])
    attrs = Attributes(shape=shape, colour=colour, size=SIZES[int(rng.integers(len(SIZES)))],
                       position=POSITIONS[int(rng.integers(len(POSITIONS)))],
                       background=[c for c in COLOURS if c != colour][int(rng.integers(len(COLOURS) - 1))])
    dx, dy = (float(v) for v in rng.uniform(-JITTER, JITTER, size=2))
    return Scene(attrs, dx, dy, float(rng.uniform()))


def longtail_scene(index: int, seed: int = 0, blocks: list[tuple[int, Concept]] | None = None) -> Scene:
    """Training scene ``index`` of the long-tailed world."""
    return concept_scene(concept_of_index(index, blocks), index, seed)


def longtail_scenes(n: int, seed: int = 0, start: int = 0) -> list[Scene]:
    """Training scenes ``start .. start + n - 1`` (the training order is by concept; the trainers
    draw random batches, so order does not matter)."""
    blocks = concept_blocks()
    return [longtail_scene(i, seed, blocks) for i in range(start, start + n)]


def reference_scenes(concept: Concept | tuple[str, str], k: int, seed: int = 0) -> list[Scene]:
    """``k`` held-out "real images" of a concept (a stream of their own, never in training)."""
    return [concept_scene(concept, i, seed, stream=LONGTAIL_SPLIT_ID + 1) for i in range(k)]
