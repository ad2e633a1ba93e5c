"""EDICT: exact inversion with coupled latents (x, y) and affine mixing.

Reference: Wallace, Gokul, Naik, "EDICT: Exact Diffusion Inversion via Coupled
Transformations", arXiv 2211.12446, CVPR 2023 (the coupled denoising step with its mixing
layers, and their closed-form inverse; equation numbers not verified here); public code
``salesforce/EDICT``, ``edict_functions.py::coupled_stablediffusion`` (``forward_step``,
``reverse_step``, ``leapfrog_steps=True``).

One denoising step from ``src`` (noisier) to ``dst``, mixing weight ``p``::

    x' = c_self x + c_x0 x0(y) + c_eps eps(y) [+ c_noise n]      (prediction made at y, src)
    y' = c_self y + c_x0 x0(x') + c_eps eps(x') [+ c_noise n]    (made at x', still at src)
    x'' = p x' + (1 - p) y';   y'' = p y' + (1 - p) x''

Each line is affine in the latent it updates, so inversion undoes them in reverse order in
closed form, with the same two network calls per step. With leapfrog the update order flips
(y first, then x) on odd denoising steps, as the code does. The coefficients are the shared
sampler's (``gnri.core.step_coefficients``) rewritten for the coupling, in the x0/eps
parametrisation:

- ``coupling="eps"`` (EDICT): the updated latent's own x0 with the other latent's eps,
  ``c_self = c_x0/a_src``, ``c_eps = c_eps - c_x0 s_src/a_src``: for VP levels exactly the
  code's ``forward_step`` ``(a_dst/a_src) x + (s_dst - a_dst s_src/a_src) eps(y)``. Needs
  ``a > 0`` at every noisy level.
- ``coupling="velocity"``: ``x' = x + (sample_step(pred(y)) - (a x0 + s eps)(y))``, i.e.
  ``x + (sigma_dst - sigma_src) v(y)`` on flow levels: Euler with the other latent's velocity,
  defined up to ``sigma = 1`` where the eps form divides by ``a = 0`` (on VP levels it is a
  different coupled scheme, not EDICT).
- ``coupling="auto"`` (default): ``velocity`` on flow grids (``grid.family``), else ``eps``.
Both reduce to the shared sampler's step when ``x == y``. A stored ancestral noise enters both
updates as a fixed term.

Differences from the public code:
- The code runs the UNet and every step in float64 (a patched diffusers); here arithmetic runs
  in the latents' dtype: pass float64 latents (the adapter's dtype) to reproduce that.
- The code's guidance runs the unconditional and conditional UNet passes separately; here the
  denoiser applies guidance as for every other method (same 4 passes per step under CFG).
- The code mixes x first, then y with the new x, whatever the leapfrog parity; this follows
  it (the paper's order too). Flow levels and ancestral noise are extensions.

Returns ``z = x`` (the code reconstructs from ``latent_pair[0]``), ``extras["y"]`` and a
``sampler`` that denoises the stored pair; ``reconstruct`` and editing use it.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from gnri.catalog import inverter_info
from gnri.core import (
    Conditioning,
    Denoiser,
    Grid,
    InversionResult,
    Level,
    Prediction,
    StepInfo,
    Tensor,
    step_coefficients,
)

COUPLINGS = ("auto", "eps", "velocity")


def resolve_coupling(coupling: str, grid: Grid) -> str:
    """``auto`` -> ``velocity`` on flow grids (``grid.family``), ``eps`` otherwise; ``eps`` needs ``a > 0``."""
    if coupling not in COUPLINGS:
        raise ValueError(f"inverter edict: coupling must be one of {COUPLINGS}, got {coupling!r}")
    if coupling == "auto":
        coupling = "velocity" if grid.family == "flow" else "eps"
    if coupling == "eps":
        for level in grid.levels[1:]:
            if level.a <= 0.0:
                raise ValueError(
                    f"inverter edict: coupling='eps' needs a > 0 at every noisy level, level t={level.t} "
                    "has a=0; use coupling='velocity'"
                )
    return coupling


def _coefficients(
    src: Level, dst: Level, stochastic: bool, coupling: str
) -> tuple[float, float, float, float]:
    """``(c_self, c_x0, c_eps, c_noise)`` of one coupled update ``src -> dst``."""
    c_x0, c_eps, c_noise = step_coefficients(src, dst, stochastic)
    if coupling == "eps":
        return c_x0 / src.a, 0.0, c_eps - c_x0 * src.s / src.a, c_noise
    return 1.0, c_x0 - src.a, c_eps - src.s, c_noise


def _transfer(pred: Prediction, c_x0: float, c_eps: float, c_noise: float, noise: Tensor | None) -> Tensor:
    """The part of a coupled update that does not depend on the updated latent."""
    out = c_eps * pred.eps
    if c_x0 != 0.0:
        out = out + c_x0 * pred.x0
    if noise is not None and c_noise != 0.0:
        out = out + c_noise * noise
    return out


def _order(grid: Grid, i: int, leapfrog: bool) -> tuple[int, int]:
    """Which latent (0 = x, 1 = y) the denoising step ``i`` updates first, then second."""
    k = grid.num_steps - 1 - i  # the code counts denoising steps from the noisy end
    return (1, 0) if leapfrog and k % 2 == 1 else (0, 1)


def _denoise_step(
    denoiser: Denoiser, pair: list[Tensor], grid: Grid, i: int, cond: Conditioning, p: float,
    leapfrog: bool, coupling: str,
) -> list[Tensor]:
    """EDICT's step ``i`` (levels[i+1] -> levels[i]) on the pair: two updates, then mixing."""
    src, dst, noise = grid.levels[i + 1], grid.levels[i], grid.noise(i)
    c_self, c_x0, c_eps, c_noise = _coefficients(src, dst, noise is not None, coupling)
    for idx in _order(grid, i, leapfrog):
        pred = denoiser(pair[1 - idx], src, cond)
        pair[idx] = c_self * pair[idx] + _transfer(pred, c_x0, c_eps, c_noise, noise)
    x = p * pair[0] + (1.0 - p) * pair[1]
    return [x, (1.0 - p) * x + p * pair[1]]


