"""The long-tailed world (eval.world.longtail): bins, counts, determinism, and its model folders' options."""

from __future__ import annotations

from collections import Counter

import pytest

from eval.world.grammar import COLOURS, SHAPES
from eval.world.longtail import (BIN_SIZES, COUNTS_PER_CONCEPT, concept_blocks, concept_of_index, concepts, longtail_scene,
                                 longtail_scenes, reference_scenes, train_size)


def test_every_concept_is_in_exactly_one_bin_with_its_count():
    cs = concepts()
    assert sorted((c.shape, c.colour) for c in cs) == sorted((s, c) for s in SHAPES for c in COLOURS)
    assert Counter(c.bin for c in cs) == BIN_SIZES
    assert all(c.count == COUNTS_PER_CONCEPT[c.bin] for c in cs)
    assert train_size() == sum(BIN_SIZES[b] * COUNTS_PER_CONCEPT[b] for b in BIN_SIZES) == 20000


def test_training_scenes_show_each_concept_exactly_its_count():
    blocks = concept_blocks()
    seen = Counter((c.shape, c.colour) for c in (concept_of_index(i, blocks) for i in range(train_size())))
    assert seen == {(c.shape, c.colour): c.count for c in concepts()}
    tail_start = train_size() - BIN_SIZES["tail"] * COUNTS_PER_CONCEPT["tail"]
    for i in (0, tail_start - 1, tail_start, train_size() - 1):  # block edges: the scene carries its index's concept
        c, s = concept_of_index(i), longtail_scene(i, seed=1)
        assert (s.attrs.shape, s.attrs.colour) == (c.shape, c.colour)
    assert concept_of_index(tail_start).bin == "tail" and concept_of_index(tail_start - 1).bin == "medium"


def test_scenes_are_deterministic_and_valid():
    a, b = longtail_scene(123, seed=1), longtail_scene(123, seed=1)
    assert a == b and a != longtail_scene(123, seed=2)
    for s in longtail_scenes(50, seed=1, start=19950):
        assert s.attrs.background != s.attrs.colour
        assert s.attrs.validate() == s.attrs


def test_reference_images_are_of_the_concept_and_not_training_scenes():
    c = [c for c in concepts() if c.bin == "tail"][0]
    refs = reference_scenes(c, 3, seed=1)
    assert all((r.attrs.shape, r.attrs.colour) == (c.shape, c.colour) for r in refs)
    start = next(first for first, other in concept_blocks() if other == c)
    train = {(s.attrs, s.dx, s.dy, s.u) for s in longtail_scenes(c.count, seed=1, start=start)}
    assert len(train) == c.count and not train & {(r.attrs, r.dx, r.dy, r.u) for r in refs}


def test_out_of_range_index_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"long-tailed training index must be in \[0, 20000\), got 20000"):
        concept_of_index(20000)


def test_world_model_folder_variants():
    from eval.world_data import world_dir, world_model_folder

    assert world_model_folder("sd") == world_dir() / "sd"
    assert world_model_folder("flux", variant="world_longtail") == world_dir().parent / "world_longtail" / "flux"
    with pytest.raises(ValueError, match="model.variant must be one of"):
        world_model_folder("sd", variant="longtail")


def test_save_png_is_safe_for_concurrent_writers(tmp_path):
    """Jobs of a sweep render and cache the same scene at once: each writer uses its own temporary file."""
    import threading

    import numpy as np
    from PIL import Image

    from eval.world_data import save_png

    image = np.full((8, 8, 3), 7, dtype=np.uint8)
    target = tmp_path / "scene.png"
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(20):
                save_png(image, target)
                target.unlink(missing_ok=True)
        except BaseException as err:  # noqa: BLE001 - any error of a writer fails the test
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    save_png(image, target)
    assert not errors and (np.asarray(Image.open(target)) == 7).all()
    assert not list(tmp_path.glob("*.tmp.png"))


def test_longtail_pipeline_folders_load_with_the_worlds_shared_parts():
    """The committed long-tail folders load (their VAE / text tower / tokenizers are symlinks into
    datasets/world) and carry their own denoiser, not the world's."""
    import torch
    from diffusers import UNet2DConditionModel

    from eval.world_data import world_dir, world_model_folder

    sd = world_model_folder("sd", variant="world_longtail")
    assert (sd / "vae").is_symlink() and (sd / "vae").resolve() == (world_dir() / "sd" / "vae").resolve()
    assert not (sd / "unet").is_symlink() and not (world_model_folder("flux", variant="world_longtail") / "transformer").is_symlink()
    ours = UNet2DConditionModel.from_pretrained(sd / "unet")
    theirs = UNet2DConditionModel.from_pretrained(world_dir() / "sd" / "unet")
    a, b = next(iter(ours.state_dict().values())), next(iter(theirs.state_dict().values()))
    assert a.shape == b.shape and not torch.equal(a, b)
