"""Network-evaluation counting and the in-run network clock, outside the inverter so no method can
misreport its cost.

:class:`CountingDenoiser` counts every forward pass and every backward (vector-Jacobian) pass of
the wrapped denoiser, and its :class:`NetworkClock` adds up the seconds spent inside those passes
during the inversion itself, forward and backward apart, so that ``inversion time / network time``
compares two clocks read on the same calls of the same run (never below 1).

How each pass is timed:

- forward: the wrapped call ``inner(z, level, cond)`` (the network, the adapter's output
  conversion and, with classifier-free guidance, the mix of the branches);
- backward: from the moment the gradient enters the call's outputs to the moment it leaves
  through its inputs. Two identity autograd Functions bracket the call: :class:`_CountBackward`
  on the outputs (its backward runs first: the clock starts) and :class:`_EnterNetwork` on the
  inputs that require a gradient (``z`` and the float tensors of ``cond``; its backward runs last:
  the clock stops). autograd runs ready nodes in decreasing creation order (sequence number), and
  every node of the call was created after ``_EnterNetwork`` and before ``_CountBackward``, so the
  two markers bracket exactly the call's own backward nodes; the method's own backward work
  (created before or after the call) falls outside. A backward pass that reaches no input of the
  call (gradients to parameters only) cannot be bracketed: it is counted in
  ``NetworkSeconds.unmeasured_backward``;
- clocks: on CPU ``time.perf_counter`` (the work is synchronous); on CUDA a pair of
  ``torch.cuda.Event(enable_timing=True)`` recorded on the current stream around each pass, kept
  in a list and read by :meth:`NetworkClock.read` after one synchronisation: no per-call sync.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from gnri.core.types import Conditioning, Denoiser, Level, Prediction, Tensor

Pass = Literal["forward", "backward"]
Mark = float | torch.cuda.Event  # a perf_counter reading, or a recorded CUDA event


def _mark(device: torch.device) -> Mark:
    """Now, on ``device``'s clock: a CUDA event recorded on the current stream, else perf_counter."""
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(device))
        return event
    return time.perf_counter()


@dataclass(frozen=True)
class NetworkSeconds:
    """Seconds spent inside the network's forward and backward passes (whole batch calls), and
    how many backward passes could not be timed (see the module docstring)."""

    forward_s: float = 0.0
    backward_s: float = 0.0
    unmeasured_backward: int = 0

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s


@dataclass
class NetworkClock:
    """Accumulates the seconds of each forward and backward pass; CUDA event pairs stay pending
    until :meth:`read` (one synchronisation), CPU intervals are added at once."""

    forward_s: float = 0.0
    backward_s: float = 0.0
    unmeasured_backward: int = 0
    pending: list[tuple[Pass, torch.cuda.Event, torch.cuda.Event]] = field(default_factory=list, repr=False)

    def add(self, kind: Pass, start: Mark, end: Mark) -> None:
        """One pass from ``start`` to ``end`` (both from the same device's clock)."""
        if isinstance(start, float) and isinstance(end, float):
            self._accumulate(kind, end - start)
        else:
            self.pending.append((kind, start, end))  # type: ignore[arg-type]

    def _accumulate(self, kind: Pass, seconds: float) -> None:
        if kind == "forward":
            self.forward_s += seconds
        else:
            self.backward_s += seconds

    def read(self) -> NetworkSeconds:
        """The seconds so far; waits once for pending CUDA events (call it after the timed region)."""
        if self.pending:
            self.pending[-1][2].synchronize()
            for kind, start, end in self.pending:
                end.synchronize()  # a no-op once the last one is done (same stream); safe across streams
                self._accumulate(kind, start.elapsed_time(end) / 1000.0)
            self.pending.clear()
        return NetworkSeconds(self.forward_s, self.backward_s, self.unmeasured_backward)

    def reset(self) -> None:
        self.forward_s, self.backward_s, self.unmeasured_backward = 0.0, 0.0, 0
        self.pending.clear()

    def take(self) -> NetworkClock:
        """Move everything so far into a new clock (no synchronisation: read it later) and reset."""
        out = NetworkClock(self.forward_s, self.backward_s, self.unmeasured_backward, list(self.pending))
        self.reset()
        return out


