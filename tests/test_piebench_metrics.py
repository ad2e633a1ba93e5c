"""PIE-Bench metrics as PnPInversion's evaluator computes them, on hand-made cases with known answers.

Oracles: masks and metric values written out by hand (RLE runs, squared errors counted over
the pixels, the SSIM formula for constant images), and, for the DINO key extractor, the
``transformers`` ViT implementation fed the same weights.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from eval.edit_data import EditEntry, decode_rle, piebench_dataset, strip_markers
from eval.metrics.masked import masked_mse, pie_lpips, pie_mse, pie_psnr, pie_ssim, to_8bit
from eval.metrics.structure import (
    DinoKeys, StructureDistance, cosine_self_similarity, dino_input, find_dino_weights, hf_to_dino, resize_size,
)

# ----------------------------------------------------------------------------- RLE and prompts


def test_rle_decodes_start_length_pairs_and_sets_the_border() -> None:
    mask = decode_rle([6, 2, 12, 1], shape=(4, 5))  # flat 6, 7 -> (1,1), (1,2); flat 12 -> (2,2)
    expected = np.array([
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 1],
        [1, 0, 1, 0, 1],
        [1, 1, 1, 1, 1],
    ], dtype=bool)
    np.testing.assert_array_equal(mask, expected)


def test_rle_run_past_the_end_is_clipped_and_odd_length_refused() -> None:
    mask = decode_rle([18, 10], shape=(4, 5))  # PnPInversion: min(length, size - start)
    assert mask.sum() == 14  # the 14 border pixels (18, 19 are border already)
    with pytest.raises(ValueError, match="odd length"):
        decode_rle([1, 2, 3], shape=(4, 5))


def test_markers_are_stripped_and_loader_decodes_the_mask(tmp_path) -> None:
    from PIL import Image

    assert strip_markers("a [cat] sitting on [a] mat") == "a cat sitting on a mat"
    (tmp_path / "annotation_images" / "0").mkdir(parents=True)
    Image.new("RGB", (512, 512), (10, 20, 30)).save(tmp_path / "annotation_images" / "0" / "a.jpg")
    start = 100 * 512 + 200  # row 100, columns 200..209
    mapping = {"000": {"image_path": "0/a.jpg", "original_prompt": "a [cat] on a mat",
                       "editing_prompt": "a [dog] on a mat", "editing_type_id": "1", "blended_word": "cat dog",
                       "mask": [start, 10]}}
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    (entry,) = piebench_dataset(tmp_path)
    assert entry.problem is None and entry.caption == "a cat on a mat" and entry.target_caption == "a dog on a mat"
    mask = entry.mask()
    assert mask.shape == (512, 512) and mask[100, 200:210].all() and not mask[100, 210] and not mask[101, 200]
    assert int(mask.sum()) == 10 + 4 * 511  # the run plus the border


# ----------------------------------------------------------------------------- background metrics

SIDE = 32


def _pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source 100/255 everywhere, edit 110.7/255 everywhere (8-bit: 110/255); keep = top half."""
    source = torch.full((1, 3, SIDE, SIDE), 100 / 255)
    edit = torch.full((1, 3, SIDE, SIDE), 110.7 / 255)
    keep = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    keep[: SIDE // 2] = True
    return edit, source, keep


def test_to_8bit_truncates_like_latent2image_and_keeps_8bit_values() -> None:
    x = torch.tensor([0.0, 110.7 / 255, 200 / 255, 1.0, 1.2, -0.1])
    assert torch.equal(torch.round(to_8bit(x) * 255), torch.tensor([0.0, 110, 200, 255, 255, 0]))
    levels = torch.arange(256) / 255
    assert torch.equal(torch.round(to_8bit(levels) * 255), torch.arange(256).float())


def test_pie_mse_and_psnr_average_over_the_whole_image() -> None:
    edit, source, keep = _pair()
    # 10 levels of error on the kept half, zeros (equal) on the other half: mean over all pixels.
    expected_mse = (10 / 255) ** 2 / 2
    assert pie_mse(edit, source, keep).item() == pytest.approx(expected_mse, rel=1e-6)
    assert pie_psnr(edit, source, keep).item() == pytest.approx(10 * math.log10(2 * 255**2 / 100), rel=1e-6)
    # the project's region convention averages over the kept pixels only (and does not quantise)
    assert masked_mse(edit, source, keep).item() == pytest.approx((10.7 / 255) ** 2, rel=1e-6)


def test_pie_ssim_constant_images_match_the_formula() -> None:
    edit, source, _ = _pair()
    keep = torch.ones(SIDE, SIDE, dtype=torch.bool)
    a, b, c1 = 110 / 255, 100 / 255, 0.01**2  # constant images: SSIM = the luminance term alone
    # float32, as torchmetrics in PnPInversion: the variances' round-off moves the 4th decimal
    assert pie_ssim(edit, source, keep).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=3e-4)


