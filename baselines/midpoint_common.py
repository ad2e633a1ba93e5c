"""Midpoint-type integration of the rectified-flow ODE, shared by RF-Solver and FireFlow.

Both methods solve ``dz/dsigma = v(z, sigma)`` with ``v = eps - x0`` (the velocity of
``z = (1 - sigma) x0 + sigma eps``) by one rule run in either direction: up the grid
(inversion, sigma increasing) or down it (sampling). One step from level ``src`` to level
``dst`` (``h = dst.s - src.s``, negative when sampling) with a first velocity ``v1``::

    z_mid = z + (h / 2) v1                       # half an Euler step
    v2    = v(z_mid, mid(src, dst))              # one network call at the midpoint level
    rf_solver:  z' = z + h v1 + (h^2 / 2) (v2 - v1) / (h / 2)   # RF-Solver's 2nd-order Taylor step
    fireflow:   z' = z + h v2                                  # FireFlow's midpoint step

(the two updates are equal in exact arithmetic; each method is written in its own paper's
form). ``v1`` is a network call at ``(z, src)`` (RF-Solver: 2 calls per step), or, with
``reuse``, the previous step's ``v2`` (FireFlow: one call per step after the first).

The midpoint level interpolates ``t``, ``a`` and ``s`` linearly (``(src + dst) / 2``, the same
floats in both directions). That is exact for rectified flow (``a = 1 - s``) and, with the
Flux adapter's ``t = sigma``, the official codes' ``t_curr + (t_prev - t_curr) / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from baselines.flow_common import require_flow, velocity
from gnri.core import Conditioning, Denoiser, Grid, Level, StepInfo, Tensor

Update = Literal["taylor", "midpoint"]


def midpoint_level(src: Level, dst: Level) -> Level:
    """The level halfway between ``src`` and ``dst`` (symmetric in its arguments)."""
    return Level(t=0.5 * (src.t + dst.t), a=0.5 * (src.a + dst.a), s=0.5 * (src.s + dst.s))


@dataclass(frozen=True)
class Pass:
    """One integration pass: the latents at every level visited, and calls made per step."""

    latents: tuple[Tensor, ...]
    calls: tuple[int, ...]


def integrate(
    denoiser: Denoiser, z: Tensor, levels: Sequence[Level], cond: Conditioning, *, update: Update, reuse: bool,
    method: str,
) -> Pass:
    """Integrate from ``levels[0]`` through every level in order (either direction).

    ``reuse``: the first velocity of every step but the first is the previous step's midpoint
    velocity (FireFlow), else a fresh call at the step's start (RF-Solver).
    """
    latents, calls, carried = [z], [], None
    for src, dst in zip(levels[:-1], levels[1:]):
        h = dst.s - src.s
        if h == 0.0:  # a repeated level: nothing to integrate
            raise ValueError(f"{method}: the grid repeats level t={src.t}; steps need distinct noise levels")
        n = 1
        if carried is None:
            v1 = velocity(denoiser(z, src, cond))
            n = 2
        else:
            v1 = carried
        v2 = velocity(denoiser(z + (0.5 * h) * v1, midpoint_level(src, dst), cond))
        if update == "taylor":
            z = z + h * v1 + (0.5 * h * h) * ((v2 - v1) / (0.5 * h))
        else:
            z = z + h * v2
        carried = v2 if reuse else None
        latents.append(z)
        calls.append(n)
    return Pass(tuple(latents), tuple(calls))


def step_infos(calls: Sequence[int]) -> tuple[StepInfo, ...]:
    """One :class:`StepInfo` per step, ``iters`` = the network calls that step made."""
    return tuple(StepInfo(iters=n) for n in calls)


def sample(
    denoiser: Denoiser, grid: Grid, cond: Conditioning, z: Tensor, *, method: str, update: Update, reuse: bool
) -> Tensor:
    """The method's own sampler (``InversionResult.sampler``): ``grid.levels[-1] -> levels[0]``."""
    require_flow(method, grid)
    return integrate(denoiser, z, grid.levels[::-1], cond, update=update, reuse=reuse, method=method).latents[-1]
