"""Helpers shared by the rectified-flow inverters (RF-Inversion, Uni-Inv, FTEdit); no inverter lives here.

On a flow grid (``grid.family == "flow"``, ``a = 1 - sigma``, ``s = sigma``) the network's
velocity is ``v = eps - x0`` (:class:`gnri.core.Prediction`, as the Flux adapter converts it)
and the Euler step from level ``src`` to level ``dst`` is ``z + (sigma_dst - sigma_src) v``,
the shared sampler's step (``dst.a * x0 + dst.s * eps``) written in the form the papers use.
"""

from __future__ import annotations

import math

import torch

from gnri.core import Conditioning, Grid, Level, Prediction, Tensor

FLOW_TOLERANCE = 1e-6  # how far ``a + s`` may be from 1 on a flow level (float round-off of the adapter)


def require_flow(method: str, grid: Grid) -> None:
    """Refuse a grid that is not a deterministic rectified-flow grid, in one line naming ``method``."""
    if grid.family != "flow":
        raise ValueError(
            f"inverter {method}: needs a rectified-flow grid (grid.family='flow', e.g. a Flux model with a "
            f"flow_euler schedule), got grid.family={grid.family!r}"
        )
    if grid.noises is not None:
        raise ValueError(f"inverter {method}: needs a deterministic flow grid, got one with stored ancestral noise")
    for level in grid.levels:
        if not math.isclose(level.a + level.s, 1.0, abs_tol=FLOW_TOLERANCE):
            raise ValueError(
                f"inverter {method}: flow level t={level.t} has a + s = {level.a + level.s}, expected 1"
            )


def velocity(pred: Prediction) -> Tensor:
    """The rectified-flow velocity ``v = eps - x0`` (points from data to noise)."""
    return pred.eps - pred.x0


def euler(z: Tensor, v: Tensor, src: Level, dst: Level) -> Tensor:
    """One Euler step of ``dz/dsigma = v`` from ``src`` to ``dst`` (either direction)."""
    return z + (dst.s - src.s) * v


def check_unit_interval(method: str, name: str, value: float) -> None:
    """``value`` must be a number in [0, 1] (one-line error naming the option)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"inverter {method}: {name} must be a number in [0, 1], got {value!r}")


def _same_branch(a: dict[str, Tensor] | None, b: dict[str, Tensor] | None) -> bool:
    if a is None or b is None:
        return a is b
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, Tensor) != isinstance(y, Tensor):
            return False
        if not isinstance(x, Tensor):
            if x != y:
                return False
        elif x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
            return False
    return True


def same_conditioning(a: Conditioning, b: Conditioning) -> bool:
    """Whether two conditionings make the same denoiser calls (same object, or equal tensors and scale)."""
    if a is b:
        return True
    return (
        a.guidance_scale == b.guidance_scale
        and _same_branch(a.positive, b.positive)
        and _same_branch(a.negative, b.negative)
    )
