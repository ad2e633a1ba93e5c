"""One metric registry for every task: reconstruction, edit and diagnostic metrics.

- **Metrics** (:data:`registry`, by name: the ``metric`` column value) follow one small protocol,
  :class:`~eval.metrics.base.Metric`: ``name``, ``higher_is_better``, ``unavailable_reason()``
  (None: it can run here; else why not, e.g. no real weights) and ``score(sample)`` on a
  :class:`~eval.metrics.base.Sample` (candidate image, source image, captions, the edited region,
  the ground-truth target, the reconstruction), raising
  :class:`~eval.metrics.base.MetricUnavailable` when the sample lacks what it needs. The
  reconstruction metrics (psnr, ssim, lpips, lpips_vgg, clip_score) are pair metrics
  (:class:`~eval.metrics.base.ImageMetric`, ``metric(pred, target, prompts)``) whose ``score``
  compares the candidate with the source; the edit metrics live in :mod:`eval.metrics.edit`
  (:func:`~eval.metrics.edit.build_edit_metrics` builds the edit task's set). A metric whose
  source half does not depend on the method (LPIPS) also offers
  :class:`~eval.metrics.base.CachedReference`, which :func:`eval.metrics.scoring.score` uses.
- **Scoring**: :func:`eval.metrics.scoring.score` gives each metric's value for one sample: a
  float, ``Unavailable(reason)``, or a one-line failure (one metric never sinks the rest).
- **Diagnostics** (:mod:`eval.metrics.diagnostics`): the rows a task computes itself (VAE
  ceiling, NFE, clocks, memory, Gaussianity, interpolation, exact track), name ->
  higher_is_better per task; :func:`~eval.metrics.diagnostics.directions` orients any name.

To add a metric: write a class with ``name``, ``higher_is_better``, ``unavailable_reason()`` and
``score(sample)`` (a pair metric: ``__call__(pred, target, prompts)`` plus the
:class:`~eval.metrics.base.PairScore` mixin) in its own module (or in :mod:`eval.metrics.edit`)
and add one ``"name": factory`` entry to :data:`_FACTORIES` below, under the task whose config
lists it (imports stay inside the factory so a heavy metric costs nothing unless it is asked for).
Options from the config's ``options.<name>`` mapping are passed to the factory as keyword
arguments. A task's own diagnostic row is one entry in its table in :mod:`eval.metrics.diagnostics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:  # eval.records imports eval.metrics.diagnostics: keep this package free of torch at import
    from eval.metrics.base import ImageMetric, Metric

MetricFactory = Callable[..., "Metric"]


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


def _edit(name: str) -> MetricFactory:
    """The factory of edit metric ``name`` (:data:`eval.metrics.edit.FACTORIES`): options ``convention``
    (region | piebench), ``net``/``cache_dir`` (LPIPS ones), ``clip`` or CLIPScore keyword arguments
    (clip ones), ``structure`` or StructureDistance keyword arguments (structure_distance)."""

    def factory(**options: Any) -> Metric:
        from eval.metrics.edit import FACTORIES

        return FACTORIES[name](**options)

    factory.__name__ = f"_{name}"
    return factory


# task -> metric name -> factory: the metrics that task's rows can list.
_FACTORIES: dict[str, dict[str, MetricFactory]] = {
    "reconstruct": {
        "psnr": _psnr,
        "ssim": _ssim,
        "lpips": _lpips,
        "lpips_vgg": _lpips_vgg,
        "clip_score": _clip_score,
    },
    "edit": {name: _edit(name) for name in (
        "edit_success", "recon_success", "bg_psnr", "bg_ssim", "bg_lpips", "bg_mse", "lpips_to_source",
        "clip_whole", "clip_edited", "structure_distance", "structure_distance_standin", "target_psnr", "recon_psnr",
    )},
}


def registry(task: str | None = "reconstruct") -> dict[str, MetricFactory]:
    """Known metrics, name (the ``metric`` column value) -> factory: those of ``task``
    (``reconstruct``: the ones ``conf/metrics/*.yaml`` lists; ``edit``), or of every task (None)."""
    if task is None:
        return {name: f for table in _FACTORIES.values() for name, f in table.items()}
    if task not in _FACTORIES:
        raise ValueError(f"metrics: no metrics registered for task {task!r}; valid: {', '.join(_FACTORIES)}")
    return dict(_FACTORIES[task])


def build_metrics(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Metric]:
    """Instantiate the named metrics (of any task), in order; an unknown name is a one-line ValueError."""
    known = registry(None)
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


def __getattr__(name: str) -> Any:  # the protocols, without importing torch when eval.records loads
    if name in ("ImageMetric", "Metric", "Sample", "MetricUnavailable", "CachedReference"):
        from eval.metrics import base

        return getattr(base, name)
    raise AttributeError(f"module 'eval.metrics' has no attribute {name!r}")


__all__ = [
    "CachedReference", "ImageMetric", "Metric", "MetricFactory", "MetricUnavailable", "Sample", "build_metrics",
    "registry",
]
