"""Saved images are what is scored; SSIM's old border crop; metric-library versions in the provenance.

Oracles: PnPInversion's 8-bit rule written out in numpy (``(x * 255).astype(np.uint8)``), the PNG
files read back with PIL, SSIM (Wang et al. 2004) written with numpy (explicit Gaussian taps,
reflect padding, the map's 5-pixel border dropped by hand), and ``importlib.metadata``.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.metrics.masked import (
    LEGACY_SSIM_BORDER_CROP, pie_mse, pie_psnr, pie_ssim, to_8bit, to_uint8,
)

SIDE = 32


def _off_grid(seed: int, side: int = SIDE) -> torch.Tensor:
    """(1, 3, side, side) float32 images whose values sit between 8-bit levels, k/255 + f/255 with
    f in [0.05, 0.95] (half of them >= 0.5, where rounding and truncation differ), and far from
    the 1e-4 guard of ``to_uint8``, so PnPInversion's plain truncation is the oracle."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 255, (1, 3, side, side), generator=g).float()
    f = 0.05 + 0.9 * torch.rand((1, 3, side, side), generator=g)
    return ((k + f) / 255).float()


def _keep(side: int = SIDE) -> torch.Tensor:
    """Background (kept) pixels: all but a disc in the middle, the edited region."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return ((yy - side // 2) ** 2 + (xx - side // 2 + 3) ** 2) >= (side // 4) ** 2


def _read_uint8(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im).copy()  # (H, W, 3) uint8


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A reloaded PNG as PnPInversion feeds it: uint8 / 255, (1, 3, H, W) float32."""
    return (torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255)


# ----------------------------------------------------------------------------- save what is scored


