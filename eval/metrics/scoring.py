"""One sample's metric values: a float each, ``Unavailable(reason)``, or a one-line failure.

:func:`score` is what every task calls on each row's :class:`~eval.metrics.base.Sample`;
:func:`unavailable_reasons` is the once-per-run availability check (weights, packages).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import torch

from eval.metrics.base import CachedReference, Metric, MetricUnavailable, Sample, one_line
from eval.records import Unavailable

log = logging.getLogger(__name__)
Value = float | str | Unavailable  # a number, a failure reason, or unavailable


def unavailable_reasons(metrics: Sequence[Metric]) -> dict[str, str]:
    """Metric name -> why it cannot run here (a raising check counts as a reason too)."""
    out = {}
    for metric in metrics:
        try:
            reason = metric.unavailable_reason()
        except Exception as err:  # noqa: BLE001
            reason = f"availability check raised {type(err).__name__}: {one_line(err)}"
        if reason is not None:
            out[metric.name] = reason
    return out


def _value(metric: Metric, sample: Sample, features: Callable[[Metric], Any] | None) -> float:
    if features is not None and isinstance(metric, CachedReference):
        values = metric.score_with(sample.candidate, features(metric), [sample.caption])
    elif hasattr(metric, "score"):
        values = metric.score(sample)
    else:  # a plain ImageMetric from outside: __call__(pred, target, prompts) only
        values = metric(sample.candidate, sample.reference, [sample.caption])  # type: ignore[operator]
    return float(values.reshape(-1)[0].item())


def score(
    metrics: Sequence[Metric],
    sample: Sample,
    *,
    unavailable: Mapping[str, str] | None = None,
    features: Callable[[Metric], Any] | None = None,
) -> dict[str, Value]:
    """Each metric's single value for ``sample``, under ``torch.no_grad()``, in order.

    ``Unavailable(reason)`` when ``unavailable`` names the metric (:func:`unavailable_reasons`) or
    its ``score`` raises :class:`~eval.metrics.base.MetricUnavailable`; ``"<Error>: <first line>"``
    for any other exception (logged; one metric never sinks the rest). ``features(metric)``, when
    given, supplies a :class:`~eval.metrics.base.CachedReference` metric's source half (e.g. from
    the run's cache: ``metric.reference_features(sample.reference, [sample.caption])``), and the
    value is ``metric.score_with(sample.candidate, features, [sample.caption])``.
    """
    unavailable = unavailable or {}
    out: dict[str, Value] = {}
    for metric in metrics:
        if metric.name in unavailable:
            out[metric.name] = Unavailable(unavailable[metric.name])
            continue
        try:
            with torch.no_grad():
                out[metric.name] = _value(metric, sample, features)
        except MetricUnavailable as err:
            out[metric.name] = Unavailable(str(err))
        except Exception as err:  # noqa: BLE001 - one metric never sinks the rest
            log.exception("metric %s failed", metric.name)
            out[metric.name] = f"{type(err).__name__}: {one_line(err)}"
    return out


__all__ = ["Value", "score", "unavailable_reasons"]
