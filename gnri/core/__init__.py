"""Core types, the shared sampling step, the outer inversion loop and NFE counting."""

from gnri.core.counting import CountingDenoiser, NFECounter
from gnri.core.loop import StepSolver, invert_with, reconstruct, sample, step_residuals
from gnri.core.step import (
    StepProblem,
    ancestral_noise_scale,
    per_sample_rms,
    sample_step,
    step_coefficients,
)
from gnri.core.types import (
    Conditioning,
    Denoiser,
    Grid,
    InversionResult,
    Level,
    Prediction,
    Sampler,
    StepInfo,
    Tensor,
)

__all__ = [
    "Conditioning", "CountingDenoiser", "Denoiser", "Grid", "InversionResult", "Level",
    "NFECounter", "Prediction", "Sampler", "StepInfo", "StepProblem", "StepSolver", "Tensor",
    "ancestral_noise_scale", "invert_with", "per_sample_rms", "reconstruct", "sample",
    "sample_step", "step_coefficients", "step_residuals",
]
