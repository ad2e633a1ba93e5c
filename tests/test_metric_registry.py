"""One metric registry: the Sample/Metric protocol, the edit metrics against by-hand formulas and the
masked-metric oracles (values, unavailable reasons, failure strings), scoring, the cached source
half, the diagnostic tables and the one PSNR."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import pytest
import torch

from eval.metrics import build_metrics, registry
from eval.metrics.base import CachedReference, MetricUnavailable, Sample
from eval.metrics.diagnostics import (
    DIAGNOSTICS, EDIT_DIAGNOSTICS, EDIT_METRIC_ORDER, EXACT_METRICS, INTERP_METRICS, directions,
)
from eval.metrics.edit import (
    NO_CLIP, NO_MASK, NO_TARGET, STRUCTURE_REASON, WHOLE_REGION, BgLPIPS, BgMSE, BgPSNR, BgSSIM, ClipEdited, ClipWhole,
    EditSuccess, LpipsToSource, ReconPSNR, ReconSuccess, Structure, TargetPSNR, build_edit_metrics,
)
from eval.metrics.lpips_metric import LPIPS
from eval.metrics.masked import (
    MaskedLPIPS, MaskedSSIM, masked_mse, masked_psnr, pie_lpips, pie_mse, pie_psnr, pie_ssim, region_image, to_8bit,
)
from eval.metrics.psnr import PSNR
from eval.metrics.scoring import score, unavailable_reasons
from eval.metrics.ssim import SSIM
from eval.records import Unavailable
from gnri.quality import psnr
from lpips_guard import lpips_expected

ROOT = Path(__file__).resolve().parents[1]
EDIT_NAMES = [n for n in EDIT_METRIC_ORDER if n not in EDIT_DIAGNOSTICS]


@pytest.fixture(scope="module")
def sample() -> Sample:
    """48 px source / edit that differ only inside the region (plus a reconstruction and a target)."""
    g = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, 48, 48, generator=g)
    region = torch.zeros(48, 48, dtype=torch.bool)
    region[10:30, 12:28] = True
    edit = torch.where(region, torch.rand(1, 3, 48, 48, generator=g), source)
    recon = (source + 0.03 * torch.randn(source.shape, generator=g)).clamp(0, 1)
    target = (edit + 0.05 * torch.randn(source.shape, generator=g)).clamp(0, 1)
    return Sample(edit, source, "a red circle", "a blue circle", region, target, recon)


@pytest.fixture(scope="module")
def noisy(sample: Sample) -> Sample:
    """The same pair with the background changed too (finite background numbers)."""
    g = torch.Generator().manual_seed(1)
    edit = (sample.candidate + 0.04 * torch.randn(sample.candidate.shape, generator=g)).clamp(0, 1)
    return Sample(edit, sample.reference, sample.caption, sample.source_caption, sample.region, sample.target,
                  sample.reconstruction)


def _with(s: Sample, **changes: object) -> Sample:
    from dataclasses import replace

    return replace(s, **changes)


@dataclass
class FakeClip:
    """A CLIP stand-in: the mean pixel x 100 of ``pred`` (records what it was given)."""

    reason: str | None = None
    name: str = "clip_score"
    higher_is_better: bool = True

    def unavailable_reason(self) -> str | None:
        return self.reason

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        assert prompts is not None and len(prompts) == pred.shape[0]
        self.prompts = prompts
        return 100 * pred.flatten(1).mean(1)


# ---------------------------------------------------------------- the one PSNR


def test_psnr_is_one_formula_in_gnri() -> None:
    from eval.metrics import psnr as eval_psnr

    assert eval_psnr.psnr is psnr
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 3, 8, 8, generator=g)
    by_hand = (10.0 * torch.log10(1.0 / (a.double() - b.double()).flatten(1).pow(2).mean(1))).float()
    assert torch.equal(psnr(a, b), by_hand) and psnr(a, b).dtype == torch.float32 and psnr(a, b).shape == (3,)
    assert torch.equal(psnr(a * 2, b * 2, data_range=2.0), (10.0 * torch.log10(4.0 / (2 * a.double() - 2 * b.double())
                                                                             .flatten(1).pow(2).mean(1))).float())
    assert torch.isinf(psnr(a, a)).all()
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, b[:1])
    assert "eval" not in Path(ROOT / "gnri" / "quality.py").read_text().split('"""')[-1].replace("eval.metrics", "")


