"""The note an edit report prints when pairs had no edited-region mask (issue 25, item 5).

Which metrics were left unavailable for want of a mask is read from the rows (status
``unavailable`` with reason :data:`eval.metrics.edit.NO_MASK`), and how to give one from the
dataset loader the runs used (:mod:`eval.edit_data`).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from eval.metrics.edit import NO_MASK

# dataset loader (dataset._target_'s last part) -> how its pairs get a mask
HOW_TO_MASK = {
    "edit_folder_dataset": ('add `"mask": "<file>.png"` to the pair\'s line in `edits.jsonl` (dataset=edit_folder): an '
                            "image beside it, white (> 127 grey) on the edited region, any size (resized and cropped as "
                            "its image is)"),
    "piebench_dataset": "give the pair's `mask` run-length encoding in PIE-Bench's `mapping_file.json`",
}
DEFAULT_HOW = HOW_TO_MASK["edit_folder_dataset"]


def _loader(text: Any) -> str:
    try:
        config = json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError:
        return ""
    dataset = config.get("dataset") if isinstance(config, dict) else None
    return str((dataset or {}).get("_target_", "")).rsplit(".", 1)[-1] if isinstance(dataset, dict) else ""


def no_mask_note(records: pd.DataFrame) -> list[str]:
    """Lines naming the metrics a missing mask left unavailable, on how many pairs, and how to give
    a mask; [] when every pair had one."""
    hit = records[(records["status"] == "unavailable") & (records["reason"].astype(str) == NO_MASK)]
    if hit.empty:
        return []
    metrics = ", ".join(f"`{m}`" for m in dict.fromkeys(hit["metric"]))
    pairs = hit["image"].nunique()
    loaders = dict.fromkeys(_loader(t) for t in hit["config"]) if "config" in hit.columns else {"": None}
    ways = list(dict.fromkeys(HOW_TO_MASK.get(name, DEFAULT_HOW) for name in loaders))
    return [f"- No edited-region mask for {pairs} pair{'s' if pairs != 1 else ''}: {metrics} need one and are "
            f"unavailable there. To give a mask, {'; or '.join(ways)}.", ""]
