"""task=seed_select (eval.tasks.seed_select) and its seeds (eval.seeds): oracles by hand.

- the centroid of hand-made latents is known; NAO's correction puts it at norm s * sqrt(d - 1) (chi(d)'s
  mode) along the same direction; a zero centroid is refused;
- seeds_around keeps every seed at the seed's norm, spread 0 gives n copies of the seed (identity), and
  spread 1 gives directions independent of the seed;
- the task on the world model (2 concepts, k=2, n=2): accuracy in [0, 1] on the overall and the concept's
  bin row, the other bins unavailable; the random-seed baseline is its own method (random_seeds);
- options are refused in one line naming the option (seedselect is not implemented).
"""

from __future__ import annotations

import math

import pytest
import torch

from eval.concepts import ConceptEntry, concept_bin, folder_concept_dataset, world_concept_dataset
from eval.seeds import centroid, chi_mode, nao_centroid, seed_rule, seeds_around
from eval.tasks.seed_select import METRICS, RANDOM_LABEL, SeedOptions


def test_centroid_of_hand_made_latents() -> None:
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    b = torch.tensor([[[[3.0, 0.0], [-1.0, 8.0]]]])
    c = torch.tensor([[[[2.0, 4.0], [1.0, 0.0]]]])
    want = torch.tensor([[[[2.0, 2.0], [1.0, 4.0]]]])
    assert torch.equal(centroid([a, b, c]), want)
    assert torch.equal(centroid(torch.cat([a, b, c])), want)


def test_nao_centroid_norm_and_direction_by_hand() -> None:
    # d = 4: chi(4)'s mode sqrt(3); the centroid (1, 1, 1, 1) has norm 2, so the corrected seed is
    # (1, 1, 1, 1) * sqrt(3) / 2 (and s = 0.5 halves it)
    latents = torch.tensor([[[[2.0, 0.0], [1.0, 1.0]]], [[[0.0, 2.0], [1.0, 1.0]]]])
    got = nao_centroid(latents)
    assert got.shape == (1, 1, 2, 2)
    assert torch.allclose(got, torch.full((1, 1, 2, 2), math.sqrt(3) / 2), atol=1e-6)
    assert math.isclose(float(nao_centroid(latents, scale=0.5).norm()), 0.5 * math.sqrt(3), rel_tol=1e-6)
    assert chi_mode(4) == math.sqrt(3)
    assert torch.equal(seed_rule("centroid", latents), centroid(latents))
    with pytest.raises(ValueError, match="no direction"):
        nao_centroid(torch.stack([torch.ones(1, 2, 2), -torch.ones(1, 2, 2)]))


def test_nao_centroid_is_on_the_gaussian_shell_where_the_plain_centroid_is_not() -> None:
    g = torch.Generator().manual_seed(0)
    d = 4 * 16 * 16
    z = torch.randn(3, 4, 16, 16, generator=g)
    assert float(centroid(z).norm()) < 0.7 * math.sqrt(d)  # about sqrt(d / 3)
    assert math.isclose(float(nao_centroid(z).norm()), math.sqrt(d - 1), rel_tol=1e-5)


def test_seeds_around_keep_the_norm_and_spread_zero_is_the_identity() -> None:
    g = torch.Generator().manual_seed(1)
    seed = nao_centroid(torch.randn(3, 4, 8, 8, generator=g))
    around = seeds_around(seed, 5, 0.4, torch.Generator().manual_seed(2))
    assert around.shape == (5, 4, 8, 8)
    norms = around.flatten(1).norm(dim=1)
    assert torch.allclose(norms, seed.norm().expand(5), rtol=1e-5)
    assert len({tuple(s.flatten()[:3].tolist()) for s in around}) == 5  # distinct seeds
    copies = seeds_around(seed, 4, 0.0, torch.Generator().manual_seed(3))
    assert torch.allclose(copies, seed.expand(4, -1, -1, -1), atol=1e-6)
    cos = torch.nn.functional.cosine_similarity(around.flatten(1), seed.flatten(1))
    far = seeds_around(seed, 5, 1.0, torch.Generator().manual_seed(4))
    cos_far = torch.nn.functional.cosine_similarity(far.flatten(1), seed.flatten(1))
    assert (cos > 0.8).all() and (cos_far.abs() < 0.2).all()  # sqrt(1 - 0.16) ~ 0.92; independent ~ 1/sqrt(d)


def test_options_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"task.seed_rule=seedselect .* is not implemented"):
        SeedOptions(seed_rule="seedselect")
    with pytest.raises(ValueError, match=r"^task.seed_rule must be one of nao, centroid, got 'mean'$"):
        SeedOptions(seed_rule="mean")
    with pytest.raises(ValueError, match=r"^task.k must be an integer >= 1, got 0$"):
        SeedOptions(k=0)
    with pytest.raises(ValueError, match=r"^task.spread must be in \[0, 1\], got 1.5$"):
        SeedOptions(spread=1.5)
    with pytest.raises(ValueError, match=r"^task.seeds must be one of inverted, random"):
        SeedOptions(seeds="zeros")
    with pytest.raises(ValueError, match="is not implemented"):
        seed_rule("seedselect", torch.ones(2, 4))