# ---------------------------------------------------------------- protocol


def test_sample_is_frozen_and_pair_metrics_score_it(sample: Sample) -> None:
    with pytest.raises(FrozenInstanceError):
        sample.caption = "x"  # type: ignore[misc]
    assert Sample(sample.candidate, sample.reference, "c").region is None
    assert torch.equal(PSNR().score(sample), psnr(sample.candidate, sample.reference))
    assert torch.equal(SSIM().score(sample), SSIM()(sample.candidate, sample.reference))
    clip = FakeClip()
    from eval.metrics.clip_score import CLIPScore

    assert hasattr(CLIPScore, "score") and hasattr(LPIPS, "score")
    assert isinstance(LPIPS(), CachedReference) and isinstance(LpipsToSource(), CachedReference)
    assert not isinstance(PSNR(), CachedReference) and not isinstance(clip, CachedReference)


def test_cached_reference_equals_uncached_score(noisy: Sample) -> None:
    for metric in (LPIPS(), LpipsToSource()):
        if metric.unavailable_reason() is not None:
            assert not lpips_expected(), metric.unavailable_reason()
            pytest.skip(f"no LPIPS weights: {metric.unavailable_reason()}")
        plain = score([metric], noisy)
        calls = []

        def features(m: object) -> object:
            calls.append(m)
            return m.reference_features(noisy.reference, [noisy.caption])  # type: ignore[attr-defined]

        cached = score([metric], noisy, features=features)
        assert calls == [metric] and isinstance(plain[metric.name], float)
        assert cached[metric.name] == pytest.approx(plain[metric.name], abs=1e-6)
        assert plain[metric.name] == float(LPIPS()(noisy.candidate, noisy.reference)[0])


# ---------------------------------------------------------------- edit metrics: values


def test_background_metrics_region_convention(sample: Sample, noisy: Sample) -> None:
    keep = ~noisy.region  # type: ignore[operator]
    out = score([BgPSNR(), BgMSE(), BgSSIM()], noisy)
    assert out["bg_psnr"] == masked_psnr(noisy.candidate, noisy.reference, keep).item()
    assert out["bg_mse"] == masked_mse(noisy.candidate, noisy.reference, keep).item()
    assert out["bg_ssim"] == MaskedSSIM()(noisy.candidate, noisy.reference, keep).item()
    diff = (noisy.candidate.double() - noisy.reference.double()).pow(2)[0]  # by hand: mean over the background
    by_hand = diff[:, keep].mean().item()
    assert out["bg_mse"] == pytest.approx(by_hand, rel=1e-12)
    assert out["bg_psnr"] == pytest.approx(10 * math.log10(1 / by_hand), rel=1e-12)
    # differences inside the edited region only: the background is untouched
    clean = score([BgPSNR(), BgMSE(), BgSSIM()], sample)
    assert clean["bg_psnr"] == math.inf and clean["bg_mse"] == 0.0 and clean["bg_ssim"] == pytest.approx(1.0, abs=1e-6)


def test_background_metrics_piebench_convention(noisy: Sample) -> None:
    keep = ~noisy.region  # type: ignore[operator]
    out = score([BgPSNR("piebench"), BgMSE("piebench"), BgSSIM("piebench")], noisy)
    assert out["bg_psnr"] == pie_psnr(noisy.candidate, noisy.reference, keep).item()
    assert out["bg_mse"] == pie_mse(noisy.candidate, noisy.reference, keep).item()
    assert out["bg_ssim"] == pie_ssim(noisy.candidate, noisy.reference, keep).item()
    a, b = (to_8bit(x).double() * keep for x in (noisy.candidate, noisy.reference))
    assert out["bg_mse"] == pytest.approx((a - b).pow(2).mean().item(), rel=1e-12)  # zeros included