def test_differences_only_inside_the_edit_are_invisible() -> None:
    edit, source, keep = _pair()
    edit = torch.where(keep, source, edit)  # equal on the kept half
    assert pie_mse(edit, source, keep).item() == 0.0
    assert math.isinf(pie_psnr(edit, source, keep).item())
    assert pie_ssim(edit, source, keep).item() == pytest.approx(1.0, abs=1e-6)


def _scored(names: str, convention: str, edit, source, entry, size, clip=None) -> dict:
    """The edit task's values of the metrics whose names start with ``names`` (eval.metrics.edit)."""
    from eval.edit_data import fit_mask
    from eval.metrics.base import Sample
    from eval.metrics.edit import build_edit_metrics
    from eval.metrics.scoring import score

    metrics = [m for m in build_edit_metrics(convention=convention, clip=clip) if m.name.startswith(names)]
    return score(metrics, Sample(edit, source, entry.target_caption, region=fit_mask(entry.mask(), size)))


def _bg(convention: str, edit, source, entry, size) -> dict:
    return _scored("bg_", convention, edit, source, entry, size)


def test_harness_background_piebench_convention_and_whole_image_mask() -> None:
    from eval.records import Unavailable

    edit, source, keep = _pair()
    entry = EditEntry("e", None, "a", target_caption="b", mask=lambda: (~keep).numpy())
    values = _bg("piebench", edit, source, entry, (SIDE, SIDE))
    assert values["bg_mse"] == pytest.approx((10 / 255) ** 2 / 2, rel=1e-6)
    assert values["bg_psnr"] == pytest.approx(10 * math.log10(2 * 255**2 / 100), rel=1e-6)
    region = _bg("region", edit, source, entry, (SIDE, SIDE))
    assert region["bg_mse"] == pytest.approx((10.7 / 255) ** 2, rel=1e-6)
    whole = EditEntry("w", None, "a", target_caption="b", mask=lambda: np.ones((SIDE, SIDE), dtype=bool))
    for convention in ("piebench", "region"):
        out = _bg(convention, edit, source, whole, (SIDE, SIDE))
        assert all(isinstance(v, Unavailable) and "whole image" in v.reason for v in out.values())


def test_whole_image_masks_are_left_out_of_the_means_with_a_count() -> None:
    from eval.report.tables import paper_markdown, summarize

    rows = []
    for image, (status, value) in enumerate([("ok", 20.0), ("ok", 22.0), ("unavailable", math.nan)]):
        rows.append({"run_id": "r", "model": "m", "schedule": "s", "inverter": "ddim+p2p", "image": f"i{image}",
                     "caption": "c", "metric": "bg_psnr", "value": value, "status": status,
                     "reason": "the edited region covers the whole image" if status != "ok" else "",
                     "higher_is_better": True, "num_steps": 50, "guidance_scale": 7.5, "seed": 0})
    records = pd.DataFrame(rows)
    s = summarize(records).iloc[0]
    assert s["mean"] == 21.0 and s["n"] == 2 and s["n_unavailable"] == 1
    md = paper_markdown(records)
    assert "`bg_psnr` unavailable: the edited region covers the whole image (1 of 3 images" in md


# ----------------------------------------------------------------------------- structure distance


def test_cosine_self_similarity_by_hand() -> None:
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[1, 0, r, 0], [0, 1, r, 0], [r, r, 1, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(cosine_self_similarity(keys)[0], expected)


def test_resize_rule_and_unscaled_normalisation() -> None:
    assert resize_size(512, 512) == (224, 224)
    assert resize_size(512, 1024) == (224, 448)
    assert resize_size(2048, 512) == (480, 120)  # longer side capped at 480, shorter shrunk with it
    x = dino_input(torch.ones(1, 3, 512, 512))
    expected = torch.tensor([(255 - 0.485) / 0.229, (255 - 0.456) / 0.224, (255 - 0.406) / 0.225])
    torch.testing.assert_close(x[0, :, 0, 0], expected)  # PnPInversion normalises 0-255 values
    assert x.shape == (1, 3, 224, 224)


def _tiny_vit(layers: int = 2, image_size: int = 32):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
                    image_size=image_size, patch_size=8, layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)
    model = ViTModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if "layernorm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    return model


