"""Metrics over a region of the image: background preservation of an edit, CLIP of the edited region.

``keep`` masks are (B, H, W), (B, 1, H, W) or (H, W) booleans, True on the pixels the metric is
taken over (for background preservation: the pixels outside the edited region). Images are
(B, 3, H, W) in [0, 1], one value per image.

The reduction is over the region's pixels only, never a zero-filled whole image (PIE-Bench,
``evaluation/matrics_calculator.py``, multiplies both images by the mask and averages over all
512 x 512 pixels, so its numbers depend on the mask's area):

- ``masked_mse``: mean squared error over the region's pixels and the 3 channels;
  ``masked_psnr`` = ``10 log10(1 / mse)`` (``+inf`` when the region is identical).
- :class:`MaskedSSIM`: the SSIM map (the project's convention, :mod:`eval.metrics.ssim`:
  Gaussian window sigma 1.5, K1 0.01, K2 0.03, data range 1) averaged over the region's pixels
  and the channels. Windows near the region's border also see pixels outside it, so ``pred``
  is first *reference-filled*: outside the region it takes ``target``'s pixels. Differences
  outside the region then never count, and what lies there is real image content, not zeros.
- :class:`MaskedLPIPS`: LPIPS's spatial map (``lpips.LPIPS`` with ``spatial=True``: each
  layer's distance map upsampled bilinearly to the input size and summed) of the
  reference-filled ``pred`` against ``target``, averaged over the region's pixels. Real
  AlexNet weights only (:mod:`eval.metrics.lpips_metric`); unavailable without them.
- ``region_image``: the image with pixels outside the region set to 0, PIE-Bench's input for
  the CLIP score of the edited region (``calculate_clip_similarity(img * mask)``).

With identical images inside the region, MSE is 0, PSNR ``inf``, LPIPS 0 exactly, and SSIM 1
(up to the round-off of torchmetrics' variance clamp). An empty region raises ValueError.

**PIE-Bench convention** (``mask_convention=piebench``; PnPInversion ``evaluation/
matrics_calculator.py`` + ``evaluate.py`` at f480116, arXiv 2310.01506), to reproduce the numbers
PIE-Bench tables print: both images are first made 8-bit (:func:`to_8bit`: the edit is
truncated as PnPInversion's ``latent2image`` does, ``(x * 255).astype(uint8)``, and read back
/ 255), then multiplied by the region's mask (0 outside it), and the metric is taken over the
WHOLE image, zeros included:

- :func:`pie_mse`: torchmetrics ``MeanSquaredError`` over the (3, H, W) values, i.e. the region's
  summed squared error / (3 H W) (PIE-Bench tables print it x 10^4);
- :func:`pie_psnr`: torchmetrics ``PeakSignalNoiseRatio(data_range=1)`` = ``10 log10(1 / pie_mse)``;
- :func:`pie_ssim`: torchmetrics ``StructuralSimilarityIndexMeasure(data_range=1)`` defaults
  (Gaussian 11 taps, sigma 1.5, K1 0.01, K2 0.03), the mean of the SSIM map of the zeroed images
  (tables: x 10^2). ``border_crop=5`` (:data:`LEGACY_SSIM_BORDER_CROP`) drops the map's 5-pixel
  border before the mean, as torchmetrics did before September 2024 (Lightning-AI/torchmetrics
  PR #2721, issue #2718), i.e. when PIE-Bench's published tables were made; the default 0 is
  torchmetrics 1.9's whole map;
- :func:`pie_lpips`: LPIPS of the zeroed images, fed [-1, 1] (tables: x 10^3). PnPInversion uses
  torchmetrics' SqueezeNet LPIPS; this project has verified AlexNet / VGG weights only, so the
  backbone is ``task.lpips_net`` (a deviation, named in the rows' ``task_params``).

The 8-bit rule is one function, :func:`to_uint8` (``floor(clamp(x, 0, 1) * 255 + 1e-4)``, see
:data:`_QUANT_EPS`): the metrics score ``to_uint8(x) / 255`` (:func:`to_8bit`) and the edit task
saves ``to_uint8(x)`` as its PNGs (:func:`eval.report.plots._save_png`), so a peer's evaluator
(PnPInversion reads the PNG's bytes and divides by 255) re-scores exactly what was scored here.

So the numbers grow with the mask's area (zeros agree perfectly), which is why the project's
default (above) reduces over the region instead. Whether the region is empty is checked before
(PnPInversion returns ``"nan"`` then; the harness records status ``unavailable``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from eval.metrics.base import Tensor
from eval.metrics.lpips_metric import MIN_SIDE, NETS, WeightsUnavailable, build_lpips, default_cache_dir
from eval.metrics.ssim import DATA_RANGE


def as_mask(keep: Tensor, images: Tensor) -> Tensor:
    """``keep`` as a (B, 1, H, W) bool tensor matching ``images`` (B, C, H, W); checks shapes."""
    mask = keep.to(device=images.device, dtype=torch.bool)
    if mask.ndim == 2:
        mask = mask[None, None].expand(images.shape[0], 1, *mask.shape)
    elif mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != images.shape[0] or mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masked metric: mask {tuple(keep.shape)} does not fit images {tuple(images.shape)}")
    if not bool(mask.flatten(1).any(1).all()):
        raise ValueError("masked metric: the region is empty for at least one image")
    return mask


def _check(pred: Tensor, target: Tensor, name: str) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"{name}: pred and target must both be (B, 3, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def region_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of a (B, C, H, W) map over the masked pixels (all channels): shape (B,), float64."""
    m = mask.expand_as(values).double()
    return (values.double() * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def masked_mse(pred: Tensor, target: Tensor, keep: Tensor) -> Tensor:
    """Per-image MSE over the region's pixels and channels: shape (B,), float64."""
    _check(pred, target, "masked_mse")
    return region_mean((pred.double() - target.double()).pow(2), as_mask(keep, pred))


def masked_psnr(pred: Tensor, target: Tensor, keep: Tensor, data_range: float = DATA_RANGE) -> Tensor:
    """Per-image PSNR (dB) over the region: ``+inf`` when identical there. Shape (B,), float64."""
    return 10.0 * torch.log10(data_range**2 / masked_mse(pred, target, keep))


def reference_fill(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """``pred`` inside the region, ``target`` outside it."""
    return torch.where(mask.expand_as(pred), pred, target.to(pred.dtype))


def region_image(images: Tensor, region: Tensor) -> Tensor:
    """``images`` with pixels outside ``region`` set to 0 (PIE-Bench's edited-region CLIP input)."""
    return images * as_mask(region, images).to(images.dtype)


@dataclass
class MaskedSSIM:
    """SSIM map averaged over the region (see the module docstring), higher is better."""

    sigma: float = 1.5
    k1: float = 0.01
    k2: float = 0.03

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor, keep: Tensor) -> Tensor:
        _check(pred, target, "masked_ssim")
        mask = as_mask(keep, pred)
        dtype = torch.promote_types(pred.dtype, torch.float32)
        filled = reference_fill(pred.to(dtype), target.to(dtype), mask)
        _, full = structural_similarity_index_measure(
            filled, target.to(dtype), gaussian_kernel=True, sigma=self.sigma, reduction="none",
            data_range=DATA_RANGE, k1=self.k1, k2=self.k2, return_full_image=True,
        )
        return region_mean(full, mask)


@dataclass
class MaskedLPIPS:
    """LPIPS spatial map averaged over the region (see the module docstring), lower is better.

    ``cache_dir`` None: :func:`eval.metrics.lpips_metric.default_cache_dir`.
    """

    net: str = "alex"
    cache_dir: str | None = None
    _model: torch.nn.Module | None = field(default=None, init=False, repr=False)
    _reason: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.net not in NETS:
            raise ValueError(f"masked lpips: net must be one of {NETS}, got {self.net!r}")

    def unavailable_reason(self) -> str | None:
        if self._model is None and self._reason is None:
            cache = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
            try:
                self._model, _ = build_lpips(self.net, cache)
                self._model.spatial = True  # our own instance: per-pixel distance maps
            except WeightsUnavailable as err:
                self._reason = str(err)
        return self._reason

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor, keep: Tensor) -> Tensor:
        _check(pred, target, "masked_lpips")
        if min(pred.shape[-2:]) < MIN_SIDE[self.net]:
            raise ValueError(f"masked lpips {self.net}: images must be at least {MIN_SIDE[self.net]} px a side")
        reason = self.unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"masked lpips unavailable: {reason}")
        mask = as_mask(keep, pred)
        filled = reference_fill(pred.float(), target.float(), mask)
        model = self._model.to(pred.device)  # type: ignore[union-attr]
        spatial = model(filled * 2 - 1, target.float() * 2 - 1)  # (B, 1, H, W)
        return region_mean(spatial, mask)