@pytest.mark.parametrize("convention", ["region", "piebench"])
def test_background_lpips(noisy: Sample, convention: str) -> None:
    metric = BgLPIPS(convention)
    if metric.unavailable_reason() is not None:
        assert not lpips_expected(), metric.unavailable_reason()
        pytest.skip(f"no LPIPS weights: {metric.unavailable_reason()}")
    keep = ~noisy.region  # type: ignore[operator]
    value = score([metric], noisy)["bg_lpips"]
    if convention == "region":
        assert value == MaskedLPIPS()(noisy.candidate, noisy.reference, keep).item()
    else:
        assert value == pie_lpips(LPIPS(), noisy.candidate, noisy.reference, keep).item()


def test_clip_whole_and_edited(noisy: Sample) -> None:
    clip = FakeClip()
    out = score([ClipWhole(clip=clip), ClipEdited(clip=clip)], noisy)
    assert out["clip_whole"] == float(100 * noisy.candidate.mean())
    region = noisy.region
    assert region is not None
    assert out["clip_edited"] == float(100 * region_image(noisy.candidate, region).mean())
    assert clip.prompts == [noisy.caption]
    pie = score([ClipWhole("piebench", clip), ClipEdited("piebench", clip)], noisy)
    assert pie["clip_whole"] == float(100 * to_8bit(noisy.candidate).mean())
    assert pie["clip_edited"] == float(100 * region_image(to_8bit(noisy.candidate), region).mean())


def test_whole_image_metrics(noisy: Sample) -> None:
    @dataclass
    class FakeStructure:
        def unavailable_reason(self) -> str | None:
            return None

        def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return (pred - target).abs().flatten(1).mean(1)

    out = score([Structure(FakeStructure()), TargetPSNR(), ReconPSNR()], noisy)  # type: ignore[arg-type]
    assert out["structure_distance"] == float((noisy.candidate - noisy.reference).abs().mean())
    assert out["target_psnr"] == psnr(noisy.candidate, noisy.target)[0].item()  # type: ignore[arg-type]
    assert out["recon_psnr"] == psnr(noisy.reconstruction, noisy.reference)[0].item()  # type: ignore[arg-type]


def test_world_checker_metrics(tmp_path: Path) -> None:
    from eval.edit_data import world_edit_dataset
    from gnri.images import fit_to_size, load_image

    entry = world_edit_dataset(cache_dir=tmp_path, max_pairs=1)[0]
    source = fit_to_size(load_image(entry.path), (64, 64))[None]
    target = fit_to_size(load_image(entry.target_path), (64, 64))[None]  # type: ignore[arg-type]
    hit = Sample(target, source, entry.target_caption or "", entry.caption or "", reconstruction=source)
    assert score([EditSuccess(), ReconSuccess()], hit) == {"edit_success": 1.0, "recon_success": 1.0}
    miss = Sample(source, source, entry.target_caption or "", entry.caption or "", reconstruction=target)
    assert score([EditSuccess(), ReconSuccess()], miss) == {"edit_success": 0.0, "recon_success": 0.0}


# ---------------------------------------------------------------- edit metrics: unavailable and failing


def test_unavailable_reasons_of_the_pair(noisy: Sample) -> None:
    metrics = build_edit_metrics(clip=FakeClip(), structure={"weights": "/nonexistent/dino.pth"})
    not_world = {"caption": "a photo of a cat", "source_caption": "a dog"}
    unmasked = score(metrics, _with(noisy, region=None, target=None, **not_world))
    for name in ("bg_psnr", "bg_ssim", "bg_lpips", "bg_mse", "clip_edited"):
        assert unmasked[name] == Unavailable(NO_MASK), name
    assert unmasked["target_psnr"] == Unavailable(NO_TARGET)
    whole = score(metrics, _with(noisy, region=torch.ones(48, 48, dtype=torch.bool)))
    for name in ("bg_psnr", "bg_ssim", "bg_lpips", "bg_mse"):
        assert whole[name] == Unavailable(WHOLE_REGION), name
    grammar = "the caption is not of the embedded world's grammar; the checker reads world scenes only"
    assert unmasked["edit_success"] == Unavailable(grammar) and unmasked["recon_success"] == Unavailable(grammar)
    reason = unmasked["structure_distance"]
    assert isinstance(reason, Unavailable) and "weights=/nonexistent/dino.pth" in reason.reason


