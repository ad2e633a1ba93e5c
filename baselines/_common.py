"""Helpers shared by the baseline inverters (no inverter lives here)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gnri.core import Conditioning, Prediction, StepProblem, Tensor


def require_cfg(method: str, cond: Conditioning) -> None:
    """Refuse settings without classifier-free guidance, and guidance-distilled models (which
    were not trained for it, even when a guidance scale is given)."""
    if cond.guidance_distilled:
        raise ValueError(
            f"inverter {method}: needs classifier-free guidance, which a guidance-distilled model "
            "(model.guidance_distilled=true: SDXL-Turbo, FLUX.1) was not trained for"
        )
    if not cond.uses_cfg:
        branch = "no negative branch" if cond.negative is None else "a negative branch"
        raise ValueError(
            f"inverter {method}: needs classifier-free guidance (a negative branch and "
            f"guidance_scale != 1), got {branch} and guidance_scale={cond.guidance_scale}; "
            "it does not apply to guidance-distilled settings"
        )


def check_positive_int(method: str, name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"inverter {method}: {name} must be an integer >= {minimum}, got {value!r}")


def check_tol(method: str, tol: float | None) -> None:
    if tol is not None and not tol > 0.0:
        raise ValueError(f"inverter {method}: tol must be > 0 or None (no early stop), got {tol!r}")


def first_prediction(problem: StepProblem) -> Prediction:
    """The prediction at the known latent ``x``, exactly as DDIM inversion makes it.

    Network time of the noisier level, ``x``'s own scales (``StepProblem.explicit_level``), so
    an iterative method's first iterate is DDIM inversion (identical for eps-prediction models).
    """
    return problem.denoiser(problem.x, problem.explicit_level, problem.cond)


def per_sample(mask: Tensor, like: Tensor) -> Tensor:
    """A (B,) mask shaped to broadcast against ``like`` (B, ...)."""
    return mask.view(mask.shape[0], *([1] * (like.ndim - 1)))


@dataclass
class IterateSelector:
    """Which iterate each sample returns: the latest, or the best by residual; frozen once converged.

    ``offer(candidate, residual)`` records one iteration's candidate output (B, ...) with the
    per-sample residual (B,) of the point it came from, and says whether every sample has
    reached ``tol`` (a host sync, made only when ``tol`` is set).
    """

    tol: float | None
    keep_best: bool = False
    out: Tensor | None = None
    best: Tensor | None = None
    done: Tensor | None = None
    residuals: list[Tensor] = field(default_factory=list)

    def offer(self, candidate: Tensor, residual: Tensor) -> bool:
        self.residuals.append(residual)
        if self.out is None or self.best is None or self.done is None:
            self.out, self.best = candidate, residual
            self.done = torch.zeros_like(residual, dtype=torch.bool)
        else:
            take = ~self.done
            if self.keep_best:
                take = take & (residual < self.best)
            self.out = torch.where(per_sample(take, candidate), candidate, self.out)
            self.best = torch.where(take, residual, self.best)
        if self.tol is None:
            return False
        self.done = self.done | (residual < self.tol)
        return bool(self.done.all())