def _invert_step(
    denoiser: Denoiser, pair: list[Tensor], grid: Grid, i: int, cond: Conditioning, p: float,
    leapfrog: bool, coupling: str,
) -> list[Tensor]:
    """The exact inverse of :func:`_denoise_step` (levels[i] -> levels[i+1])."""
    src, dst, noise = grid.levels[i + 1], grid.levels[i], grid.noise(i)
    c_self, c_x0, c_eps, c_noise = _coefficients(src, dst, noise is not None, coupling)
    y = (pair[1] - (1.0 - p) * pair[0]) / p
    pair = [(pair[0] - (1.0 - p) * y) / p, y]
    for idx in reversed(_order(grid, i, leapfrog)):
        pred = denoiser(pair[1 - idx], src, cond)
        pair[idx] = (pair[idx] - _transfer(pred, c_x0, c_eps, c_noise, noise)) / c_self
    return pair


def sample_pair(
    denoiser: Denoiser, grid: Grid, cond: Conditioning, z: Tensor, *, y: Tensor, mix_weight: float,
    leapfrog: bool, coupling: str,
) -> Tensor:
    """EDICT's coupled denoising from ``(z, y)`` at ``grid.levels[-1]``; returns x at ``levels[0]``."""
    if y.shape != z.shape:
        raise ValueError(f"inverter edict: stored y has shape {tuple(y.shape)} but z has {tuple(z.shape)}")
    coupling = resolve_coupling(coupling, grid)
    pair = [z, y]
    for i in reversed(range(grid.num_steps)):
        pair = _denoise_step(denoiser, pair, grid, i, cond, mix_weight, leapfrog, coupling)
    return pair[0]


@inverter_info(exact_reconstruction=True, keeps="2 latents (the coupled pair x, y)")
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    mix_weight: float = 0.93,
    leapfrog: bool = True,
    coupling: Literal["auto", "eps", "velocity"] = "auto",
) -> InversionResult:
    """EDICT inversion: 2 network calls per step; exact round trip through ``result.sampler``."""
    if not 0.0 < mix_weight <= 1.0:
        raise ValueError(f"inverter edict: mix_weight must be in (0, 1], got {mix_weight!r}")
    resolved = resolve_coupling(coupling, grid)
    pair, trajectory = [x0, x0], [x0]
    for i in range(grid.num_steps):
        pair = _invert_step(denoiser, pair, grid, i, cond, mix_weight, leapfrog, resolved)
        trajectory.append(pair[0])
    sampler = partial(sample_pair, y=pair[1], mix_weight=mix_weight, leapfrog=leapfrog, coupling=coupling)
    return InversionResult(
        z=pair[0], trajectory=tuple(trajectory), sampler=sampler, extras={"y": pair[1]},
        steps=tuple(StepInfo(iters=2) for _ in range(grid.num_steps)),
    )