PIE_LEVELS = 255  # 8-bit images, as PnPInversion reads its PNG / JPEG files
_QUANT_EPS = 1e-4  # an already 8-bit value times 255 may land a hair under its integer in float32


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] images as 8-bit levels, a ``torch.uint8`` tensor of the same shape: THE project's one
    rule for "image tensor -> 8 bits", used both to score (:func:`to_8bit`, the ``piebench``
    convention) and to save PNGs (:func:`eval.report.plots._save_png`), so a saved image reloaded
    (``uint8 / 255``) scores bit for bit what the tensor scored.

    The rule is PnPInversion's ``latent2image`` (``(x * 255).astype(np.uint8)`` after a clamp to
    [0, 1]): TRUNCATION, not rounding, computed in the input's dtype; plus ``_QUANT_EPS`` so an image
    that is 8-bit already (``k / 255``, a decoded PNG / JPEG) gives back exactly ``k`` despite the float
    round-off of ``k / 255 * 255``.
    """
    return torch.floor(images.clamp(0, 1) * PIE_LEVELS + _QUANT_EPS).to(torch.uint8)


def to_8bit(images: Tensor) -> Tensor:
    """[0, 1] images truncated to 8 bits and back to [0, 1] (``(x * 255).astype(uint8) / 255``):
    :func:`to_uint8` divided by 255 in the input's dtype.

    An image that is 8-bit already (a decoded PNG / JPEG) is unchanged (``_QUANT_EPS`` absorbs the
    float round-off of ``k / 255 * 255``).
    """
    return to_uint8(images).to(images.dtype) / PIE_LEVELS


def pie_masked(images: Tensor, keep: Tensor) -> Tensor:
    """PIE-Bench's masked input: 8-bit ``images`` times the region's 0/1 mask (zeros outside)."""
    return to_8bit(images).double() * as_mask(keep, images).double()


def pie_mse(pred: Tensor, target: Tensor, keep: Tensor) -> Tensor:
    """PIE-Bench ``mse_unedit_part``: MSE of the zeroed images over ALL pixels and channels, (B,) float64."""
    _check(pred, target, "pie_mse")
    return (pie_masked(pred, keep) - pie_masked(target, keep)).pow(2).flatten(1).mean(1)


def pie_psnr(pred: Tensor, target: Tensor, keep: Tensor, data_range: float = DATA_RANGE) -> Tensor:
    """PIE-Bench ``psnr_unedit_part``: ``10 log10(data_range^2 / pie_mse)`` dB, (B,) float64."""
    return 10.0 * torch.log10(data_range**2 / pie_mse(pred, target, keep))


SSIM_BORDER_CROPS = (0, 5)  # ssim_border_crop: 0 = torchmetrics >= PR #2721 (1.9 here), 5 = before it
LEGACY_SSIM_BORDER_CROP = 5  # (11 Gaussian taps - 1) // 2: what torchmetrics cut before September 2024


def pie_ssim(pred: Tensor, target: Tensor, keep: Tensor, border_crop: int = 0) -> Tensor:
    """PIE-Bench ``ssim_unedit_part``: torchmetrics SSIM (its defaults, data range 1) of the zeroed images.

    ``border_crop`` (one of :data:`SSIM_BORDER_CROPS`): pixels dropped from each side of the SSIM map
    before its mean. 0 (default): the whole H x W map, torchmetrics' behaviour since
    Lightning-AI/torchmetrics PR #2721 ("correct the padding related calculation errors in SSIM",
    merged September 2024, fixing issue #2718; torchmetrics 1.9 here). 5
    (:data:`LEGACY_SSIM_BORDER_CROP`): the map without its 5-pixel border, as torchmetrics computed it
    before that change (it reflect-padded the images by 5, then ALSO cut ``[5:-5, 5:-5]`` from the
    H x W map), i.e. when PnPInversion / PIE-Bench's published tables were made: use it to compare
    with those tables (one check in issue 25: 0.777 cropped vs 0.837 whole). Both maps are the same; only
    the mean's support differs.
    """
    _check(pred, target, "pie_ssim")
    if border_crop not in SSIM_BORDER_CROPS:
        raise ValueError(f"pie_ssim: border_crop must be one of {SSIM_BORDER_CROPS}, got {border_crop!r}")
    if 2 * border_crop >= min(pred.shape[-2:]):
        raise ValueError(f"pie_ssim: border_crop {border_crop} leaves nothing of {tuple(pred.shape[-2:])} images")
    _, full = structural_similarity_index_measure(
        pie_masked(pred, keep).float(), pie_masked(target, keep).float(), gaussian_kernel=True, sigma=1.5,
        kernel_size=11, reduction="none", data_range=DATA_RANGE, k1=0.01, k2=0.03, return_full_image=True,
    )
    c = border_crop
    kept = full[..., c:full.shape[-2] - c, c:full.shape[-1] - c]
    return kept.reshape(kept.shape[0], -1).mean(-1).double()


def pie_lpips(lpips: object, pred: Tensor, target: Tensor, keep: Tensor) -> Tensor:
    """PIE-Bench ``lpips_unedit_part``: ``lpips`` (an :class:`eval.metrics.lpips_metric.LPIPS`, which
    takes [0, 1] and feeds [-1, 1]) of the zeroed images, (B,)."""
    _check(pred, target, "pie_lpips")
    return lpips(pie_masked(pred, keep).float(), pie_masked(target, keep).float())  # type: ignore[operator]
