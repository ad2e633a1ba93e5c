"""The shared per-image cache: content-keyed safetensors, atomic, and invisible in the results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from eval.cache import TensorCache, conditioning_from_tensors, conditioning_to_tensors
from eval.data import sample_dataset
from eval.tasks.reconstruct import evaluate
from eval.metrics import build_metrics
from gnri.core import Conditioning
from gnri.models.base import ScheduleSpec
from test_harness import ScriptedInverter, ToyAdapter  # noqa: E402
from test_resume import non_timing  # noqa: E402


class CountingToy(ToyAdapter):
    """The toy model, counting its encoder and text-encoder calls."""

    def __init__(self) -> None:
        self.encodes = 0
        self.prompts = 0

    def encode_images(self, images):
        self.encodes += 1
        return super().encode_images(images)

    def encode_prompts(self, prompts, guidance_scale=1.0, negative_prompts=None):
        self.prompts += 1
        return super().encode_prompts(prompts, guidance_scale, negative_prompts)


def test_put_get_round_trip_is_atomic_and_keyed_by_content(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path)
    fields = {"checkpoint": {"fingerprint": "abc"}, "image": "123"}
    assert cache.get("image", fields) is None
    latent = torch.randn(1, 4, 8, 8)
    cache.put("image", fields, {"latent": latent}, {"ceiling_psnr": 31.5})
    tensors, meta = cache.get("image", fields)  # type: ignore[misc]
    assert torch.equal(tensors["latent"], latent) and meta == {"ceiling_psnr": 31.5}
    assert cache.get("image", {**fields, "image": "124"}) is None
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written left
    path = cache.path("image", fields)
    path.write_bytes(path.read_bytes()[:20])  # a truncated file is a miss, never a crash
    assert cache.get("image", fields) is None
    assert TensorCache(None).get("image", fields) is None  # disabled


def test_conditioning_round_trips_with_and_without_negative() -> None:
    for negative in (None, {"prompt_embeds": torch.zeros(1, 3, 4)}):
        cond = Conditioning({"prompt_embeds": torch.randn(1, 3, 4), "time_ids": torch.arange(6.0)[None]}, negative,
                            7.5 if negative else 1.0, guidance_distilled=negative is None)
        back = conditioning_from_tensors(*conditioning_to_tensors(cond))
        assert back.guidance_scale == cond.guidance_scale and back.guidance_distilled == cond.guidance_distilled
        assert back.positive.keys() == cond.positive.keys()
        assert all(torch.equal(back.positive[k], v) for k, v in cond.positive.items())
        assert (back.negative is None) == (negative is None)


def test_a_second_job_reuses_the_first_jobs_encodings(tmp_path: Path) -> None:
    entries = sample_dataset()[:3]
    cache_dir = tmp_path / "cache"

    def job(name: str, cache: Path | None) -> tuple[pd.DataFrame, CountingToy]:
        toy = CountingToy()
        table = evaluate(toy, ScheduleSpec(num_steps=3), ScriptedInverter(), name, entries, build_metrics(["psnr"]),
                         out_dir=tmp_path / name, cache_dir=cache, warmup=0, progress=False)
        return table, toy

    first, toy1 = job("first", cache_dir)
    second, toy2 = job("second", cache_dir)
    plain, toy3 = job("plain", None)
    assert toy1.encodes == 1 + 3 and toy1.prompts == 3  # the probe's blank image, then every image
    assert toy2.encodes == 1 and toy2.prompts == 0  # only the probe: pixels, latents, ceilings, prompts cached
    assert toy3.encodes == 1 + 3
    drop = ["unit_key", "inverter"]
    pd.testing.assert_frame_equal(non_timing(second).drop(columns=drop), non_timing(plain).drop(columns=drop))
    pd.testing.assert_frame_equal(non_timing(first).drop(columns=drop), non_timing(plain).drop(columns=drop))


def test_lpips_from_cached_reference_features_equals_the_full_call() -> None:
    from eval.metrics.lpips_metric import LPIPS
    from lpips_guard import require_lpips_weights  # noqa: E402

    require_lpips_weights()
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 64, 48, generator=gen), torch.rand(2, 3, 64, 48, generator=gen)
    for net in ("alex", "vgg"):
        metric = LPIPS(net=net)
        full = metric(pred, target)
        split = metric.score_with(pred, metric.reference_features(target))
        assert torch.allclose(split, full, rtol=1e-5, atol=1e-6), (net, split, full)
        assert not torch.allclose(metric.score_with(pred, metric.reference_features(pred)), full)


class SplitMetric:
    """A metric with a method-free half, counting how often each half runs."""

    name, higher_is_better = "split", True

    def __init__(self) -> None:
        self.references = 0

    def unavailable_reason(self):
        return None

    def __call__(self, pred, target, prompts=None):
        return (pred - target).abs().flatten(1).mean(1)

    def reference_features(self, target, prompts=None):
        self.references += 1
        return {"target": target}

    def score_with(self, pred, features, prompts=None):
        return (pred - features["target"]).abs().flatten(1).mean(1)


def test_a_second_job_reuses_the_metrics_reference_features(tmp_path: Path) -> None:
    entries = sample_dataset()[:2]
    tables, metrics = [], []
    for name in ("first", "second"):
        metric = SplitMetric()
        tables.append(evaluate(ToyAdapter(), ScheduleSpec(num_steps=3), ScriptedInverter(), name, entries, [metric],
                               out_dir=tmp_path / name, cache_dir=tmp_path / "cache", warmup=0, progress=False))
        metrics.append(metric)
    assert metrics[0].references == 2 and metrics[1].references == 0
    plain = evaluate(ToyAdapter(), ScheduleSpec(num_steps=3), ScriptedInverter(), "second", entries, [SplitMetric()],
                     out_dir=tmp_path / "plain", warmup=0, progress=False)
    value = lambda df: df[df["metric"] == "split"]["value"].tolist()  # noqa: E731
    assert value(tables[1]) == value(plain)
