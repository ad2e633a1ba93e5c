"""Paired statistics for per-image differences: bootstrap interval, Wilcoxon p, Holm, verdict.

Every method of a sweep runs on the same images, so methods are compared image by image: the
differences ``d_i = method_i - reference_i`` on the images both finished. Pure functions of
arrays; :mod:`eval.report.pairing` builds the differences from the tidy table.

The verdict rule (:data:`VERDICT_RULE`, printed under every verdict table):
``better`` / ``worse`` only when the Holm-corrected Wilcoxon signed-rank p < :data:`ALPHA` AND the
95% paired bootstrap interval of the mean difference excludes 0 on the better / worse side of
the metric's direction; otherwise ``no detectable difference``; with fewer than
:data:`MIN_PAIRED_IMAGES` paired images ``too few images`` (never a guess); a time compared with a
row timed under load: ``timing not comparable (load)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
CI_LEVEL = 0.95
MIN_PAIRED_IMAGES = 6
BOOTSTRAP_RESAMPLES = 4999
BOOTSTRAP_SEED = 0  # fixed: the same table gives the same intervals on every machine
BOOTSTRAP_METHOD = "BCa"
BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference"
TOO_FEW = "too few images"
LOADED = "timing not comparable (load)"
REFERENCE = "reference"
VERDICT_RULE = (
    f"Verdicts are paired, on the images both methods finished: Δ = method − reference, its mean with a "
    f"{int(CI_LEVEL * 100)}% paired bootstrap interval ({BOOTSTRAP_METHOD}, {BOOTSTRAP_RESAMPLES} resamples, "
    f"seed {BOOTSTRAP_SEED}); p: Wilcoxon signed-rank, Holm-corrected across the table's methods per metric. "
    f"`{BETTER}` / `{WORSE}`: Holm p < {ALPHA:g} and the interval excludes 0 on the better / worse side of the "
    f"metric's direction; else `{NO_DIFFERENCE}`; fewer than {MIN_PAIRED_IMAGES} paired images: `{TOO_FEW}`; "
    f"a time of a row timed under load (†): `{LOADED}`."
)


@dataclass(frozen=True)
class PairedResult:
    """Mean paired difference with its bootstrap interval and the (uncorrected) Wilcoxon p; NaN
    interval and p when fewer than :data:`MIN_PAIRED_IMAGES` pairs."""

    n: int
    mean: float
    low: float
    high: float
    p: float


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order; NaNs stay NaN and do not count in m."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def bootstrap_interval(diff: np.ndarray) -> tuple[float, float]:
    """The :data:`CI_LEVEL` bootstrap interval of the mean of ``diff`` (seeded); [d, d] when every
    difference is d; percentile where BCa is degenerate."""
    if np.all(diff == diff[0]):
        return float(diff[0]), float(diff[0])
    for method in (BOOTSTRAP_METHOD, "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = stats.bootstrap((diff,), np.mean, confidence_level=CI_LEVEL, n_resamples=BOOTSTRAP_RESAMPLES,
                                 method=method, rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
        if math.isfinite(ci.low) and math.isfinite(ci.high):
            return float(ci.low), float(ci.high)
    return math.nan, math.nan


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of ``diff`` (zeros dropped, scipy's default); 1 when all are zero."""
    if not np.any(diff != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.wilcoxon(diff).pvalue)
    return p if math.isfinite(p) else 1.0


def paired_test(diff: Sequence[float]) -> PairedResult:
    """:class:`PairedResult` of the finite differences ``diff`` (method - reference, one per image)."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    if n < MIN_PAIRED_IMAGES:
        return PairedResult(n, mean, math.nan, math.nan, math.nan)
    low, high = bootstrap_interval(d)
    return PairedResult(n, mean, low, high, wilcoxon_p(d))


def verdict(result: PairedResult, p_holm: float, higher_is_better: bool) -> str:
    """The verdict of one comparison (module docstring); ``p_holm`` is ``result.p`` after :func:`holm`."""
    if result.n < MIN_PAIRED_IMAGES:
        return TOO_FEW
    if not (math.isfinite(p_holm) and p_holm < ALPHA and math.isfinite(result.low)):
        return NO_DIFFERENCE
    gain_low, gain_high = (result.low, result.high) if higher_is_better else (-result.high, -result.low)
    if gain_low > 0:
        return BETTER
    if gain_high < 0:
        return WORSE
    return NO_DIFFERENCE