def test_to_uint8_is_pnpinversion_truncation() -> None:
    x = _off_grid(0)
    want = (np.clip(x[0].permute(1, 2, 0).numpy(), 0, 1) * 255).astype(np.uint8)  # latent2image
    got = to_uint8(x)
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got[0].permute(1, 2, 0).numpy(), want)
    assert not np.array_equal(want, (x[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))  # not rounding
    assert torch.equal(to_8bit(x), got.float() / 255)  # scoring uses the same levels
    levels = (torch.arange(256) / 255).float()  # already 8-bit: unchanged
    assert torch.equal(to_uint8(levels), torch.arange(256).to(torch.uint8))


def test_saved_edit_reloads_to_the_scored_bits(tmp_path: Path) -> None:
    from eval.report.edit_plots import EDIT_DIR, save_edit_images
    from eval.report.plots import IMAGES_DIR, RECON_DIR, SOURCE_DIR, _load_png, image_file_name

    source, recon, edit = _off_grid(1), _off_grid(2), _off_grid(3)
    edit[..., :4, :4] = 1.3  # out of range: clamped before the cut, as scored
    save_edit_images(tmp_path, "pair/7", source, recon, edit)
    folder, name = tmp_path / IMAGES_DIR, image_file_name("pair/7")
    files = {k: _read_uint8(folder / k / name) for k in (SOURCE_DIR, RECON_DIR, EDIT_DIR)}
    for key, tensor in ((SOURCE_DIR, source), (RECON_DIR, recon), (EDIT_DIR, edit)):
        want = (np.clip(tensor[0].permute(1, 2, 0).numpy(), 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(files[key], want)  # the file's bytes: PnPInversion's truncation

    keep = _keep()
    edit_back, source_back = _as_tensor(files[EDIT_DIR]), _as_tensor(files[SOURCE_DIR])
    for fn in (pie_mse, pie_psnr, pie_ssim):
        from_tensor, from_file = fn(edit, source, keep), fn(edit_back, source_back, keep)
        assert torch.equal(from_tensor, from_file), (fn.__name__, from_tensor, from_file)  # bit for bit
    assert torch.equal(pie_ssim(edit, source, keep, border_crop=5), pie_ssim(edit_back, source_back, keep, border_crop=5))
    # the project's own loader reads the same values
    assert torch.equal(_load_png(folder / EDIT_DIR / name)[None], edit_back)
    assert torch.isfinite(pie_psnr(edit, source, keep)).all()


def test_saved_reconstruction_uses_the_same_rule(tmp_path: Path) -> None:
    from eval.report.plots import IMAGES_DIR, RECON_DIR, save_run_images

    source, recon = _off_grid(4), _off_grid(5)
    save_run_images(tmp_path, "img0", source, recon)
    saved = _read_uint8(tmp_path / IMAGES_DIR / RECON_DIR / "img0.png")
    np.testing.assert_array_equal(saved, to_uint8(recon)[0].permute(1, 2, 0).numpy())


# ----------------------------------------------------------------------------- SSIM's old border crop


def _ssim_map_numpy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The SSIM map (C, H, W) of two (C, H, W) float64 images, torchmetrics' defaults written by hand:
    an 11-tap Gaussian (sigma 1.5) normalised to sum 1, applied along rows then columns after a
    5-pixel reflect pad (edge not repeated, numpy's ``reflect``), K1 0.01, K2 0.03, data range 1,
    variances clamped at 0."""
    taps = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    taps /= taps.sum()

    def blur(z: np.ndarray) -> np.ndarray:
        p = np.pad(z, 5, mode="reflect")
        rows = sum(taps[i] * p[i:i + z.shape[0], :] for i in range(11))
        return sum(taps[j] * rows[:, j:j + z.shape[1]] for j in range(11))

    c1, c2 = 0.01**2, 0.03**2
    out = []
    for p, q in zip(x, y):
        mp, mq = blur(p), blur(q)
        vp, vq = np.maximum(blur(p * p) - mp**2, 0), np.maximum(blur(q * q) - mq**2, 0)
        cov = blur(p * q) - mp * mq
        out.append(((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp**2 + mq**2 + c1) * (vp + vq + c2)))
    return np.stack(out)


def _pie_input(x: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    """PnPInversion's masked 8-bit input in numpy: ``(x*255).astype(uint8) / 255 * mask``, (C, H, W)."""
    eight = (np.clip(x[0].numpy(), 0, 1) * 255).astype(np.uint8) / 255.0
    return eight * keep.numpy()[None]


def test_ssim_border_crop_matches_an_independent_ssim_without_the_border() -> None:
    g = torch.Generator().manual_seed(7)
    source = _off_grid(6)
    edit = (source + 0.15 * torch.randn(source.shape, generator=g)).clamp(0, 1)
    edit[..., :, :6] = 1 - edit[..., :, :6]  # a border strip that differs a lot: the crop matters
    keep = _keep()
    ssim_map = _ssim_map_numpy(_pie_input(edit, keep), _pie_input(source, keep))
    c = LEGACY_SSIM_BORDER_CROP
    assert c == 5
    want_full, want_crop = float(ssim_map.mean()), float(ssim_map[:, c:-c, c:-c].mean())
    assert abs(want_full - want_crop) > 0.02  # the oracle tells the two apart
    got_full = pie_ssim(edit, source, keep).item()
    got_crop = pie_ssim(edit, source, keep, border_crop=5).item()
    assert got_full == pytest.approx(want_full, abs=2e-5)  # float32 in torchmetrics
    assert got_crop == pytest.approx(want_crop, abs=2e-5)
    assert pie_ssim(edit, source, keep, border_crop=0).item() == got_full  # 0 is the default
    with pytest.raises(ValueError, match="border_crop"):
        pie_ssim(edit, source, keep, border_crop=3)


# ----------------------------------------------------------------------------- library versions


def test_provenance_records_metric_library_versions_without_new_columns(tmp_path: Path) -> None:
    from eval.records import COLUMNS, PROVENANCE_COLUMNS, RunInfo, provenance, write_provenance

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    want = {"torchmetrics": version("torchmetrics"), "lpips": version("lpips"), "open_clip": version("open_clip_torch")}
    assert want["torchmetrics"] != "not installed"
    prov = provenance("cpu", "float32")
    assert json.loads(prov["machine"])["libraries"] == want
    info = RunInfo("r", "m", "s", "i", "a", 1, 1.0, 0, prov)
    row = info.row("img", "", "psnr", 1.0, "ok", "", True)
    assert list(row) == list(COLUMNS) and "torchmetrics_version" not in PROVENANCE_COLUMNS  # table unchanged
    assert json.loads(row["machine"])["libraries"]["torchmetrics"] == want["torchmetrics"]
    saved = json.loads(write_provenance(tmp_path, info).read_text())
    assert {k: saved[f"{k}_version"] for k in want} == want
    assert saved["machine"]["libraries"] == want and saved["diffusers_version"] == version("diffusers")
