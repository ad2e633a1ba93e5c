"""Anderson-accelerated fixed-point inversion (AIDI-A).

Reference: Pan et al., "Effective Real Image Editing with Accelerated Iterative Diffusion
Inversion" (AIDI), arXiv 2309.04907, ICCV 2023: the per-step implicit equation ``z = f(z)``
(arXiv 2312.12540, Eq. 4) solved by fixed-point iteration with Anderson acceleration. The
update is Anderson's type-II form as written by Walker & Ni (SIAM J. Numer. Anal. 49(4), 2011,
Alg. AA), with ``g_k = f(z_k)``, residual ``F_k = g_k - z_k`` and the last ``m`` differences
``dF``, ``dG``::

    gamma   = argmin || F_k - dF gamma ||_2                          (per sample)
    z_{k+1} = z_k + beta F_k - (dZ + beta dF) gamma,   dZ = dG - dF   (beta = damping)

With ``beta = 1`` this is ``g_k - dG gamma``. One network call per iteration.

There is no official AIDI code; defaults follow the reimplementation in
``wmchen/diffusion-inversion`` (``inversions/unet_based/aidi``): window ``m = 3`` and
``1 + 5`` network calls per step (``max_iters = 6``), returning the last ``f`` evaluation.

Differences from that reimplementation (and the paper, whose text was not available here):
- The least-squares problem is solved on the device in torch, per sample (normal equations in
  float64 with a Tikhonov term ``regularization * max diag`` of the Gram matrix), not on the
  CPU in NumPy over the flattened batch; the whole batch is never mixed into one problem.
- The first iterate's prediction is made at ``x`` exactly as DDIM inversion makes it; on flow
  grids the map holds the velocity fixed (see ``baselines.fixed_point``).
- ``tol`` (optional, off by default) stops a sample once ``RMS(z - f(z)) < tol``; ``keep_best``
  (off by default) returns the ``f(z_k)`` with the smallest residual.
- AIDI-E (the 2-point empirical average) and AIDI's blended guidance for editing are not here.

Reported per step: ``iters`` = network calls; ``series["residual"]`` = per-sample
``RMS(z_k - f(z_k))`` for every iterate.
"""

from __future__ import annotations

from baselines._common import (
    IterateSelector,
    check_positive_int,
    check_tol,
    first_prediction,
)
from gnri.catalog import inverter_info
from gnri.core import (
    Conditioning,
    Denoiser,
    Grid,
    InversionResult,
    StepInfo,
    StepProblem,
    Tensor,
    invert_with,
    per_sample_rms,
)
from gnri.core.anderson import combine, mixing_coefficients


@inverter_info()
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    window: int = 3,
    max_iters: int = 6,
    tol: float | None = None,
    damping: float = 1.0,
    regularization: float = 1e-10,
    keep_best: bool = False,
) -> InversionResult:
    """Anderson-accelerated fixed-point inversion: ``max_iters`` network calls per step."""
    check_positive_int("anderson", "window", window)
    check_positive_int("anderson", "max_iters", max_iters)
    check_tol("anderson", tol)
    if not 0.0 < damping <= 1.0:
        raise ValueError(f"inverter anderson: damping must be in (0, 1], got {damping!r}")
    if not regularization >= 0.0:
        raise ValueError(f"inverter anderson: regularization must be >= 0, got {regularization!r}")

    def solve(problem: StepProblem) -> tuple[Tensor, StepInfo]:
        select = IterateSelector(tol, keep_best)
        z, dF, dG = problem.x, [], []
        F_prev = g_prev = None
        for k in range(max_iters):
            pred = first_prediction(problem) if k == 0 else problem.predict(z)
            g = problem.implicit_map(pred)
            F = g - z
            if select.offer(g, per_sample_rms(F)) or k == max_iters - 1:
                break
            if F_prev is not None and g_prev is not None:
                dF, dG = (dF + [F - F_prev])[-window:], (dG + [g - g_prev])[-window:]
            z_next = z + damping * F
            if dF:
                gamma = mixing_coefficients(dF, F, regularization)
                dZ = [dg - df for dg, df in zip(dG, dF)]
                z_next = z_next - combine([dz + damping * df for dz, df in zip(dZ, dF)], gamma)
            F_prev, g_prev, z = F, g, z_next
        assert select.out is not None
        return select.out, StepInfo(iters=len(select.residuals), series={"residual": tuple(select.residuals)})

    return invert_with(solve, denoiser, x0, grid, cond)
