"""The rows a task computes itself (diagnostics: fidelity ceilings, NFE, clocks, memory, the
latent's Gaussianity, interpolation and exact-track numbers), name -> higher_is_better, per task.

Pure tables, no torch: :mod:`eval.records` re-exports :data:`HARNESS_METRICS`,
:data:`TIMING_METRICS` and :data:`GAUSSIANITY_ROWS` from here (their meaning is documented in
:mod:`eval.records`). :func:`directions` orients any registered metric or diagnostic row.
"""

from __future__ import annotations

import functools
from typing import Iterable, Mapping

# name -> higher_is_better, for the metrics the reconstruction task computes itself (eval.records documents them).
HARNESS_METRICS = {
    "psnr_vae_ceiling": True,
    "psnr_gap_to_vae": False,
    "latent_rmse": False,
    "residual_rms_mean": False,
    "residual_rms_max": False,
    "nfe_forward": False,
    "nfe_backward": False,
    "nfe_forward_reconstruct": False,
    "time_invert_s": False,
    "time_reconstruct_s": False,
    "peak_memory_mb": False,
    "peak_memory_extra_mb": False,
    "compile_s": False,
    "time_network_call_s": False,
    "time_network_backward_s": False,
    "overhead_ratio": False,
    "overhead_ratio_bare": False,
    "time_network_forward_in_run_s": False,
    "time_network_backward_in_run_s": False,
    "non_network_share": False,
    "latent_mean": False,
    "latent_var": False,
    "latent_ks_stat": False,
    "kept_latents": False,
    "exact_by_construction": True,
}
# The harness metrics that are clocks or memory: they differ between two runs of the same unit.
TIMING_METRICS = ("time_invert_s", "time_reconstruct_s", "peak_memory_mb", "peak_memory_extra_mb", "compile_s",
                  "time_network_call_s", "time_network_backward_s", "overhead_ratio", "overhead_ratio_bare",
                  "time_network_forward_in_run_s", "time_network_backward_in_run_s", "non_network_share")
# The rows of eval.metrics.gaussianity the harness records for the inverted latent.
GAUSSIANITY_ROWS = ("latent_mean", "latent_var", "latent_ks_stat")

# Editing: one inversion's / one edit's network passes and seconds (the edit metrics are registered metrics).
EDIT_DIAGNOSTICS = {"nfe_forward": False, "nfe_forward_edit": False, "time_invert_s": False, "time_edit_s": False}
# The edit task's rows, in the tidy table's order: registered edit metrics, then the diagnostics.
EDIT_METRIC_ORDER = (
    "edit_success", "recon_success", "bg_psnr", "bg_ssim", "bg_lpips", "bg_mse", "lpips_to_source", "clip_whole",
    "clip_edited", "structure_distance", "structure_distance_standin", "target_psnr", "recon_psnr", "nfe_forward",
    "nfe_forward_edit", "time_invert_s", "time_edit_s",
)
INTERP_METRICS = {
    "interp_lpips_step_mean": False, "interp_lpips_step_max": False, "interp_rms_step_max": False,
    "interp_psnr_start": True, "interp_psnr_end": True,
    "interp_valid_frac": True, "interp_norm_dev": False, "interp_norm_dev_max": False, "interp_norm_dev_ends": False,
    "interp_clip_either": True, "interp_clip_either_min": True,
}
EXACT_METRICS = {"exact_noise_nmse": False, "exact_latent_nmse": False, "exact_image_nmse": False,
                 "exact_image_psnr": True}
# task name (eval.settings.TASKS) -> its diagnostic rows, name -> higher_is_better.
DIAGNOSTICS: Mapping[str, Mapping[str, bool]] = {
    "reconstruct": HARNESS_METRICS, "edit": EDIT_DIAGNOSTICS, "interpolate": INTERP_METRICS, "exact": EXACT_METRICS,
}


@functools.lru_cache(maxsize=None)
def _registered_direction(name: str) -> bool:
    from eval.metrics import registry

    factory = registry(None).get(name)
    if factory is None and name in EDIT_METRIC_ORDER:  # an edit row the registry does not list (yet)
        from eval.metrics.edit import FACTORIES

        factory = FACTORIES.get(name)
    if factory is None:
        return _unknown(name)
    return bool(factory().higher_is_better)  # metric objects load weights lazily: building one is cheap


def _unknown(name: str) -> bool:
    from eval.metrics import registry

    known = sorted(set(registry(None)) | {n for rows in DIAGNOSTICS.values() for n in rows})
    raise ValueError(f"metrics: unknown metric {name!r}; valid: {', '.join(known)}")


def directions(names: Iterable[str]) -> dict[str, bool]:
    """``higher_is_better`` of each registered metric or diagnostic row (a diagnostic's own table
    first); an unknown name is a one-line ValueError."""
    out = {}
    for name in names:
        table = next((rows for rows in DIAGNOSTICS.values() if name in rows), None)
        out[name] = table[name] if table is not None else _registered_direction(name)
    return out


__all__ = [
    "DIAGNOSTICS", "EDIT_DIAGNOSTICS", "EDIT_METRIC_ORDER", "EXACT_METRICS", "GAUSSIANITY_ROWS", "HARNESS_METRICS",
    "INTERP_METRICS", "TIMING_METRICS", "directions",
]
