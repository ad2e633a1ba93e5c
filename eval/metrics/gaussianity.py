"""How Gaussian an inverted latent is: per-sample statistics against N(0, I).

A perfect inversion to pure noise (flow models at sigma = 1) should give values that look like
i.i.d. N(0, 1) draws. For VP grids the last level keeps a little signal (``a_T > 0``: 0.068 for
SD's schedule), so small deviations are expected there; compare methods, not absolutes.

Statistics per sample over all its values (layout-agnostic, packed Flux latents included):
``mean``, ``var`` (population), ``skew``, ``excess_kurtosis``, and the one-sample
Kolmogorov-Smirnov test against the fully specified N(0, 1): ``ks_stat`` and ``ks_pvalue``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from eval.metrics.base import Tensor

STATS = ("mean", "var", "skew", "excess_kurtosis", "ks_stat", "ks_pvalue")


def gaussianity(latent: Tensor) -> dict[str, Tensor]:
    """Per-sample statistics of ``latent`` (B, ...) against N(0, I): each value has shape (B,), float64, CPU."""
    if latent.ndim < 2:
        raise ValueError(f"gaussianity: latent must be (B, ...), got shape {tuple(latent.shape)}")
    x = latent.detach().flatten(1).to("cpu", torch.float64).numpy()
    if x.shape[1] < 2:
        raise ValueError(f"gaussianity: need at least 2 values per sample, got {x.shape[1]}")
    ks = [stats.kstest(row, "norm") for row in x]
    out = {
        "mean": x.mean(axis=1),
        "var": x.var(axis=1),
        "skew": stats.skew(x, axis=1),
        "excess_kurtosis": stats.kurtosis(x, axis=1, fisher=True),
        "ks_stat": np.array([r.statistic for r in ks]),
        "ks_pvalue": np.array([r.pvalue for r in ks]),
    }
    return {k: torch.from_numpy(np.asarray(out[k], dtype=np.float64)) for k in STATS}


class LatentGaussianity:
    """Latent metric: ``__call__(latent) -> {"latent_<stat>": (B,)}``; rows for the tidy table."""

    prefix: str = "latent_"

    def names(self) -> tuple[str, ...]:
        return tuple(self.prefix + s for s in STATS)

    def unavailable_reason(self) -> str | None:
        return None

    def __call__(self, latent: Tensor) -> dict[str, Tensor]:
        return {self.prefix + k: v for k, v in gaussianity(latent).items()}