@dataclass
class NFECounter:
    """Network forward passes and backward (vector-Jacobian) passes, counted separately, and the
    clock of the seconds spent in them (``clock``, reset with the counts).

    A classifier-free-guided call counts 2 forwards; a backward through it counts 2 backwards.
    """

    forward: int = 0
    backward: int = 0
    clock: NetworkClock = field(default_factory=NetworkClock, repr=False, compare=False)

    def reset(self) -> None:
        self.forward = 0
        self.backward = 0
        self.clock.reset()


@dataclass
class _BackwardSpan:
    """One call's backward bracket: started by :class:`_CountBackward`, stopped by :class:`_EnterNetwork`."""

    clock: NetworkClock
    device: torch.device
    has_inputs: bool  # an _EnterNetwork marker sits on the call's inputs
    start: Mark | None = None


class _EnterNetwork(torch.autograd.Function):
    """Identity on the call's grad-requiring inputs; its backward runs once the gradient has left
    the call: it stops the call's backward clock."""

    @staticmethod
    def forward(ctx, span: _BackwardSpan, *inputs: Tensor):  # type: ignore[override]
        ctx.span = span
        return tuple(x.view_as(x) for x in inputs)

    @staticmethod
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        span: _BackwardSpan = ctx.span
        if span.start is not None:
            span.clock.add("backward", span.start, _mark(span.device))
            span.start = None
        return (None, *grads)


class _CountBackward(torch.autograd.Function):
    """Identity on (x0, eps) whose backward adds ``n`` to a counter once per backward pass and
    starts the call's backward clock (the gradient is about to enter the call)."""

    @staticmethod
    def forward(ctx, x0: Tensor, eps: Tensor, counter: NFECounter, n: int, span: _BackwardSpan):  # type: ignore[override]
        ctx.counter, ctx.n, ctx.span = counter, n, span
        return x0.view_as(x0), eps.view_as(eps)

    @staticmethod
    def backward(ctx, g_x0: Tensor, g_eps: Tensor):  # type: ignore[override]
        ctx.counter.backward += ctx.n
        span: _BackwardSpan = ctx.span
        if span.has_inputs:
            span.start = _mark(span.device)
        else:
            span.clock.unmeasured_backward += ctx.n
        return g_x0, g_eps, None, None, None


def _grad_inputs(z: Tensor, cond: Conditioning) -> list[tuple[str, str | None, Tensor]]:
    """The call's inputs a gradient can reach: ``(where, key, tensor)`` with where ``z``,
    ``positive`` or ``negative``."""
    found: list[tuple[str, str | None, Tensor]] = [("z", None, z)] if z.requires_grad else []
    for where, branch in (("positive", cond.positive), ("negative", cond.negative or {})):
        found += [(where, k, v) for k, v in branch.items() if isinstance(v, Tensor) and v.requires_grad]
    return found


def _marked(z: Tensor, cond: Conditioning, span: _BackwardSpan) -> tuple[Tensor, Conditioning]:
    """``z`` and ``cond`` with their grad-requiring tensors passed through :class:`_EnterNetwork`."""
    found = _grad_inputs(z, cond)
    outs = _EnterNetwork.apply(span, *(t for _, _, t in found))
    branches = {"positive": dict(cond.positive), "negative": dict(cond.negative) if cond.negative else None}
    for (where, key, _), out in zip(found, outs):
        if where == "z":
            z = out
        else:
            branches[where][key] = out  # type: ignore[index]
    return z, replace(cond, positive=branches["positive"], negative=branches["negative"])


@dataclass
class CountingDenoiser:
    """Wraps a denoiser: counts its forward and backward network passes and clocks them
    (``counter.clock``; the module docstring says what each clock brackets)."""

    inner: Denoiser
    counter: NFECounter = field(default_factory=NFECounter)

    def forwards_per_call(self, cond: Conditioning) -> int:
        return self.inner.forwards_per_call(cond)

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        n = self.inner.forwards_per_call(cond)
        self.counter.forward += n
        clock = self.counter.clock
        grad = torch.is_grad_enabled()
        span = _BackwardSpan(clock, z.device, has_inputs=grad and bool(_grad_inputs(z, cond)))
        if span.has_inputs:
            z, cond = _marked(z, cond, span)
        start = _mark(z.device)
        pred = self.inner(z, level, cond)
        clock.add("forward", start, _mark(z.device))
        if grad and (pred.x0.requires_grad or pred.eps.requires_grad):
            x0, eps = _CountBackward.apply(pred.x0, pred.eps, self.counter, n, span)
            pred = Prediction(x0, eps)
        return pred
