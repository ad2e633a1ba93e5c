"""The in-run network clock (issue 26): :class:`gnri.core.CountingDenoiser` adds up the seconds
spent inside the network's forward and backward passes during an inversion, and the harness's
``overhead_ratio`` is the inversion time over that (never below 1).

Sleep-based, so robust on a loaded machine: ``time.sleep`` never returns early, so every lower
bound is tight; upper bounds are generous (a loaded machine only adds time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch

from gnri.models.base import AdapterDefaults

from eval.data import sample_dataset
from eval.tasks.reconstruct import evaluate
from eval.metrics import build_metrics
from eval.timing import in_run_network
from gnri.core import Conditioning, CountingDenoiser, InversionResult, Level, Prediction, StepInfo, Tensor
from gnri.core.counting import NetworkSeconds
from gnri.models.base import ScheduleSpec
from gnri.toy import vp_grid

NET_FORWARD_S = 0.020  # the toy network's forward pass
NET_BACKWARD_S = 0.030  # its backward pass
METHOD_S = 0.010  # the method's own work per step, outside the network
METHOD_BACKWARD_S = 0.040  # the backward of the method's own op after the call (not the network's)
STEPS = 4
SLACK = 1.5  # upper bounds: x1.5 plus LOAD_S for a loaded 2-core machine
LOAD_S = 0.1
CLOCK_EPS = 1e-6  # perf_counter resolution
LEVEL = Level(500.0, 0.7, 0.71)


class _SleepyTanh(torch.autograd.Function):
    """``tanh(z + shift)``, sleeping ``NET_FORWARD_S`` in the forward and ``NET_BACKWARD_S`` in the backward."""

    @staticmethod
    def forward(ctx, z: Tensor, shift: Tensor) -> Tensor:  # type: ignore[override]
        time.sleep(NET_FORWARD_S)
        out = torch.tanh(z + shift)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        time.sleep(NET_BACKWARD_S)
        (out,) = ctx.saved_tensors
        g = grad * (1 - out**2)
        return g, g.sum().reshape(())


class _SlowMethodOp(torch.autograd.Function):
    """The method's own identity after the network call, sleeping ``METHOD_BACKWARD_S`` in its backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        time.sleep(METHOD_BACKWARD_S)
        return grad


@dataclass
class SleepyNet:
    """A denoiser whose every call costs exactly one sleeping network pass (eps = tanh(z + shift))."""

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 1

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        eps = _SleepyTanh.apply(z, cond.positive["shift"])
        return Prediction((z - level.s * eps) / level.a, eps)


def _cond(requires_grad: bool = False) -> Conditioning:
    return Conditioning({"shift": torch.tensor(0.1, requires_grad=requires_grad)})


def forward_method(den: CountingDenoiser, z: Tensor, cond: Conditioning) -> Tensor:
    """``STEPS`` steps of: the method's own work, then one network call (no gradients)."""
    with torch.no_grad():
        for _ in range(STEPS):
            time.sleep(METHOD_S)
            z = den(z, LEVEL, cond).eps
    return z


def vjp_method(den: CountingDenoiser, z: Tensor, cond: Conditioning, wrt: str = "z") -> Tensor:
    """``STEPS`` steps of: the method's work, one call with gradients, the method's own slow op on
    its output, one VJP to ``z`` (or to the conditioning tensor, as null-text inversion does)."""
    for _ in range(STEPS):
        time.sleep(METHOD_S)
        with torch.enable_grad():
            zk = z.detach().requires_grad_(wrt == "z")
            out = _SlowMethodOp.apply(den(zk, LEVEL, cond).eps)
            (g,) = torch.autograd.grad(out.sum(), zk if wrt == "z" else cond.positive["shift"])
        z = z + 0.01 * g.detach() if wrt == "z" else z + 0.01 * out.detach()
    return z


def _timed(fn, *args, **kwargs) -> tuple[float, NetworkSeconds]:
    den = CountingDenoiser(SleepyNet())
    start = time.perf_counter()
    fn(den, *args, **kwargs)
    total = time.perf_counter() - start
    return total, den.counter.clock.read()


def _within(value: float, expected: float) -> bool:
    return expected - CLOCK_EPS <= value <= SLACK * expected + LOAD_S


def test_forward_network_time_and_non_network_share() -> None:
    total, net = _timed(forward_method, torch.zeros(2, 3), _cond())
    assert _within(net.forward_s, STEPS * NET_FORWARD_S)
    assert net.backward_s == 0.0 and net.unmeasured_backward == 0
    assert total - net.total_s >= STEPS * METHOD_S - CLOCK_EPS  # the method's sleeps are outside the clock
    assert total / net.total_s >= 1 - CLOCK_EPS
    share = 1 - net.total_s / total
    expected = METHOD_S / (NET_FORWARD_S + METHOD_S)
    assert expected - 0.15 <= share <= expected + 0.15


@pytest.mark.parametrize("wrt", ["z", "cond"])
def test_backward_network_time_excludes_the_methods_backward(wrt: str) -> None:
    total, net = _timed(vjp_method, torch.zeros(2, 3), _cond(requires_grad=wrt == "cond"), wrt=wrt)
    assert _within(net.forward_s, STEPS * NET_FORWARD_S)
    assert _within(net.backward_s, STEPS * NET_BACKWARD_S)
    assert net.backward_s < STEPS * (NET_BACKWARD_S + METHOD_BACKWARD_S)  # the method's own backward is not in it
    assert net.forward_s < STEPS * (NET_FORWARD_S + NET_BACKWARD_S)  # nor the backward in the forward
    non_network = STEPS * (METHOD_S + METHOD_BACKWARD_S)
    assert total - net.total_s >= non_network - CLOCK_EPS
    expected = non_network / (non_network + STEPS * (NET_FORWARD_S + NET_BACKWARD_S))
    assert expected - 0.15 <= 1 - net.total_s / total <= expected + 0.15


