"""Which model scored each row (issue 25, item 5): a ``scorer`` column and the notes under the tables.

A score that comes from a network depends on that network: ``clip_whole`` from the embedded world's
toy CLIP (``task.clip.weights: auto``, the edit task's default) is not OpenAI's CLIP, and on a
user's own pairs it measures little. The scorer is read from each row's run config (the same
options the metric was built from, :func:`eval.metrics.edit.build_edit_metrics` /
``conf/metrics/*.yaml``): never guessed from the metric's name alone. Metrics computed without a
network (PSNR, SSIM, MSE, times) have scorer ``""``.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any, Mapping

import pandas as pd

SCORER = "scorer"
WORLD_CLIP = "world CLIP (datasets/world/clip)"
WORLD_CLIP_VIT = "world CLIP's vision tower (datasets/world/clip)"
WORLD_CHECKER = "the world's checker (eval.world: renders and attributes)"
WORLD_DATASETS = ("world_edit_dataset", "world_dataset", "world_chain_dataset")  # dataset._target_ ends of the world's pairs
CLIP_EDIT = ("clip_whole", "clip_edited")
LPIPS_EDIT = ("lpips_to_source", "bg_lpips")


def _is_world_clip(weights: Any) -> bool:
    parts = PurePath(str(weights)).parts
    return weights == "auto" or tuple(parts[-3:]) == ("datasets", "world", "clip") or tuple(parts[-2:]) == ("world", "clip")


def clip_scorer(options: Mapping[str, Any] | None) -> str:
    """The CLIP model named by CLIPScore options (``task.clip`` or ``metrics.options.clip_score``)."""
    if options is None:
        return ""
    weights, backend = options.get("weights"), str(options.get("backend") or "open_clip")
    if weights and _is_world_clip(weights):
        return WORLD_CLIP
    if backend == "transformers":
        return f"CLIP (transformers) from {weights}" if weights else "CLIP (transformers), no weights given"
    model = f"{options.get('model_name') or 'ViT-B-32'}/{options.get('pretrained') or 'openai'}"
    return f"OpenCLIP {model}" + (f" from {weights}" if weights else " (hub cache)")


def structure_scorers(options: Mapping[str, Any] | None) -> tuple[str, str]:
    """(``structure_distance``, ``structure_distance_standin``) scorers of a ``task.structure`` block."""
    options = dict(options or {})
    weights = options.get("weights")
    dino = "DINO ViT-B/8" + (f" from {weights}" if weights else " (torch-hub / hub cache)")
    standin = options.get("standin", "auto")
    if standin in (None, "off", False):
        return dino, ""
    return dino, WORLD_CLIP_VIT if standin == "auto" or _is_world_clip(standin) else f"CLIP vision tower from {standin}"


def scorers_of(config: Mapping[str, Any]) -> dict[str, str]:
    """Metric -> scorer for one run's resolved config (metrics without a network are absent)."""
    task = dict(config.get("task") or {})
    out: dict[str, str] = {}
    if task.get("name") == "edit" or "editor" in task:
        clip = clip_scorer(task.get("clip"))
        net = str(task.get("lpips_net") or "alex")
        out.update({m: clip for m in CLIP_EDIT if clip})
        out.update({m: f"LPIPS {net} (lpips package weights)" for m in LPIPS_EDIT})
        out["structure_distance"], out["structure_distance_standin"] = structure_scorers(task.get("structure"))
        out["edit_success"] = out["recon_success"] = WORLD_CHECKER
    options = dict((config.get("metrics") or {}).get("options") or {})
    names = set((config.get("metrics") or {}).get("names") or [])
    if "clip_score" in names:
        out["clip_score"] = clip_scorer(options.get("clip_score") or {})
    if "lpips" in names:
        out["lpips"] = f"LPIPS {(options.get('lpips') or {}).get('net', 'alex')} (lpips package weights)"
    if "lpips_vgg" in names:
        out["lpips_vgg"] = "LPIPS vgg (lpips package weights)"
    return {m: s for m, s in out.items() if s}


def run_config(text: Any) -> dict[str, Any]:
    """A row's ``config`` JSON as a dict ({} when missing or unreadable)."""
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def add_scorers(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` with a :data:`SCORER` column: each row's scoring model from its run's config."""
    out = records.copy()
    scorer = pd.Series("", index=out.index, dtype=object)
    if "config" in out.columns and not out.empty:
        for text, block in out.groupby(out["config"].astype(str), sort=False):
            known = scorers_of(run_config(text))
            scorer[block.index] = block["metric"].astype(str).map(lambda m: known.get(m, "")).to_numpy()
    out[SCORER] = scorer.astype(str)
    return out


def dataset_of(config: Mapping[str, Any]) -> str:
    """The dataset loader's name (``dataset._target_``'s last part; '' when unknown)."""
    return str((config.get("dataset") or {}).get("_target_", "")).rsplit(".", 1)[-1]


def scorer_notes(records: pd.DataFrame) -> list[str]:
    """Lines for under the tables: which model scored each metric, and a warning where the world's
    CLIP scored pairs that are not the world's."""
    typed = records if SCORER in records.columns else add_scorers(records)
    scored = typed[typed[SCORER] != ""]
    if scored.empty:
        return []
    lines = ["Scored by:"]
    for metric, block in scored.groupby("metric", sort=False):
        lines.append(f"- `{metric}`: " + "; ".join(dict.fromkeys(block[SCORER])))
    foreign = set()
    for text, block in scored[scored[SCORER] == WORLD_CLIP].groupby(scored["config"].astype(str), sort=False):
        name = dataset_of(run_config(text))
        if name and name not in WORLD_DATASETS:
            foreign.add(name)
    if foreign:
        lines.append(f"- Warning: {WORLD_CLIP} scored pairs of {', '.join(sorted(f'`{n}`' for n in foreign))}, which are "
                     "not the embedded world's: that toy CLIP knows only the world's shapes and colours. Score them with "
                     "a real CLIP: `task.clip.backend=transformers task.clip.weights=<a local CLIPModel folder, e.g. "
                     "openai/clip-vit-large-patch14>`.")
    return lines + [""]