def _as_transformers4_file(state: dict) -> dict:
    """transformers 5 ViT names -> the names in the hub's files (transformers 4), written out by hand."""
    names = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
             "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    out = {}
    for k, v in state.items():
        if k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            module, param = rest.rsplit(".", 1)
            k = f"encoder.layer.{i}.{names.get(module, module)}.{param}"
        out[k] = v
    return out


def _reference_keys(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        hidden = model(pixel_values=x, output_hidden_states=True).hidden_states[-2]  # input of the last layer
        layer = (getattr(model, "layers", None) or model.encoder.layer)[-1]
        att = layer.attention
        key = att.k_proj if hasattr(att, "k_proj") else att.attention.key
        return key(layer.layernorm_before(hidden))


def test_dino_keys_match_transformers_vit() -> None:
    model = _tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    expected = _reference_keys(model, x)
    state = dict(model.state_dict())
    for named in (state, _as_transformers4_file(state)):
        keys = DinoKeys(hf_to_dino(named), num_heads=2)(x)
        assert keys.shape == (2, 1 + 16, 16)
        torch.testing.assert_close(keys, expected, rtol=1e-4, atol=1e-5)


def test_structure_distance_from_local_hub_cache_and_unavailable_without(tmp_path, monkeypatch) -> None:
    from safetensors.torch import save_file

    for var in ("HF_HUB_CACHE", "HF_HOME", "TORCH_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    reason = StructureDistance().unavailable_reason()
    assert reason is not None and "dino_vitbase8_pretrain.pth" in reason and "no download" in reason
    assert "not a file" in (StructureDistance(weights=str(tmp_path / "x.pth")).unavailable_reason() or "") or \
        "neither" in (StructureDistance(weights=str(tmp_path / "x.pth")).unavailable_reason() or "")

    snap = tmp_path / "hf" / "hub" / "models--facebook--dino-vitb8" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in _tiny_vit().state_dict().items()}
    save_file(state, str(snap / "model.safetensors"))
    assert find_dino_weights(None) == snap / "model.safetensors"
    metric = StructureDistance()
    assert metric.unavailable_reason() is None and metric.source == str(snap / "model.safetensors")
    torch.manual_seed(1)
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert metric(a, a).item() == 0.0
    d_ab, d_ba = metric(a, b).item(), metric(b, a).item()
    assert d_ab > 0 and d_ab == pytest.approx(d_ba, rel=1e-9)


def test_structure_distance_value_by_hand(tmp_path) -> None:
    """The final value on two small textured images, every step by hand: 8-bit values as floats in
    [0, 255] (numpy), torchvision's ``Resize(224, max_size=480)`` (bilinear, no antialias), ImageNet
    ``Normalize`` on the 0-255 values, the last block's keys from the ``transformers`` ViT itself
    (trained at 224 px, so no position-embedding interpolation), the keys' cosine self-similarity
    and the mean squared difference of the two matrices."""
    import torchvision.transforms.functional as TF
    from safetensors.torch import save_file
    from torchvision.transforms import InterpolationMode

    model = _tiny_vit(image_size=224)
    folder = tmp_path / "dino"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": 2}))
    metric = StructureDistance(weights=str(folder))
    assert metric.unavailable_reason() is None
    a = _textured(7, side=16)
    b = _textured(8, side=16)

    def keys(images: torch.Tensor) -> torch.Tensor:
        pixels = (images.numpy().astype(np.float64) * 255).astype(np.uint8).astype(np.float32)
        x = TF.resize(torch.from_numpy(pixels), [224], interpolation=InterpolationMode.BILINEAR, max_size=480,
                      antialias=False)
        x = TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        return _reference_keys(model, x)[0].double()

    def self_similarity(k: torch.Tensor) -> torch.Tensor:
        unit = k / k.norm(dim=-1, keepdim=True)
        return unit @ unit.T

    ka, kb = keys(a), keys(b)
    assert ka.shape == (1 + 28 * 28, 16)
    want = (self_similarity(ka) - self_similarity(kb)).pow(2).mean().item()
    assert want > 1e-6  # small (a random tiny ViT fed +-1000 values), but far above float32 round-off
    assert metric(a, b).item() == pytest.approx(want, rel=1e-3)
    assert metric(b, a).item() == pytest.approx(want, rel=1e-3)


# ----------------------------------------------------------------------------- the edit loop


def test_edit_loop_piebench_convention_with_local_dino(tiny_sd_adapter, tmp_path) -> None:
    from safetensors.torch import save_file

    from baselines import ddim
    from eval.edit_data import world_edit_dataset
    from eval.tasks.edit import EditSettings, evaluate_edits
    from gnri.models.base import ScheduleSpec

    dino = tmp_path / "dino"
    dino.mkdir()
    model = _tiny_vit()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dino / "model.safetensors"))
    (dino / "config.json").write_text(json.dumps({"num_attention_heads": 2}))
    entries = world_edit_dataset(cache_dir=tmp_path / "cache", max_pairs=1)
    params = {"mask_convention": "piebench", "structure": {"weights": str(dino)}}
    df = evaluate_edits(tiny_sd_adapter, ScheduleSpec("ddim", 2), ddim.invert, "ddim", entries, EditSettings(),
                        progress=False, out_dir=tmp_path / "run", task_params=params, save_images=False)
    by = df.set_index("metric")
    for name in ("bg_psnr", "bg_mse", "bg_ssim", "structure_distance"):
        assert by.loc[name, "status"] == "ok", (name, by.loc[name, "reason"])
    assert by.loc["bg_psnr", "value"] == pytest.approx(10 * math.log10(1 / by.loc["bg_mse", "value"]), rel=1e-9)
    assert by.loc["structure_distance", "value"] > 0
    with pytest.raises(ValueError, match="task.mask_convention must be one of"):
        evaluate_edits(tiny_sd_adapter, ScheduleSpec("ddim", 2), ddim.invert, "ddim", entries, EditSettings(),
                       progress=False, task_params={"mask_convention": "pie"})


