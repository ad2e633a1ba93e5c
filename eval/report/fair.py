"""Fair columns: how many latent-sized tensors a method keeps, and whether it is exact by construction.

A method that stores a second latent (EDICT) or one noise map per step (Edit-Friendly DDPM)
reconstructs exactly whatever its inversion quality; its PSNR is not an inverter's PSNR. The
reconstruction rows carry two per-image metrics for this: ``kept_latents`` (lower is better) and
``exact_by_construction`` (1.0 or 0.0). :func:`fair_columns` reads their means per model x
setting x method; rows written before those metrics existed fall back to :data:`KNOWN_STATE`,
which names ONLY the shipped inverters whose extra state is known (``edict``, ``edit_friendly``,
``null_text``); any other method without the metrics shows ``n/a`` and is not marked.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from eval.report.summary_stats import FAILURE_RATE

KEPT = "kept_latents"
EXACT = "exact_by_construction"
EXACT_MARK = "‡"
EXACT_NOTE = f"{EXACT_MARK} exact by construction (keeps more than one latent): not comparable as an inverter"
KEPT_HEADER = "kept (latents)"
EXACT_THRESHOLD = 0.5  # exact_by_construction is 1.0 or 0.0 per image; a mean at or above this marks the method
GROUP = ("model", "setting", "method")
# Reconstruction-quality columns on which an exact-by-construction method is marked, never bold.
EXACT_UNRANKED = ("psnr", "psnr_gap_to_vae", FAILURE_RATE, "ssim", "lpips", "lpips_vgg", "clip_score", "recon_psnr")
# Fallback for rows without the metrics, shipped inverters only: (fixed tensors, + per step?, exact by construction).
# edict: the latent pair; edit_friendly: z_T plus one noise map per step; null_text: z_T plus one optimised
# unconditional embedding per step, counted one each here (the measured metric counts their size in latents);
# null_text is not exact by construction. Any other name (FTEdit included) needs the measured metrics.
KNOWN_STATE: dict[str, tuple[int, bool, bool]] = {
    "edict": (2, False, True),
    "edit_friendly": (1, True, True),
    "null_text": (1, True, False),
}


def base_inverter(name: str) -> str:
    """The inverter's own name: an edit run's ``inverter+editor`` without the editor."""
    return str(name).split("+", 1)[0]


def _known(inverter: str, steps: float) -> tuple[float, float]:
    """(kept, exact) from :data:`KNOWN_STATE` for a shipped name, else (nan, nan)."""
    state = KNOWN_STATE.get(base_inverter(inverter))
    if state is None:
        return math.nan, math.nan
    fixed, per_step, exact = state
    if not per_step:
        return float(fixed), float(exact)
    return (float(fixed + steps) if math.isfinite(steps) else math.nan), float(exact)


def fair_columns(labelled: pd.DataFrame) -> pd.DataFrame:
    """Per model x setting x method of labelled rows (:func:`eval.report.summary_stats.label_methods`):
    ``kept`` (mean kept latents, NaN if unknown), ``exact`` (bool) and ``source`` (``measured``,
    ``known`` or ``n/a``)."""
    cols = [*GROUP, "kept", "exact", "source"]
    if labelled.empty:
        return pd.DataFrame(columns=cols)
    ok = labelled[(labelled["status"] == "ok") & labelled["metric"].isin((KEPT, EXACT))]
    measured = ok.assign(value=ok["value"].astype(float)).groupby([*GROUP, "metric"])["value"].mean()
    rows = []
    steps_col = "num_steps" if "num_steps" in labelled.columns else None
    for key, block in labelled.groupby(list(GROUP), sort=False):
        kept, exact = measured.get((*key, KEPT), math.nan), measured.get((*key, EXACT), math.nan)
        source = "measured"
        if not (math.isfinite(kept) or math.isfinite(exact)):
            steps = float(pd.to_numeric(block[steps_col], errors="coerce").max()) if steps_col else math.nan
            kept, exact = _known(str(block["inverter"].iloc[0]), steps)
            source = "known" if math.isfinite(exact) else "n/a"
        rows.append({**dict(zip(GROUP, key)), "kept": kept, "exact": bool(np.nan_to_num(exact) >= EXACT_THRESHOLD),
                     "source": source})
    return pd.DataFrame(rows, columns=cols)


def kept_cell(kept: float) -> str:
    """The ``kept (latents)`` cell: an integer-looking count, or ``n/a``."""
    if not math.isfinite(kept):
        return "n/a"
    return f"{kept:.0f}" if float(kept).is_integer() else f"{kept:.3g}"