def test_world_concepts_have_bins_and_references(tmp_path) -> None:
    entries = world_concept_dataset(num_references=2, cache_dir=tmp_path)
    assert len(entries) == 28
    assert [sum(e.bin == b for e in entries) for b in ("head", "medium", "tail")] == [8, 10, 10]
    first = entries[0]
    assert isinstance(first, ConceptEntry) and len(first.references) == 2 and first.path == first.references[0]
    assert concept_bin(first.image_id) == first.bin and first.caption.startswith("a ")
    assert [e.bin for e in world_concept_dataset(max_concepts=2, bins=["tail"], cache_dir=tmp_path)] == ["tail", "tail"]
    with pytest.raises(FileNotFoundError, match="dataset.path is required"):
        folder_concept_dataset(None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_concept_dataset(tmp_path / "nothing")


def test_accuracy_counts_the_checker_passes_on_hand_made_images(tmp_path) -> None:
    # the checker passes a concept's own renders and fails a blank image: 2 of 3 -> 2/3 on the overall
    # row and the concept's bin row; the other bins' rows are unavailable
    import numpy as np

    from eval.records import Unavailable
    from eval.tasks.seed_select import SeedSelect
    from eval.world.generator import render
    from eval.world.longtail import concepts, reference_scenes

    concept = [c for c in concepts() if c.bin == "tail"][0]
    entry = world_concept_dataset(bins=["tail"], max_concepts=1, num_references=1, cache_dir=tmp_path)[0]
    renders = [render(sc)[0] for sc in reference_scenes(concept, 2)]
    images = torch.from_numpy(np.stack([*renders, np.zeros_like(renders[0])])).permute(0, 3, 1, 2).float() / 255
    values = SeedSelect.accuracy(entry, images)
    assert values["rare_concept_accuracy"] == values["rare_concept_accuracy_tail"] == 2 / 3
    assert isinstance(values["rare_concept_accuracy_head"], Unavailable)
    assert isinstance(values["rare_concept_accuracy_medium"], Unavailable)
    other = ConceptEntry("tail/x", None, "a photo of a tiger cat", bin="tail")
    found = SeedSelect.accuracy(other, images)
    assert isinstance(found["rare_concept_accuracy"], Unavailable)


def _world(tmp_path, inverter: str, seeds: str):
    import baselines.ddim as ddim
    from eval.settings import RunSettings
    from eval.tasks import run
    from eval.world_data import world_adapter
    from gnri.models.base import ScheduleSpec

    adapter = world_adapter("sd", device="cpu", dtype="float32")
    schedule = ScheduleSpec(kind="euler", num_steps=4, spacing="trailing", strength=1.0, noise_seed=7865)
    options = {"k": 2, "n": 2, "spread": 0.3, "seed_rule": "nao", "seeds": seeds, "generation_guidance_scale": 3.0,
               "batch": 2, "clip": None, "save_images": False}
    settings = RunSettings(schedule, inverter, task="seed_select", task_params=options, progress=False, warmup=0,
                           out_dir=tmp_path / seeds, cache_dir=tmp_path / "cache", model="world_sd")
    dataset = world_concept_dataset(num_references=2, cache_dir=tmp_path)  # a head and a tail concept
    return run(settings, adapter, ddim.invert, [dataset[0], dataset[-1]])


def test_the_task_on_the_world_model_with_the_random_baseline(tmp_path) -> None:
    from eval.world_data import world_dir

    if not (world_dir() / "sd" / "model_index.json").is_file():
        pytest.skip("the world model (datasets/world/sd) is not here")
    for seeds, label in (("inverted", "ddim+nao"), ("random", RANDOM_LABEL)):
        table = _world(tmp_path, "ddim", seeds)
        assert set(table["inverter"]) == {label}
        assert list(table["metric"].unique()) == list(METRICS)
        assert len(table) == 2 * len(METRICS)
        for image, rows in table.groupby("image"):
            bin_ = concept_bin(str(image))
            ok = rows[rows["status"] == "ok"].set_index("metric")["value"]
            for name in ("rare_concept_accuracy", f"rare_concept_accuracy_{bin_}"):
                assert 0.0 <= ok[name] <= 1.0 and ok[name] * 2 == round(ok[name] * 2)  # n = 2 images
            others = rows[rows["metric"].str.startswith("rare_concept_accuracy_")
                          & (rows["metric"] != f"rare_concept_accuracy_{bin_}")]
            assert (others["status"] == "unavailable").all() and len(others) == 2
            assert ok["rare_concept_time_s"] > 0
            # inverted: 2 inversions of 4 DDIM steps (4 calls each) + 4 steps at CFG (2 calls each); random: 8
            assert ok["rare_concept_nfe_forward"] == (16 if seeds == "inverted" else 8)
            assert rows.set_index("metric").loc["rare_concept_clip", "status"] == "unavailable"


def test_world_concepts_carry_each_references_full_caption(tmp_path):
    """The world models were trained on full captions: each reference is inverted (and seeds generated)
    with its own caption, which states the concept; the concept's caption alone stays the scored one."""
    from eval.concepts import world_concept_dataset
    from eval.tasks.seed_select import SeedOptions, SeedSelect
    from eval.world.grammar import parse

    entry = world_concept_dataset(max_concepts=1, num_references=3, cache_dir=tmp_path)[0]
    assert len(entry.reference_captions) == 3 and len(set(entry.reference_captions)) > 1
    concept = parse(entry.caption)
    for text in entry.reference_captions:
        attrs = parse(text)
        assert (attrs.shape, attrs.colour) == (concept.shape, concept.colour) and attrs.background is not None
    task = SeedSelect.__new__(SeedSelect)
    task.options = SeedOptions(prompt="references")
    assert [task.prompt(entry, i) for i in range(3)] == list(entry.reference_captions)
    task.options = SeedOptions(prompt="concept")
    assert task.prompt(entry, 2) == entry.caption