# ----------------------------------------------------------------------------- value oracles (issue 28)
# Textured images with 8-bit values plus a fraction in [0.1, 0.9] of a level, so truncating to
# 8 bits (PnPInversion's ``(x * 255).astype(np.uint8)``) is unambiguous; a blob-shaped edit mask.


def _textured(seed: int, side: int = 32, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 255, (batch, 3, side, side), generator=g).float()
    smooth = torch.nn.functional.avg_pool2d(levels, 3, stride=1, padding=1)  # texture, not pure noise
    return (smooth.floor() + 0.1 + 0.8 * torch.rand(smooth.shape, generator=g)) / 255


def _edited_region(side: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side]
    return ((yy - 12) ** 2 / 60 + (xx - 19) ** 2 / 40) < 1.0  # an off-centre ellipse


def _pie_arrays(images: torch.Tensor, keep: np.ndarray) -> np.ndarray:
    """PnPInversion's evaluator input, by hand in numpy: uint8 HWC arrays times the 0/1 mask, / 255."""
    arr = (images.permute(0, 2, 3, 1).numpy().astype(np.float64) * 255).astype(np.uint8)
    return arr.astype(np.float64) * keep[None, :, :, None] / 255


def test_pie_bg_psnr_and_mse_by_numpy_on_8bit_arrays() -> None:

    source, edit = _textured(0), _textured(1)
    region = _edited_region()
    keep = ~region
    a, b = _pie_arrays(edit, keep), _pie_arrays(source, keep)
    mse = float(np.mean((a - b) ** 2))  # over every pixel and channel of the whole image, zeros included
    psnr = 10 * math.log10(1.0 / mse)
    assert pie_mse(edit, source, torch.from_numpy(keep)).item() == pytest.approx(mse, rel=1e-6)
    assert pie_psnr(edit, source, torch.from_numpy(keep)).item() == pytest.approx(psnr, rel=1e-6)
    entry = EditEntry("e", None, "a", target_caption="b", mask=lambda: region)
    values = _bg("piebench", edit, source, entry, (32, 32))
    assert values["bg_mse"] == pytest.approx(mse, rel=1e-6) and values["bg_psnr"] == pytest.approx(psnr, rel=1e-6)
    # the region convention: the kept pixels' mean, not quantised, by numpy too
    diff = (edit - source).permute(0, 2, 3, 1).numpy().astype(np.float64)[0][keep]
    region_values = _bg("region", edit, source, entry, (32, 32))
    assert region_values["bg_mse"] == pytest.approx(float(np.mean(diff**2)), rel=1e-5)


