"""The embedded world: captioned 64x64 scenes of one shape on a plain background.

``grammar``: attribute vocabulary, captions and their parser; ``generator``: seeded scenes,
renders with object masks, splits, edit pairs, manifests; ``checker``: whether an image shows
what a caption says. Trained models live in ``datasets/world/`` (see its MODEL_CARD.md).
"""

from eval.world.checker import Verdict, check, detect
from eval.world.generator import (IMAGE_SIZE, EditPair, Scene, edit_pair, heldout_distractors, keep_mask, render,
                                  render_many, scene, scenes)
from eval.world.grammar import ATTRIBUTES, Attributes, caption, parse

__all__ = [
    "ATTRIBUTES", "IMAGE_SIZE", "Attributes", "EditPair", "Scene", "Verdict", "caption", "check", "detect",
    "edit_pair", "heldout_distractors", "keep_mask", "parse", "render", "render_many", "scene", "scenes",
]