def test_unavailable_weights_and_missing_metrics(noisy: Sample) -> None:
    no_clip = score([ClipWhole(), ClipEdited(), Structure()], noisy)
    assert no_clip == {"clip_whole": Unavailable(NO_CLIP), "clip_edited": Unavailable(NO_CLIP),
                       "structure_distance": Unavailable(STRUCTURE_REASON)}
    # the pair's own lack comes first (today's order), then the weights
    assert score([ClipEdited()], _with(noisy, region=None)) == {"clip_edited": Unavailable(NO_MASK)}
    clip = FakeClip(reason="clip_score: no weights here")
    assert score([ClipWhole(clip=clip)], noisy) == {"clip_whole": Unavailable("clip_score: no weights here")}

    class NoWeights(LPIPS):
        def unavailable_reason(self) -> str | None:
            return "lpips alex: no real backbone weights"

    class NoMaskedWeights(MaskedLPIPS):
        def unavailable_reason(self) -> str | None:
            return "lpips alex: no real backbone weights"

    missing = Unavailable("lpips alex: no real backbone weights")
    metrics = [BgLPIPS("piebench", lpips=NoWeights()), BgLPIPS("region", masked=NoMaskedWeights()),
               LpipsToSource(lpips=NoWeights())]
    out = [score([m], noisy)[m.name] for m in metrics]
    assert out == [missing] * 3
    assert score([metrics[0]], _with(noisy, region=None)) == {"bg_lpips": Unavailable(NO_MASK)}
    cached = score(metrics[2:], noisy, features=lambda m: m.reference_features(noisy.reference))  # type: ignore[attr-defined]
    assert cached == {"lpips_to_source": missing}
    assert unavailable_reasons(metrics[2:]) == {"lpips_to_source": "lpips alex: no real backbone weights"}


def test_world_not_importable(noisy: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "eval.world.checker", None)  # importing it now raises ImportError
    out = score([EditSuccess(), ReconSuccess()], noisy)
    for value in out.values():
        assert isinstance(value, Unavailable)
        assert value.reason.startswith("the embedded world (eval.world) is not importable: ")
    assert set(unavailable_reasons([EditSuccess()])) == {"edit_success"}


def test_scoring_failures_unavailable_map_and_no_grad(noisy: Sample, caplog: pytest.LogCaptureFixture) -> None:
    @dataclass
    class Raising:
        name: str = "raising"
        higher_is_better: bool = True

        def unavailable_reason(self) -> str | None:
            raise OSError("disk gone\nsecond line")

        def score(self, sample: Sample) -> torch.Tensor:
            raise ValueError("bad input here\nmore detail")

    @dataclass
    class GradFree:
        name: str = "grad_free"
        higher_is_better: bool = True

        def unavailable_reason(self) -> str | None:
            return None

        def score(self, sample: Sample) -> torch.Tensor:
            return torch.tensor([0.0 if torch.is_grad_enabled() else 2.5])

    @dataclass
    class NotHere(GradFree):
        name: str = "not_here"

        def score(self, sample: Sample) -> torch.Tensor:
            raise MetricUnavailable("does not apply")

    with caplog.at_level(logging.ERROR, logger="eval.metrics.scoring"):
        out = score([Raising(), GradFree(), NotHere(), PSNR()], noisy, unavailable={"psnr": "told so"})
    assert out == {"raising": "ValueError: bad input here", "grad_free": 2.5, "not_here": Unavailable("does not apply"),
                   "psnr": Unavailable("told so")}
    assert list(out) == ["raising", "grad_free", "not_here", "psnr"]
    assert "metric raising failed" in caplog.text
    assert unavailable_reasons([Raising(), GradFree(), ClipWhole()]) == {
        "raising": "availability check raised OSError: disk gone", "clip_whole": NO_CLIP}
    # a broken input fails that metric alone, as a one-line reason
    bad = score([BgPSNR(), TargetPSNR()], _with(noisy, region=torch.zeros(7, 7, dtype=torch.bool),
                                               target=noisy.candidate[:, :, :8]))
    assert bad["bg_psnr"].startswith("ValueError: masked metric: mask (7, 7) does not fit")  # type: ignore[union-attr]
    assert bad["target_psnr"] == "ValueError: psnr: shapes differ, (1, 3, 48, 48) vs (1, 3, 8, 48)"


