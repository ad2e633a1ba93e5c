"""Network-evaluation counting, outside the inverter so no method can misreport its cost."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gnri.core.types import Conditioning, Denoiser, Level, Prediction, Tensor


@dataclass
class NFECounter:
    """Network forward passes and backward (vector-Jacobian) passes, counted separately.

    A classifier-free-guided call counts 2 forwards; a backward through it counts 2 backwards.
    """

    forward: int = 0
    backward: int = 0

    def reset(self) -> None:
        self.forward = 0
        self.backward = 0


class _CountBackward(torch.autograd.Function):
    """Identity on (x0, eps) whose backward adds ``n`` to a counter once per backward pass."""

    @staticmethod
    def forward(ctx, x0: Tensor, eps: Tensor, counter: NFECounter, n: int):  # type: ignore[override]
        ctx.counter, ctx.n = counter, n
        return x0.view_as(x0), eps.view_as(eps)

    @staticmethod
    def backward(ctx, g_x0: Tensor, g_eps: Tensor):  # type: ignore[override]
        ctx.counter.backward += ctx.n
        return g_x0, g_eps, None, None


@dataclass
class CountingDenoiser:
    """Wraps a denoiser and counts its forward and backward network passes."""

    inner: Denoiser
    counter: NFECounter = field(default_factory=NFECounter)

    def forwards_per_call(self, cond: Conditioning) -> int:
        return self.inner.forwards_per_call(cond)

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        n = self.inner.forwards_per_call(cond)
        self.counter.forward += n
        pred = self.inner(z, level, cond)
        if torch.is_grad_enabled() and (pred.x0.requires_grad or pred.eps.requires_grad):
            x0, eps = _CountBackward.apply(pred.x0, pred.eps, self.counter, n)
            pred = Prediction(x0, eps)
        return pred
