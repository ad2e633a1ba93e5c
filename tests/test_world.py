"""The embedded world: generator determinism, checker correctness, masks, edit pairs, and the
committed model folders loading offline through diffusers'/transformers' from_pretrained."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from eval.world import checker, generator as gen, grammar  # noqa: E402
from eval.world.grammar import ATTRIBUTES, Attributes, caption, parse  # noqa: E402

WORLD = Path(__file__).resolve().parents[1] / "datasets" / "world"
N = 120


@pytest.fixture(scope="module")
def heldout_rows() -> list[dict]:
    return gen.read_jsonl(WORLD / "manifests" / "heldout.jsonl")


def test_scenes_are_deterministic_and_splits_differ() -> None:
    a, b = gen.scenes("heldout", 20, seed=0), gen.scenes("heldout", 20, seed=0)
    assert a == b
    assert [gen.digest(gen.render(s)[0]) for s in a] == [gen.digest(gen.render(s)[0]) for s in b]
    assert gen.scenes("train", 20) != a and gen.scenes("heldout", 20, seed=1) != a
    assert gen.scene("heldout", 7) == a[7]  # random access by index


def test_manifest_matches_the_generator(heldout_rows: list[dict]) -> None:
    for row in heldout_rows[:50]:
        sc = gen.scene("heldout", row["index"], row["seed"])
        assert gen.scene_from_record(row) == sc and row["caption"] == sc.caption
        assert gen.digest(gen.render(sc)[0]) == row["sha256"]
        assert [caption(a) for a in gen.heldout_distractors(row["index"], 4, row["seed"])] == row["distractors"]


def test_captions_round_trip_and_bad_captions_fail() -> None:
    for sc in gen.scenes("train", 200):
        assert parse(sc.caption) == sc.attrs
    assert parse("a red circle") == Attributes(shape="circle", colour="red")
    assert parse("A large square in the centre on a blue background.") == Attributes(
        shape="square", size="large", position="center", background="blue")
    assert caption(Attributes(shape="circle", colour="yellow", background="white")) == \
        "a yellow circle on a white background"
    for bad in ("a red", "a pink circle", "a red circle at the moon", "two dogs"):
        with pytest.raises(ValueError):
            parse(bad)


def test_render_and_mask() -> None:
    sc = gen.scene("train", 3)
    img, mask = gen.render(sc)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and mask.shape == (64, 64) and mask.dtype == bool
    assert np.all(img[mask.sum(1) == 0][:, 0] == gen.RGB[sc.attrs.background])  # empty rows show background
    fg = img[gen.shape_coverage(sc.attrs.shape, sc.box(), 64) == 1.0]
    assert len(fg) > 0 and np.all(fg == gen.RGB[sc.attrs.colour])
    cx, cy, side, _ = sc.box()
    for shape, area in gen.SHAPE_AREA.items():  # the checker relies on these geometric constants
        cov = gen.shape_coverage(shape, (32.0, 32.0, 30.0, 30.0), 64, supersample=8)
        ys = np.arange(64) + 0.5
        assert cov.sum() == pytest.approx(area * 900, rel=0.01)
        assert (cov.sum(1) * ys).sum() / cov.sum() - 32 == pytest.approx(gen.SHAPE_CENTROID_DY[shape] * 30, abs=0.1)
    small = gen.Scene(Attributes("square", "red", "small", "center", "blue"), 0.0, 0.0, 1.0)
    large = gen.Scene(Attributes("square", "red", "large", "center", "blue"), 0.0, 0.0, 0.0)
    assert gen.render(small)[1].sum() < gen.render(large)[1].sum()


def test_checker_accepts_every_generated_scene_and_recovers_its_mask() -> None:
    for sc in gen.scenes("heldout", N):
        img, mask = gen.render(sc)
        v = checker.check(img, sc.caption)
        assert v.ok, (sc.caption, v.found, v.checks)
        assert v.found == sc.attrs and np.array_equal(v.mask, mask)
        assert checker.check(torch.from_numpy(img).permute(2, 0, 1).float() / 255, sc.caption).ok  # tensor input


def test_checker_rejects_wrong_captions_and_broken_images() -> None:
    rng = np.random.default_rng(0)
    for sc in gen.scenes("heldout", N):
        img, _ = gen.render(sc)
        for wrong in gen.distractors(sc.attrs, 4, rng):
            verdict = checker.check(img, wrong)
            changed = [a for a in ATTRIBUTES if getattr(wrong, a) != getattr(sc.attrs, a)]
            assert not verdict.ok and [k for k, ok in verdict.checks.items() if not ok] == changed
    sc = gen.scene("heldout", 0)
    img, _ = gen.render(sc)
    blank = np.broadcast_to(np.asarray(gen.RGB[sc.attrs.background], np.uint8), img.shape)
    v = checker.check(blank, sc.caption)
    assert not v.ok and not v.checks["count"] and v.checks["background"]
    other = gen.Scene(sc.attrs.with_("position", "bottom right" if sc.attrs.position == "top left" else "top left"),
                      0.0, 0.0, 0.5)
    both = np.where(gen.render(other)[1][..., None], gen.render(other)[0], img)
    v2 = checker.check(both, sc.caption)
    assert not v2.ok and not v2.checks["count"]
    noisy = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)  # mild noise is tolerated
    assert checker.check(noisy, sc.caption).ok
    assert checker.check(img, grammar.caption(Attributes(shape=sc.attrs.shape))).ok  # partial captions


def test_edit_pairs_change_exactly_one_attribute() -> None:
    seen = set()
    for i in range(N):
        pair = gen.edit_pair(i)
        seen.add(pair.attribute)
        src, tgt = pair.source.attrs.stated(), pair.target.attrs.stated()
        assert [k for k in src if src[k] != tgt[k]] == [pair.attribute]
        assert (pair.source.dx, pair.source.dy, pair.source.u) == (pair.target.dx, pair.target.dy, pair.target.u)
        (a, _), (b, _) = gen.render(pair.source), gen.render(pair.target)
        assert checker.check(b, pair.target.caption).ok and not checker.check(b, pair.source.caption).ok
        keep = gen.keep_mask(pair)
        assert keep.any() and np.array_equal(a[keep], b[keep]) and not np.array_equal(a, b)
    assert seen == set(ATTRIBUTES)
    rows = gen.read_jsonl(WORLD / "manifests" / "edits.jsonl")
    assert rows[5]["target"]["caption"] == gen.edit_pair(5).target.caption


def test_tokenizers_give_each_grammar_word_one_token() -> None:
    from transformers import CLIPTokenizer, T5Tokenizer

    clip_tok = CLIPTokenizer.from_pretrained(WORLD / "sd" / "tokenizer")
    t5_tok = T5Tokenizer.from_pretrained(WORLD / "flux" / "tokenizer_2")
    words = grammar.vocabulary()
    assert clip_tok.model_max_length == 77
    assert len(clip_tok(" ".join(words)).input_ids) == len(words) + 2
    assert len(t5_tok(" ".join(words)).input_ids) == len(words) + 1
    assert len(clip_tok("an unseen zebra!").input_ids) > 4  # other text falls back to pieces


def test_model_folders_load_offline_with_the_expected_classes() -> None:
    from diffusers import (AutoencoderKL, DDIMScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline,
                           FluxTransformer2DModel, StableDiffusionPipeline, UNet2DConditionModel)
    from transformers import CLIPModel, CLIPProcessor, CLIPTextModel, CLIPTokenizer, T5EncoderModel

    sd = StableDiffusionPipeline.from_pretrained(WORLD / "sd")
    assert isinstance(sd.unet, UNet2DConditionModel) and isinstance(sd.vae, AutoencoderKL)
    assert isinstance(sd.text_encoder, CLIPTextModel) and isinstance(sd.tokenizer, CLIPTokenizer)
    assert isinstance(sd.scheduler, DDIMScheduler) and sd.scheduler.config.clip_sample is False
    assert sd.scheduler.config.prediction_type == "epsilon"
    flux = FluxPipeline.from_pretrained(WORLD / "flux")
    assert isinstance(flux.transformer, FluxTransformer2DModel) and isinstance(flux.text_encoder_2, T5EncoderModel)
    assert isinstance(flux.scheduler, FlowMatchEulerDiscreteScheduler) and flux.vae.config.shift_factor is not None
    clip = CLIPModel.from_pretrained(WORLD / "clip")
    CLIPProcessor.from_pretrained(WORLD / "clip")
    for p in (sd, flux):  # one text tower, one autoencoder, float32 everywhere
        assert all(t.dtype == torch.float32 for m in (p.vae, p.text_encoder) for t in m.state_dict().values())
        for k, v in clip.text_model.state_dict().items():
            assert torch.equal(v, p.text_encoder.state_dict()[k])
    for k, v in sd.vae.state_dict().items():
        assert torch.equal(v, flux.vae.state_dict()[k])
    settings = json.loads((WORLD / "world.json").read_text())
    assert settings["image_size"] == gen.IMAGE_SIZE == sd.unet.config.sample_size * sd.vae_scale_factor


@torch.no_grad()
def test_pipelines_generate_world_sized_images() -> None:
    from diffusers import FluxPipeline, StableDiffusionPipeline

    settings = json.loads((WORLD / "world.json").read_text())
    prompt = gen.scene("heldout", 0).caption
    sd = StableDiffusionPipeline.from_pretrained(WORLD / "sd")
    sd.set_progress_bar_config(disable=True)
    img = sd(prompt, num_inference_steps=2, guidance_scale=2.0, output_type="pt").images
    assert img.shape == (1, 3, 64, 64) and 0 <= img.min() and img.max() <= 1
    flux = FluxPipeline.from_pretrained(WORLD / "flux")
    flux.set_progress_bar_config(disable=True)
    img = flux(prompt, num_inference_steps=2, height=64, width=64, output_type="pt",
               max_sequence_length=settings["flux"]["max_sequence_length"]).images
    assert img.shape == (1, 3, 64, 64)


def test_weights_fit_the_budget() -> None:
    total = sum(p.stat().st_size for p in WORLD.rglob("*.safetensors"))
    assert 0 < total <= 40e6, f"world weights take {total / 1e6:.1f} MB (budget 40 MB)"