# ---------------------------------------------------------------- registry, build, diagnostics


def test_build_edit_metrics_order_sharing_and_convention() -> None:
    metrics = build_edit_metrics("piebench", clip=FakeClip())
    assert [m.name for m in metrics] == EDIT_NAMES == [
        "edit_success", "recon_success", "bg_psnr", "bg_ssim", "bg_lpips", "bg_mse", "lpips_to_source", "clip_whole",
        "clip_edited", "structure_distance", "structure_distance_standin", "target_psnr", "recon_psnr"]
    by = {m.name: m for m in metrics}
    assert by["bg_lpips"].lpips is by["lpips_to_source"].lpips  # type: ignore[attr-defined]
    assert by["clip_whole"].clip is by["clip_edited"].clip  # type: ignore[attr-defined]
    assert all(m.convention == "piebench" for m in metrics if hasattr(m, "convention"))  # type: ignore[attr-defined]
    assert {m.name: m.higher_is_better for m in metrics} == {n: directions([n])[n] for n in EDIT_NAMES}
    with pytest.raises(ValueError, match=r"^task.mask_convention must be one of \('region', 'piebench'\), got 'zero'$"):
        build_edit_metrics("zero")
    with pytest.raises(ValueError, match="task.mask_convention"):
        BgPSNR("zero")
    region = build_edit_metrics()
    assert isinstance(region[4], BgLPIPS) and isinstance(region[4].masked, MaskedLPIPS) and region[4].lpips is None
    assert region[7].clip is None and region[9].structure is not None  # type: ignore[attr-defined]


def test_registry_builds_edit_metrics_by_name() -> None:
    assert set(registry()) == {"psnr", "ssim", "lpips", "lpips_vgg", "clip_score"}  # conf/metrics lists these
    assert set(registry("edit")) == set(EDIT_NAMES) and set(registry(None)) == set(registry()) | set(EDIT_NAMES)
    options = {"bg_psnr": {"convention": "piebench"}, "bg_lpips": {"convention": "piebench", "net": "vgg"},
               "lpips_to_source": {"net": "vgg", "cache_dir": "/tmp/x"},
               "clip_whole": {"backend": "transformers", "weights": "auto"}, "clip_edited": {"clip": FakeClip()},
               "structure_distance": {"weights": "/nowhere.pth"}}
    metrics = build_metrics([*EDIT_NAMES, "psnr"], options)
    by = {m.name: m for m in metrics}
    assert [m.name for m in metrics] == [*EDIT_NAMES, "psnr"]
    assert by["bg_psnr"].convention == "piebench" and by["bg_lpips"].lpips.net == "vgg"  # type: ignore[attr-defined]
    assert by["lpips_to_source"].lpips.cache_dir == "/tmp/x"  # type: ignore[attr-defined]
    assert by["clip_whole"].clip.weights == str(ROOT / "datasets" / "world" / "clip")  # type: ignore[attr-defined]
    assert isinstance(by["clip_edited"].clip, FakeClip)  # type: ignore[attr-defined]
    assert by["structure_distance"].structure.weights == "/nowhere.pth"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown metric 'bg_nope'"):
        build_metrics(["bg_nope"])


def test_diagnostic_tables_and_directions() -> None:
    import eval.metrics.diagnostics as diag
    import eval.records as records

    assert records.HARNESS_METRICS is diag.HARNESS_METRICS and records.TIMING_METRICS is diag.TIMING_METRICS
    assert records.GAUSSIANITY_ROWS is diag.GAUSSIANITY_ROWS
    assert DIAGNOSTICS["reconstruct"] is diag.HARNESS_METRICS and DIAGNOSTICS["interpolate"] is INTERP_METRICS
    assert DIAGNOSTICS["exact"] is EXACT_METRICS and list(EDIT_DIAGNOSTICS) == list(EDIT_METRIC_ORDER[-4:])
    assert set(DIAGNOSTICS) == {"reconstruct", "edit", "interpolate", "exact"}
    got = directions(["psnr", "lpips", "ssim", "clip_score", "lpips_vgg", "bg_mse", "clip_edited", "time_edit_s",
                      "psnr_vae_ceiling", "interp_psnr_end", "exact_image_nmse"])
    assert got == {"psnr": True, "lpips": False, "ssim": True, "clip_score": True, "lpips_vgg": False, "bg_mse": False,
                   "clip_edited": True, "time_edit_s": False, "psnr_vae_ceiling": True, "interp_psnr_end": True,
                   "exact_image_nmse": False}
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        directions(["nope"])


