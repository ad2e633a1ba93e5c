"""Image metrics by name: the registry that ``conf/metrics/*.yaml`` lists names from.

To add a metric: write a class satisfying :class:`~eval.metrics.base.ImageMetric` in its own
module and add one ``"name": factory`` entry to :func:`registry` (imports stay inside the
factory so a heavy metric costs nothing unless it is asked for). Options from the config's
``options.<name>`` mapping are passed to the factory as keyword arguments.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from eval.metrics.base import ImageMetric

MetricFactory = Callable[..., ImageMetric]


def _psnr(**options: Any) -> ImageMetric:
    from eval.metrics.psnr import PSNR

    return PSNR(**options)


def _ssim(**options: Any) -> ImageMetric:
    from eval.metrics.ssim import SSIM

    return SSIM(**options)


def _lpips(**options: Any) -> ImageMetric:
    from eval.metrics.lpips_metric import LPIPS

    return LPIPS(**options)


def _lpips_vgg(**options: Any) -> ImageMetric:
    from eval.metrics.lpips_metric import LPIPS

    return LPIPS(**{"net": "vgg", "name": "lpips_vgg", **options})


def _clip_score(**options: Any) -> ImageMetric:
    from eval.metrics.clip_score import CLIPScore

    return CLIPScore(**options)


def registry() -> dict[str, MetricFactory]:
    """Every known image metric: name (the ``metric`` column value) -> factory."""
    return {
        "psnr": _psnr,
        "ssim": _ssim,
        "lpips": _lpips,
        "lpips_vgg": _lpips_vgg,
        "clip_score": _clip_score,
    }


def build_metrics(
    names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[ImageMetric]:
    """Instantiate the named metrics, in order; an unknown name is a one-line ValueError."""
    known = registry()
    options = options or {}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"metrics: unknown metric {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(known))}"
        )
    stray = [n for n in options if n not in names]
    if stray:
        raise ValueError(f"metrics.options: {', '.join(map(repr, stray))} not in metrics.names {list(names)}")
    return [known[n](**dict(options.get(n, {}))) for n in names]


__all__ = ["ImageMetric", "MetricFactory", "build_metrics", "registry"]