def _ssim_full_map(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) as torchmetrics' defaults define it (the installed 1.9), written with
    scipy: Gaussian sigma 1.5 over 11 taps, K1 0.01, K2 0.03, data range 1, borders reflected
    without repeating the edge (torch's ``reflect`` = scipy's ``mirror``), the mean of the whole
    map and the channels. HWC input. (Older torchmetrics releases dropped the map's 5-pixel
    border before the mean; on these 32 px images that moves SSIM by about 0.06.)"""
    from scipy.ndimage import gaussian_filter

    c1, c2, r = 0.01**2, 0.03**2, 5
    blur = lambda z: gaussian_filter(z, 1.5, truncate=r / 1.5, mode="mirror")  # noqa: E731
    maps = []
    for c in range(x.shape[-1]):
        p, q = x[..., c], y[..., c]
        mp, mq = blur(p), blur(q)
        vp, vq, cov = blur(p * p) - mp**2, blur(q * q) - mq**2, blur(p * q) - mp * mq
        maps.append(((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp**2 + mq**2 + c1) * (vp + vq + c2)))
    return float(np.mean(maps))


def test_pie_bg_ssim_on_textured_images_matches_an_independent_ssim() -> None:
    source = _textured(2)
    edit = (source + 0.08 * torch.randn(source.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    region = _edited_region()
    keep = ~region
    want = _ssim_full_map(_pie_arrays(edit, keep)[0], _pie_arrays(source, keep)[0])
    assert 0.2 < want < 0.98  # textured, neither identical nor unrelated
    got = pie_ssim(edit, source, torch.from_numpy(keep)).item()
    assert got == pytest.approx(want, abs=1e-4)  # float32 in torchmetrics, as PnPInversion
    # the mask convention matters: the unmasked images' SSIM is another number
    ones = np.ones_like(keep)
    assert abs(_ssim_full_map(_pie_arrays(edit, ones)[0], _pie_arrays(source, ones)[0]) - want) > 1e-2


def test_pie_lpips_is_the_lpips_network_on_masked_8bit_inputs() -> None:
    """PnPInversion's ``lpips_unedit_part``: LPIPS of the two 8-bit images times the mask, fed in
    [-1, 1]; here the inputs are made by hand (numpy) and given to the ``lpips.LPIPS`` network object
    directly, without the metric's wrapper."""
    from eval.metrics.lpips_metric import LPIPS
    from lpips_guard import require_lpips_weights

    require_lpips_weights()
    metric = LPIPS()
    assert metric.unavailable_reason() is None
    source, edit = _textured(4, side=64), _textured(5, side=64)
    yy, xx = np.mgrid[:64, :64]
    region = ((yy - 24) ** 2 + (xx - 38) ** 2) < 300
    keep = ~region
    to_input = lambda x: torch.from_numpy(_pie_arrays(x, keep)).permute(0, 3, 1, 2).float() * 2 - 1  # noqa: E731
    with torch.no_grad():
        want = metric._model(to_input(edit), to_input(source)).reshape(-1)
    got = pie_lpips(metric, edit, source, torch.from_numpy(keep))
    torch.testing.assert_close(got.float(), want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        unmasked = metric._model(edit * 2 - 1, source * 2 - 1).reshape(-1)
    assert (unmasked - want).abs().max() > 1e-3


@pytest.mark.parametrize("convention", ["piebench", "region"])
def test_clip_edited_and_whole_by_hand(tmp_path, monkeypatch, convention: str) -> None:
    """``clip_edited``: 100 max(cos, 0) between the CLIP embedding of the edit with the pixels
    outside the edited region set to 0 (``piebench``: the edit made 8-bit first) and the target
    caption's; ``clip_whole`` the same without the mask. Cosines by hand from the towers
    (tests/test_metrics_eval.py's tiny CLIPModel, 32 px: no resize), masks and 8 bits in numpy."""
    from eval.metrics.clip_score import CLIPScore
    from test_metrics_eval import hand_clip_score, tiny_clip_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    edit, region = _textured(6), _edited_region()
    if convention == "piebench":
        arr = (edit.permute(0, 2, 3, 1).numpy().astype(np.float64) * 255).astype(np.uint8).astype(np.float64) / 255
        image = torch.from_numpy(arr).permute(0, 3, 1, 2).float()
    else:
        image = edit
    masked = image * torch.from_numpy(region.astype(np.float32))
    entry = EditEntry("e", None, "a cat", target_caption="a red car", mask=lambda: region)
    checked = 0
    for flip in (False, True):  # one of the two has a positive cosine, so the clamp is not all there is
        folder = tiny_clip_folder(tmp_path / f"clip{int(flip)}", flip_text=flip)
        want_edited = 100 * hand_clip_score(folder, masked, ["a red car"]).clamp(min=0)
        want_whole = 100 * hand_clip_score(folder, image, ["a red car"]).clamp(min=0)
        clip = CLIPScore(backend="transformers", weights=str(folder))
        out = _scored("clip_", convention, edit, edit, entry, (32, 32), clip=clip)
        assert float(out["clip_edited"]) == pytest.approx(float(want_edited), abs=1e-3)
        assert float(out["clip_whole"]) == pytest.approx(float(want_whole), abs=1e-3)
        checked += int(float(want_edited) > 0)
    assert checked == 1
