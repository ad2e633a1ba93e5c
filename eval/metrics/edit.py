"""The edit task's metrics, one :class:`~eval.metrics.base.Metric` per row, on [0, 1] pixels at the
model's size, ``sample.candidate`` (the edit) vs ``sample.reference`` (the source) unless said otherwise:

- ``edit_success``: 1 if :func:`eval.world.checker.check` reads ``sample.caption`` (the target
  caption) in the edit, else 0; ``recon_success``: the same for ``sample.reconstruction`` and
  ``sample.source_caption`` (world captions only; unavailable otherwise);
- ``bg_psnr``, ``bg_ssim``, ``bg_lpips``, ``bg_mse``: background preservation over the pixels
  outside ``sample.region`` (:mod:`eval.metrics.masked`; ``convention``: ``region`` (default)
  reduces over the region's pixels only, ``piebench`` reproduces PnPInversion's evaluator: 8-bit
  images times the mask, reduced over the whole image). A region covering the whole image is
  unavailable (PIE-Bench's ``nan``);
- ``lpips_to_source``: whole-image LPIPS, the paper's editing-figure x axis (its source half can
  be cached: :class:`~eval.metrics.base.CachedReference`);
- ``clip_whole`` / ``clip_edited``: CLIP score of the edit / of its edited region (pixels outside
  set to 0, as PIE-Bench) against the target caption (``piebench``: the edit made 8-bit first);
- ``structure_distance``: PIE-Bench's DINO ViT-B/8 structure distance (:mod:`eval.metrics.structure`);
  ``structure_distance_standin``: the same distance on a stand-in ViT's keys (the world CLIP's vision
  tower) when no DINO file is here, a row of its own so that no table mixes it with DINO's numbers
  (``task.structure.standin``: auto | off | a CLIPModel folder; with DINO present it is unavailable);
- ``target_psnr``: the edit vs ``sample.target`` (world only); ``recon_psnr``: the reconstruction vs the source.

Each ``score`` checks, in order, what the pair lacks (no mask, whole-image region, no target) and
then the weights, raising :class:`~eval.metrics.base.MetricUnavailable` with the reason; so for the
reasons to be those of the pair first, score edit metrics without the ``unavailable`` mapping.
:func:`build_edit_metrics` builds them all in the table's order, one LPIPS object shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from eval.metrics.base import Metric, MetricUnavailable, Sample, Tensor, one_line
from eval.metrics.diagnostics import EDIT_DIAGNOSTICS, EDIT_METRIC_ORDER
from eval.metrics.lpips_metric import LPIPS
from eval.metrics.masked import (
    SSIM_BORDER_CROPS, MaskedLPIPS, MaskedSSIM, masked_mse, masked_psnr, pie_lpips, pie_mse, pie_psnr, pie_ssim,
    region_image, to_8bit,
)
from eval.metrics.structure import STANDIN_NAME, StructureDistance, StructureDistanceStandin
from gnri.quality import psnr

MASK_CONVENTIONS = ("region", "piebench")  # eval.metrics.masked: over the region / PnPInversion's evaluator
STRUCTURE_REASON = "no structure-distance metric configured (eval.metrics.structure.StructureDistance)"
STANDIN_REASON = "no stand-in structure-distance metric configured (eval.metrics.structure.StructureDistanceStandin)"
NO_MASK = "no edited-region mask for this pair"
WHOLE_REGION = "the edited region covers the whole image"
NO_TARGET = "no ground-truth target image (the embedded world has them)"
NO_RECONSTRUCTION = "no reconstruction in this sample"
NO_CLIP = "no CLIP metric configured"


def check_convention(convention: str) -> str:
    if convention not in MASK_CONVENTIONS:
        raise ValueError(f"task.mask_convention must be one of {MASK_CONVENTIONS}, got {convention!r}")
    return convention


def _require(reason: str | None) -> None:
    if reason is not None:
        raise MetricUnavailable(reason)


# ---------------------------------------------------------------- the world's checker


def world_reason() -> str | None:
    """Why the embedded world's checker cannot run here (None: it can)."""
    try:
        import eval.world.checker  # noqa: F401
        import eval.world.grammar  # noqa: F401
    except ImportError as err:
        return f"the embedded world (eval.world) is not importable: {one_line(err)}"
    return None


def world_check(image: Tensor, caption: str) -> Tensor:
    """1.0 if the world's checker reads ``caption`` in ``image`` (1, 3, H, W), else 0.0: shape (1,)."""
    _require(world_reason())
    from eval.world.checker import check
    from eval.world.grammar import parse

    try:
        parse(caption)
    except ValueError:
        raise MetricUnavailable(
            "the caption is not of the embedded world's grammar; the checker reads world scenes only") from None
    return torch.tensor([float(check(image[0].float().cpu(), caption).ok)], dtype=torch.float64)


