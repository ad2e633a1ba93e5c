"""ReNoise inversion: renoising fixed-point iterations with averaged noise predictions.

Reference: Garibi et al., "ReNoise: Real Image Inversion Through Iterative Noising",
arXiv 2403.14602, ECCV 2024 (the method's iterative renoising and averaging; equation numbers
were not verified here); public code ``garibida/ReNoise-Inversion``,
``src/renoise_inversion.py::inversion_step`` with the defaults of ``src/config.py``.

Per step, with ``x`` at the cleaner level: ``z^(0) = x``; for ``i = 0..K`` predict ``eps_i`` at
``z^(i)`` and set ``z^(i+1) = f(eps_i)`` (:meth:`gnri.core.StepProblem.implicit_map`, the
scheduler's ``inv_step``). With averaging on, the step's output is ``f(mean of eps_i)`` over
``i`` in ``average_range`` (half-open), the code's running mean ``j/(j+1) avg + eps/(j+1)``.
Steps close to the data (``t < 250`` in the code) use at most ``max_first_step_renoise_steps``
renoising steps and ``first_step_average_range``. ``K + 1`` network calls per step.

Differences from the paper and its public code:
- The "first step" rule is on the noisier level's VE sigma ``s / a < first_step_max_sigma``
  instead of the network timestep ``t < 250``, so it means the same for every model family;
  the default ``0.6958`` is SD/SDXL's scaled-linear schedule at ``t = 250``, so those models
  switch at the same steps as the code.
- The optional noise regularisation (pix2pix-zero's auto-correlation and patch-KL losses,
  ``lambda_ac = 20``, ``lambda_kl = 0.065`` in the config) is left out.
- Noise correction for ancestral samplers (``perform_noise_correction``, which rewrites the
  stored per-step noise and so makes the noise list part of the inversion state) is left out:
  a stored noise enters the step's implicit map as a fixed term and is not optimised.
- The first prediction is made at ``x`` exactly as DDIM inversion makes it (``x``'s own scales
  convert the output; the code supports eps-prediction only, for which this is identical).
  On flow grids the implicit map holds the velocity fixed and the average is over the
  predictions (so over velocities); the code has no flow models.

Reported per step: ``iters`` = network calls; ``series["residual"]`` = per-sample
``RMS(z^(i) - f(eps_i))`` for every renoising iterate.
"""

from __future__ import annotations

from collections.abc import Sequence

from baselines._common import check_positive_int, first_prediction
from gnri.catalog import inverter_info
from gnri.core import (
    Conditioning,
    Denoiser,
    Grid,
    InversionResult,
    Prediction,
    StepInfo,
    StepProblem,
    Tensor,
    invert_with,
    per_sample_rms,
)


def _window(name: str, value: Sequence[int]) -> tuple[int, int]:
    lo, hi = (int(v) for v in value)
    if not 0 <= lo < hi:
        raise ValueError(
            f"inverter renoise: {name} must be [start, stop) with 0 <= start < stop, got {list(value)}"
        )
    return lo, hi


@inverter_info()
def invert(
    denoiser: Denoiser,
    x0: Tensor,
    grid: Grid,
    cond: Conditioning,
    *,
    num_renoise_steps: int = 9,
    max_first_step_renoise_steps: int = 5,
    average: bool = True,
    average_range: Sequence[int] = (8, 10),
    first_step_average_range: Sequence[int] = (0, 5),
    first_step_max_sigma: float = 0.6958,
) -> InversionResult:
    """ReNoise: ``K + 1`` network calls per step, output from the averaged noise prediction."""
    check_positive_int("renoise", "num_renoise_steps", num_renoise_steps, minimum=0)
    check_positive_int("renoise", "max_first_step_renoise_steps", max_first_step_renoise_steps, minimum=0)
    late = _window("average_range", average_range)
    early = _window("first_step_average_range", first_step_average_range)

    def solve(problem: StepProblem) -> tuple[Tensor, StepInfo]:
        first = problem.z_level.s < first_step_max_sigma * problem.z_level.a
        num = min(max_first_step_renoise_steps, num_renoise_steps) if first else num_renoise_steps
        lo, hi = early if first else late
        z, avg, residuals = problem.x, None, []
        for i in range(num + 1):
            pred = first_prediction(problem) if i == 0 else problem.predict(z)
            if lo <= i < hi:
                j = i - lo
                avg = pred if avg is None else Prediction(
                    j * avg.x0 / (j + 1) + pred.x0 / (j + 1), j * avg.eps / (j + 1) + pred.eps / (j + 1)
                )
            z_next = problem.implicit_map(pred)
            residuals.append(per_sample_rms(z - z_next))
            z = z_next
        if average and avg is not None:
            z = problem.implicit_map(avg)
        return z, StepInfo(iters=num + 1, series={"residual": tuple(residuals)})

    return invert_with(solve, denoiser, x0, grid, cond)