def test_backward_to_parameters_only_is_counted_unmeasured() -> None:
    weight = torch.nn.Parameter(torch.ones(3))

    def net(z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        return Prediction(z * weight, z * weight)

    den = CountingDenoiser(type("Net", (), {"forwards_per_call": lambda self, c: 1, "__call__": staticmethod(net)})())
    with torch.enable_grad():
        torch.autograd.grad(den(torch.ones(2, 3), LEVEL, _cond()).eps.sum(), weight)
    seconds = den.counter.clock.read()
    assert den.counter.backward == 1 and seconds.unmeasured_backward == 1 and seconds.backward_s == 0.0


def test_in_run_network_ratio_is_never_below_one() -> None:
    readings = [NetworkSeconds(0.3, 0.1), NetworkSeconds(0.1, 0.0), NetworkSeconds(0.5, 0.4)]
    out = in_run_network([0.45, 0.1, 1.0], readings)
    assert out.overhead_ratio == pytest.approx(1.111111, rel=1e-5) and out.overhead_ratio >= 1
    assert out.non_network_share == pytest.approx(0.1) and (out.forward_s, out.backward_s) == (0.3, 0.1)
    assert in_run_network([0.2], [NetworkSeconds()]).overhead_ratio is None
    with pytest.raises(ValueError):
        in_run_network([0.1, 0.2], readings[:1])


@dataclass
class SleepyAdapter(AdapterDefaults):
    """Identity "VAE", the sleepy network, a VP grid: the harness end to end in well under a second."""

    name: str = "sleepy"
    family: str = "vp"
    guidance_distilled: bool = False

    def image_size(self) -> tuple[int, int]:
        return (4, 4)

    def encode_images(self, images: Tensor) -> Tensor:
        return 2.0 * images - 1.0

    def decode_latents(self, latents: Tensor) -> Tensor:
        return ((latents + 1.0) / 2.0).clamp(0.0, 1.0)

    def encode_prompts(self, prompts, guidance_scale=1.0, negative_prompts=None) -> Conditioning:
        return _cond()

    def denoiser(self) -> SleepyNet:
        return SleepyNet()

    def grid(self, schedule: ScheduleSpec, latent_shape):
        return vp_grid(schedule.num_steps)


def sleepy_inverter(denoiser, x0: Tensor, grid, cond: Conditioning) -> InversionResult:
    """One VJP step per level (the method's own sleep and slow op included), z unchanged."""
    traj = [x0]
    for _ in range(grid.num_steps):
        time.sleep(METHOD_S)
        with torch.enable_grad():
            zk = traj[-1].detach().requires_grad_(True)
            out = _SlowMethodOp.apply(denoiser(zk, LEVEL, cond).eps)
            torch.autograd.grad(out.sum(), zk)
        traj.append(traj[-1])
    return InversionResult(traj[-1], tuple(traj), tuple(StepInfo(iters=1) for _ in range(grid.num_steps)))


def test_harness_rows_from_the_in_run_clock() -> None:
    df = evaluate(SleepyAdapter(), ScheduleSpec(num_steps=STEPS), sleepy_inverter, "sleepy", sample_dataset()[:1],
                  build_metrics(["psnr"]), warmup=0, repeats=3, progress=False, inverter_params={})
    rows = df.set_index("metric")
    value = {m: float(rows.loc[m, "value"]) for m in ("time_invert_s", "time_network_forward_in_run_s",
                                                       "time_network_backward_in_run_s", "overhead_ratio",
                                                       "non_network_share")}
    assert (rows.loc[["overhead_ratio", "non_network_share", "time_network_forward_in_run_s"], "status"] == "ok").all()
    assert rows.loc["overhead_ratio_bare", "status"] == "unavailable"  # the toy has no bare network call
    assert _within(value["time_network_forward_in_run_s"], STEPS * NET_FORWARD_S)
    assert _within(value["time_network_backward_in_run_s"], STEPS * NET_BACKWARD_S)
    assert value["overhead_ratio"] >= 1 - CLOCK_EPS
    assert value["non_network_share"] == pytest.approx(1 - 1 / value["overhead_ratio"], abs=0.05)
    assert value["non_network_share"] >= STEPS * (METHOD_S + METHOD_BACKWARD_S) / value["time_invert_s"] - 0.02


@dataclass
class FakeEvent:
    """Stands in for a CUDA timing event: ``elapsed_time`` in ms from ``at`` (ms), counts syncs."""

    at: float
    syncs: int = 0

    def synchronize(self) -> None:
        self.syncs += 1

    def elapsed_time(self, end: FakeEvent) -> float:
        return end.at - self.at


def test_device_events_stay_pending_until_read() -> None:
    """The CUDA path: event pairs are kept, not read, until ``read`` (after the timed region)."""
    from gnri.core.counting import NetworkClock

    clock = NetworkClock()
    ends = [FakeEvent(30.0), FakeEvent(80.0)]
    clock.add("forward", FakeEvent(10.0), ends[0])  # type: ignore[arg-type]
    clock.add("backward", FakeEvent(50.0), ends[1])  # type: ignore[arg-type]
    assert clock.forward_s == 0.0 and len(clock.pending) == 2 and all(e.syncs == 0 for e in ends)
    lap = clock.take()
    assert not clock.pending and len(lap.pending) == 2
    seconds = lap.read()
    assert seconds.forward_s == pytest.approx(0.020) and seconds.backward_s == pytest.approx(0.030)
    assert not lap.pending and lap.read() == seconds  # read once: idempotent
