"""Concept datasets for ``task=seed_select`` (GNRI Table 3: rare-concept generation from inverted seeds).

A :class:`ConceptEntry` is one concept: ``caption`` the prompt that names it, ``bin`` its
frequency bin (``head`` / ``medium`` / ``tail``), ``references`` the paths of its "real images"
(the task inverts the first ``task.k``). ``image_id`` is ``<bin>/<name>`` so the report can split
rows by bin and paired verdicts pair methods concept by concept; ``path`` is the first reference.

- :func:`world_concept_dataset`: the long-tailed world's 28 concepts (:mod:`eval.world.longtail`), each
  with ``num_references`` held-out renders (:func:`eval.world.longtail.reference_scenes`), cached
  as PNGs named by their digest, and each render's full world caption (``reference_captions``: the
  world's models were trained on captions that state all five attributes, so ``a red circle`` alone
  is outside what they saw);
- :func:`folder_concept_dataset`: real images in ``<path>/<bin>/<concept>/*.{jpg,png,...}`` (e.g.
  ImageNet classes binned by LAION-2B frequency as in the paper: head > 1M, tail < 10K); the
  caption is ``caption_template`` with the folder name (underscores as spaces).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from eval.data import IMAGE_SUFFIXES, Entry

BINS = ("head", "medium", "tail")


@dataclass(frozen=True)
class ConceptEntry(Entry):
    """One concept: its bin and its reference images (see the module doc)."""

    bin: str = ""
    references: tuple[Path, ...] = field(default=(), compare=False)
    reference_captions: tuple[str, ...] = field(default=(), compare=False)  # one per reference; () : ``caption``

    def prompt_of(self, i: int) -> str:
        """The caption of reference ``i`` (the concept's caption where none is given)."""
        return self.reference_captions[i] if i < len(self.reference_captions) else (self.caption or "")

    @property
    def name(self) -> str:
        return self.image_id.split("/", 1)[-1]


def concept_bin(image_id: str) -> str:
    """The bin of a concept row's image id (``tail/red_circle`` -> ``tail``; no bin: ``""``)."""
    head, sep, _ = image_id.partition("/")
    return head if sep and head in BINS else ""


def world_concept_dataset(max_concepts: int | None = None, num_references: int = 8, seed: int = 0,
                   bins: Sequence[str] | None = None, cache_dir: str | Path | None = None) -> list[ConceptEntry]:
    """The long-tailed world's concepts (head first, as :func:`eval.world.longtail.concepts`),
    ``bins`` only (None: all three), the first ``max_concepts`` of them, each with
    ``num_references`` held-out renders."""
    from eval.world.generator import digest, render
    from eval.world.longtail import concepts, reference_scenes
    from eval.world_data import default_world_cache, save_png

    chosen = tuple(bins) if bins is not None else BINS
    bad = [b for b in chosen if b not in BINS]
    if bad or not chosen:
        raise ValueError(f"dataset.bins must be a non-empty list of {BINS}, got {list(chosen)}")
    if int(num_references) < 1:
        raise ValueError(f"dataset.num_references must be >= 1, got {num_references}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_world_cache()
    entries = []
    for concept in [c for c in concepts() if c.bin in chosen]:
        paths, scenes = [], reference_scenes(concept, int(num_references), seed)
        for sc in scenes:
            image, _ = render(sc)
            path = cache / f"{digest(image)}.png"
            save_png(image, path)
            paths.append(path)
        name = f"{concept.colour}_{concept.shape}"
        entries.append(ConceptEntry(f"{concept.bin}/{name}", paths[0], concept.caption, bin=concept.bin,
                                    references=tuple(paths), reference_captions=tuple(sc.caption for sc in scenes)))
    return entries[: int(max_concepts)] if max_concepts is not None else entries


def folder_concept_dataset(path: str | Path | None, caption_template: str = "a photo of a {name}",
                    max_concepts: int | None = None) -> list[ConceptEntry]:
    """Concepts from ``<path>/<bin>/<concept>/<images>`` (see the module doc), bins in order
    head, medium, tail, concepts sorted; one-line errors for a missing or empty folder."""
    if path is None or str(path) in ("", "???"):
        raise FileNotFoundError("dataset.path is required: a folder <path>/{head,medium,tail}/<concept>/<images> "
                                "of real images per concept (e.g. ImageNet classes binned by LAION frequency)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.path: folder {str(root)!r} does not exist (expected "
                                "<path>/{head,medium,tail}/<concept>/<images>)")
    entries = []
    for name in BINS:
        folder = root / name
        for concept in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
            images = tuple(sorted(p for p in concept.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            caption = caption_template.format(name=concept.name.replace("_", " "))
            problem = None if images else f"no images in {concept}"
            entries.append(ConceptEntry(f"{name}/{concept.name}", images[0] if images else None, caption,
                                        problem=problem, bin=name, references=images))
    if not entries:
        raise FileNotFoundError(f"dataset.path: {str(root)!r} has no <bin>/<concept>/ folders "
                                f"(bins: {', '.join(BINS)})")
    return entries[: int(max_concepts)] if max_concepts is not None else entries


__all__ = ["BINS", "ConceptEntry", "concept_bin", "folder_concept_dataset", "world_concept_dataset"]