def test_records_and_registry_import_without_torch() -> None:
    code = ("import sys, eval.records, eval.metrics, eval.metrics.diagnostics; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from eval.metrics import Sample; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# ---------------------------------------------------------------- by-hand oracles (PIE-Bench numbers, CLIP towers)


def _flat_pair() -> Sample:
    """Source 100/255 everywhere, edit 110.7/255 everywhere (8-bit: 110/255); edited = bottom half."""
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[16:] = True
    return Sample(torch.full((1, 3, 32, 32), 110.7 / 255), torch.full((1, 3, 32, 32), 100 / 255), "b", "a", region)


def _textured(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 255, (1, 3, 32, 32), generator=g).float()
    smooth = torch.nn.functional.avg_pool2d(levels, 3, stride=1, padding=1)
    return (smooth.floor() + 0.1 + 0.8 * torch.rand(smooth.shape, generator=g)) / 255


def _ellipse() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    return ((yy - 12) ** 2 / 60 + (xx - 19) ** 2 / 40) < 1.0


def test_background_by_hand_on_flat_and_8bit_images() -> None:
    flat = _flat_pair()
    pie = score([BgMSE("piebench"), BgPSNR("piebench")], flat)
    assert pie["bg_mse"] == pytest.approx((10 / 255) ** 2 / 2, rel=1e-6)  # half the pixels are zeros in both
    assert pie["bg_psnr"] == pytest.approx(10 * math.log10(2 * 255**2 / 100), rel=1e-6)
    assert score([BgMSE()], flat)["bg_mse"] == pytest.approx((10.7 / 255) ** 2, rel=1e-6)
    region = _ellipse()
    edit, source = _textured(1), _textured(0)
    keep = (~region).double()
    a, b = ((torch.floor(x.double() * 255) * keep) / 255 for x in (edit, source))  # uint8 HWC x mask, by hand
    mse = (a - b).pow(2).mean().item()
    sample = Sample(edit, source, "b", "a", region)
    out = score([BgMSE("piebench"), BgPSNR("piebench")], sample)  # (one value per name)
    assert out["bg_mse"] == pytest.approx(mse, rel=1e-6)
    assert out["bg_psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-6)


@pytest.mark.parametrize("convention", ["piebench", "region"])
def test_clip_edited_and_whole_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, convention: str) -> None:
    """100 max(cos, 0) from the tiny CLIPModel's towers (tests/test_metrics_eval.py), masks and 8 bits by hand."""
    from eval.metrics.clip_score import CLIPScore
    from test_metrics_eval import hand_clip_score, tiny_clip_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    edit, region = _textured(6), _ellipse()
    image = torch.floor(edit.double() * 255).float() / 255 if convention == "piebench" else edit
    masked = image * region.float()
    sample = Sample(edit, _textured(0), "a red car", "a cat", region)
    checked = 0
    for flip in (False, True):  # one of the two has a positive cosine, so the clamp is not all there is
        folder = tiny_clip_folder(tmp_path / f"clip{int(flip)}", flip_text=flip)
        want_edited = 100 * hand_clip_score(folder, masked, ["a red car"]).clamp(min=0)
        want_whole = 100 * hand_clip_score(folder, image, ["a red car"]).clamp(min=0)
        metrics = build_metrics(["clip_whole", "clip_edited"], {
            name: {"convention": convention, "backend": "transformers", "weights": str(folder)}
            for name in ("clip_whole", "clip_edited")})
        out = score(metrics, sample)
        assert out["clip_edited"] == pytest.approx(float(want_edited), abs=1e-3)
        assert out["clip_whole"] == pytest.approx(float(want_whole), abs=1e-3)
        assert isinstance(metrics[0].clip, CLIPScore)  # type: ignore[attr-defined]
        checked += int(float(want_edited) > 0)
    assert checked == 1