@dataclass
class EditSuccess:
    """``edit_success``: the checker on the edit and the target caption."""

    name = "edit_success"
    higher_is_better = True

    def unavailable_reason(self) -> str | None:
        return world_reason()

    def score(self, sample: Sample) -> Tensor:
        return world_check(sample.candidate, sample.caption)


@dataclass
class ReconSuccess:
    """``recon_success``: the checker on the reconstruction and the source caption."""

    name = "recon_success"
    higher_is_better = True

    def unavailable_reason(self) -> str | None:
        return world_reason()

    def score(self, sample: Sample) -> Tensor:
        if sample.reconstruction is None:
            raise MetricUnavailable(NO_RECONSTRUCTION)
        return world_check(sample.reconstruction, sample.source_caption)


# ---------------------------------------------------------------- background preservation


def background(sample: Sample) -> Tensor:
    """The pixels outside the edited region (a bool mask); unavailable without a mask or with none left."""
    if sample.region is None:
        raise MetricUnavailable(NO_MASK)
    keep = ~sample.region.to(sample.candidate.device)
    if not bool(keep.any()):
        raise MetricUnavailable(WHOLE_REGION)
    return keep


@dataclass
class _Background:
    convention: str = "region"

    def __post_init__(self) -> None:
        check_convention(self.convention)

    def unavailable_reason(self) -> str | None:
        return None

    def score(self, sample: Sample) -> Tensor:
        keep = background(sample)
        return self._score(sample.candidate, sample.reference, keep)

    def _score(self, edit: Tensor, source: Tensor, keep: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass
class BgPSNR(_Background):
    name = "bg_psnr"
    higher_is_better = True

    def _score(self, edit: Tensor, source: Tensor, keep: Tensor) -> Tensor:
        return (pie_psnr if self.convention == "piebench" else masked_psnr)(edit, source, keep)


@dataclass
class BgMSE(_Background):
    name = "bg_mse"
    higher_is_better = False

    def _score(self, edit: Tensor, source: Tensor, keep: Tensor) -> Tensor:
        return (pie_mse if self.convention == "piebench" else masked_mse)(edit, source, keep)


@dataclass
class BgSSIM(_Background):
    """``ssim_border_crop`` (piebench only): 0 = torchmetrics 1.9's whole SSIM map | 5 = the map without
    its 5-pixel border, as torchmetrics before PR #2721 (Sep 2024) when PIE-Bench's tables were made
    (:func:`eval.metrics.masked.pie_ssim`)."""

    ssim: MaskedSSIM = field(default_factory=MaskedSSIM)
    ssim_border_crop: int = 0
    name = "bg_ssim"
    higher_is_better = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ssim_border_crop not in SSIM_BORDER_CROPS:
            raise ValueError(f"task.ssim_border_crop must be one of {SSIM_BORDER_CROPS}, got {self.ssim_border_crop!r}")
        if self.ssim_border_crop and self.convention != "piebench":
            raise ValueError("task.ssim_border_crop applies to task.mask_convention=piebench only")

    def _score(self, edit: Tensor, source: Tensor, keep: Tensor) -> Tensor:
        if self.convention == "piebench":
            return pie_ssim(edit, source, keep, self.ssim_border_crop)
        return self.ssim(edit, source, keep)


@dataclass
class BgLPIPS(_Background):
    """``region``: :class:`~eval.metrics.masked.MaskedLPIPS`; ``piebench``: the whole-image LPIPS of the
    zeroed images (``lpips``, shareable with ``lpips_to_source``). Weights load on first use."""

    net: str = "alex"
    cache_dir: str | None = None
    lpips: LPIPS | None = None
    masked: MaskedLPIPS | None = None
    name = "bg_lpips"
    higher_is_better = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.convention == "piebench" and self.lpips is None:
            self.lpips = LPIPS(net=self.net, cache_dir=self.cache_dir)
        if self.convention == "region" and self.masked is None:
            self.masked = MaskedLPIPS(self.net, self.cache_dir)

    def unavailable_reason(self) -> str | None:
        lpips = self.lpips if self.convention == "piebench" else self.masked
        return lpips.unavailable_reason()  # type: ignore[union-attr]

    def _score(self, edit: Tensor, source: Tensor, keep: Tensor) -> Tensor:
        _require(self.unavailable_reason())
        if self.convention == "piebench":
            return pie_lpips(self.lpips, edit, source, keep)
        return self.masked(edit, source, keep)  # type: ignore[misc]


# ---------------------------------------------------------------- whole-image metrics


@dataclass
class LpipsToSource:
    """``lpips_to_source``: whole-image LPIPS of the edit to the source (a :class:`CachedReference`)."""

    net: str = "alex"
    cache_dir: str | None = None
    lpips: LPIPS | None = None
    name = "lpips_to_source"
    higher_is_better = False

    def __post_init__(self) -> None:
        if self.lpips is None:
            self.lpips = LPIPS(net=self.net, cache_dir=self.cache_dir)

    def unavailable_reason(self) -> str | None:
        return self.lpips.unavailable_reason()  # type: ignore[union-attr]

    def score(self, sample: Sample) -> Tensor:
        _require(self.unavailable_reason())
        return self.lpips(sample.candidate, sample.reference)  # type: ignore[misc]

    def reference_features(self, target: Tensor, prompts: list[str] | None = None) -> Any:
        _require(self.unavailable_reason())
        return self.lpips.reference_features(target, prompts)  # type: ignore[union-attr]

    def score_with(self, pred: Tensor, features: Any, prompts: list[str] | None = None) -> Tensor:
        return self.lpips.score_with(pred, features, prompts)  # type: ignore[union-attr]


def clip_metric(clip: Any) -> Any:
    """A CLIP metric from ``clip``: None (none configured), a mapping of
    :class:`~eval.metrics.clip_score.CLIPScore` keyword arguments (``weights: auto``: the embedded
    world's CLIP folder), or a ready metric object."""
    if clip is None or not isinstance(clip, Mapping):
        return clip
    from eval.metrics.clip_score import CLIPScore

    options = dict(clip)
    if options.get("weights") == "auto":
        from eval.world_data import world_dir

        options["weights"] = str(world_dir() / "clip")
    return CLIPScore(**options)


@dataclass
class _Clip:
    convention: str = "region"
    clip: Any = None  # an ImageMetric (CLIPScore), or None: unavailable

    def __post_init__(self) -> None:
        check_convention(self.convention)
        self.clip = clip_metric(self.clip)

    def unavailable_reason(self) -> str | None:
        return NO_CLIP if self.clip is None else self.clip.unavailable_reason()

    def edit_image(self, sample: Sample) -> Tensor:
        return to_8bit(sample.candidate) if self.convention == "piebench" else sample.candidate


@dataclass
class ClipWhole(_Clip):
    name = "clip_whole"
    higher_is_better = True

    def score(self, sample: Sample) -> Tensor:
        _require(self.unavailable_reason())
        edit = self.edit_image(sample)
        return self.clip(edit, edit, [sample.caption])


@dataclass
class ClipEdited(_Clip):
    name = "clip_edited"
    higher_is_better = True

    def score(self, sample: Sample) -> Tensor:
        if sample.region is None:
            raise MetricUnavailable(NO_MASK)
        _require(self.unavailable_reason())
        edit = self.edit_image(sample)
        masked = region_image(edit, sample.region.to(edit.device))
        return self.clip(masked, edit, [sample.caption])


@dataclass
class Structure:
    """``structure_distance`` (DINO only); ``structure`` None: unavailable (:data:`STRUCTURE_REASON`).
    Without DINO its reason names the stand-in row when ``standin`` computes one."""

    structure: StructureDistance | None = None
    standin: StructureDistanceStandin | None = None
    name = "structure_distance"
    higher_is_better = False

    def unavailable_reason(self) -> str | None:
        if self.structure is None:
            return STRUCTURE_REASON
        reason = self.structure.unavailable_reason()
        if reason is not None and self.standin is not None and self.standin.unavailable_reason() is None:
            reason = f"{reason}; the row {STANDIN_NAME} has the {self.standin.source}"
        return reason

    def score(self, sample: Sample) -> Tensor:
        _require(self.unavailable_reason())
        return self.structure(sample.candidate, sample.reference)  # type: ignore[misc]


@dataclass
class StructureStandin:
    """``structure_distance_standin``: the structure distance on a stand-in ViT's keys, only where no
    DINO weights are (:class:`~eval.metrics.structure.StructureDistanceStandin`); ``standin`` None:
    unavailable (:data:`STANDIN_REASON`)."""

    standin: StructureDistanceStandin | None = None
    name = STANDIN_NAME
    higher_is_better = False

    def unavailable_reason(self) -> str | None:
        return STANDIN_REASON if self.standin is None else self.standin.unavailable_reason()

    def score(self, sample: Sample) -> Tensor:
        _require(self.unavailable_reason())
        return self.standin(sample.candidate, sample.reference)  # type: ignore[misc]


@dataclass
class TargetPSNR:
    name = "target_psnr"
    higher_is_better = True

    def unavailable_reason(self) -> str | None:
        return None

    def score(self, sample: Sample) -> Tensor:
        if sample.target is None:
            raise MetricUnavailable(NO_TARGET)
        return psnr(sample.candidate, sample.target.to(sample.candidate.device))


@dataclass
class ReconPSNR:
    name = "recon_psnr"
    higher_is_better = True

    def unavailable_reason(self) -> str | None:
        return None

    def score(self, sample: Sample) -> Tensor:
        if sample.reconstruction is None:
            raise MetricUnavailable(NO_RECONSTRUCTION)
        return psnr(sample.reconstruction, sample.reference)


# ---------------------------------------------------------------- factories (eval.metrics.registry)


def _structure_pair(structure: Any = None, **options: Any) -> tuple[Structure, StructureStandin]:
    """The two structure rows sharing one DINO look-up. ``structure``: the ``task.structure`` block
    (StructureDistance keyword arguments plus ``standin``: auto | off | a CLIPModel folder) or a ready
    StructureDistance; ``options``: more of those keywords."""
    if structure is None or isinstance(structure, Mapping):
        kwargs = {**dict(structure or {}), **options}
        standin = kwargs.pop("standin", "auto")
        structure = StructureDistance(**kwargs)
    else:
        standin = options.get("standin", "auto")
    stand = StructureDistanceStandin(standin, structure)
    return Structure(structure, stand), StructureStandin(stand)


def _structure(structure: Any = None, **options: Any) -> Structure:
    """``structure_distance``: see :func:`_structure_pair`."""
    return _structure_pair(structure, **options)[0]


def _structure_standin(structure: Any = None, **options: Any) -> StructureStandin:
    """``structure_distance_standin``: see :func:`_structure_pair`."""
    return _structure_pair(structure, **options)[1]


def _clip(cls: type[_Clip]) -> Callable[..., Metric]:
    def factory(convention: str = "region", clip: Any = None, **clip_options: Any) -> Metric:
        """``clip``: CLIPScore keyword arguments or a ready metric; else ``clip_options`` are the kwargs."""
        return cls(convention, clip if clip is not None else clip_options)

    return factory


FACTORIES: dict[str, Callable[..., Metric]] = {
    "edit_success": EditSuccess,
    "recon_success": ReconSuccess,
    "bg_psnr": BgPSNR,
    "bg_ssim": BgSSIM,
    "bg_lpips": BgLPIPS,
    "bg_mse": BgMSE,
    "lpips_to_source": LpipsToSource,
    "clip_whole": _clip(ClipWhole),
    "clip_edited": _clip(ClipEdited),
    "structure_distance": _structure,
    STANDIN_NAME: _structure_standin,
    "target_psnr": TargetPSNR,
    "recon_psnr": ReconPSNR,
}


def build_edit_metrics(
    convention: str = "region",
    lpips_net: str = "alex",
    lpips_cache: str | None = None,
    clip: Any = None,
    structure: Mapping[str, Any] | None = None,
    ssim_border_crop: int = 0,
) -> list[Metric]:
    """The edit task's metrics in the table's order (:data:`EDIT_METRIC_ORDER`, its diagnostics left
    out), one whole-image LPIPS shared by ``lpips_to_source`` and ``piebench``'s ``bg_lpips``.

    ``clip``: None (unavailable: "no CLIP metric configured"), CLIPScore keyword arguments or a ready
    metric; ``structure``: the ``task.structure`` block (StructureDistance keyword arguments and
    ``standin``; None: the defaults, stand-in ``auto``) or a ready StructureDistance.
    """
    check_convention(convention)
    lpips = LPIPS(net=lpips_net, cache_dir=lpips_cache)
    clip = clip_metric(clip)
    structure_row, standin_row = _structure_pair(structure)
    built: dict[str, Metric] = {
        "edit_success": EditSuccess(),
        "recon_success": ReconSuccess(),
        "bg_psnr": BgPSNR(convention),
        "bg_ssim": BgSSIM(convention, ssim_border_crop=ssim_border_crop),
        "bg_lpips": BgLPIPS(convention, lpips_net, lpips_cache, lpips=lpips if convention == "piebench" else None),
        "bg_mse": BgMSE(convention),
        "lpips_to_source": LpipsToSource(lpips_net, lpips_cache, lpips=lpips),
        "clip_whole": ClipWhole(convention, clip),
        "clip_edited": ClipEdited(convention, clip),
        "structure_distance": structure_row,
        STANDIN_NAME: standin_row,
        "target_psnr": TargetPSNR(),
        "recon_psnr": ReconPSNR(),
    }
    return [built[name] for name in EDIT_METRIC_ORDER if name not in EDIT_DIAGNOSTICS]


__all__ = [
    "FACTORIES", "MASK_CONVENTIONS", "NO_CLIP", "NO_MASK", "NO_TARGET", "STANDIN_REASON", "STRUCTURE_REASON",
    "WHOLE_REGION", "BgLPIPS", "BgMSE", "BgPSNR", "BgSSIM", "ClipEdited", "ClipWhole", "EditSuccess", "LpipsToSource",
    "ReconPSNR", "ReconSuccess", "Structure", "StructureStandin", "TargetPSNR", "background", "build_edit_metrics",
    "check_convention", "clip_metric", "world_check",
]
