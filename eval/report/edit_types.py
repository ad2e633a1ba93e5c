"""Edit types of edit rows, and the paired verdicts per edit type (issue 25, item 2).

An edit pair's type is the attribute it changes. It is found, in order:

- in the dataset files the run's config names (``dataset.path``): PIE-Bench's ``mapping_file.json``
  (``editing_type_id``, named by :data:`PIEBENCH_TYPES`), or a user's ``edits.jsonl``
  (an optional ``"edit_type"`` field per line, :func:`eval.edit_data.edit_folder_dataset`);
- in the image id of the embedded world's pairs, ``edit_<i>_<attribute>`` (position, shape, size,
  background, colour).

Rows with no type found have ``edit_type`` ``""`` and take part in the table over all pairs only.
:func:`per_type_verdicts` reruns :func:`eval.report.pairing.paired_verdicts` on each type's rows
alone (the same pairing, bootstrap, Wilcoxon and Holm correction, within the type).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from eval.report.pairing import VERDICT_COLUMNS, paired_verdicts
from eval.report.scorers import run_config

EDIT_TYPE = "edit_type"
WORLD_ID = re.compile(r"^edit_\d+_([a-z]+)$")
WORLD_TYPES = ("position", "shape", "size", "background", "colour")  # the world's order in reports
# PIE-Bench's editing_type_id (cure-lab/PnPInversion, arXiv 2310.01506, Table 1)
PIEBENCH_TYPES = {"0": "random", "1": "change object", "2": "add object", "3": "delete object",
                  "4": "change content", "5": "change pose", "6": "change colour", "7": "change material",
                  "8": "change background", "9": "change style"}
PIEBENCH_MAPPING = "mapping_file.json"


def types_from_dataset(dataset: dict[str, Any]) -> dict[str, str]:
    """image id -> edit type from the dataset files a run's ``dataset`` config block names ({} when
    there are none, or they cannot be read here)."""
    target, path = str(dataset.get("_target_", "")), dataset.get("path")
    if not isinstance(path, str) or not path:
        return {}
    root = Path(path).expanduser()
    try:
        if target.endswith("piebench_dataset"):
            file = root if root.is_file() else root / PIEBENCH_MAPPING
            data = json.loads(file.read_text(encoding="utf-8"))
            return {str(k): _piebench_type(v.get("editing_type_id")) for k, v in data.items()
                    if isinstance(v, dict) and v.get("editing_type_id") is not None}
        if target.endswith("edit_folder_dataset"):
            out = {}
            for line in (root / str(dataset.get("manifest") or "edits.jsonl")).read_text(encoding="utf-8").splitlines():
                item = json.loads(line) if line.strip() else {}
                if isinstance(item, dict) and isinstance(item.get("image"), str) and item.get("edit_type"):
                    out[item["image"]] = str(item["edit_type"])
            return out
    except (OSError, ValueError, AttributeError):
        return {}
    return {}


def _piebench_type(value: Any) -> str:
    key = str(value)
    return f"{key} {PIEBENCH_TYPES[key]}" if key in PIEBENCH_TYPES else key


def world_type(image_id: str) -> str:
    """The attribute of a world pair id ``edit_<i>_<attribute>`` ('' for any other id)."""
    match = WORLD_ID.match(str(image_id))
    return match.group(1) if match else ""


def add_edit_types(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` with an :data:`EDIT_TYPE` column (module docstring; '' where unknown)."""
    out = records.copy()
    types = pd.Series("", index=out.index, dtype=object)
    configs = out["config"] if "config" in out.columns else pd.Series("", index=out.index)
    for text, block in out.groupby(configs.astype(str), sort=False):
        known = types_from_dataset(run_config(text).get("dataset") or {})
        types[block.index] = [known.get(str(i)) or world_type(i) for i in block["image"]]
    out[EDIT_TYPE] = types.astype(str)
    return out


def ordered_types(types: Iterable[str]) -> list[str]:
    """The distinct non-empty types: the world's in :data:`WORLD_TYPES` order, then the rest sorted."""
    present = {t for t in types if t}
    return [t for t in WORLD_TYPES if t in present] + sorted(present - set(WORLD_TYPES))


def pairs_per_type(records: pd.DataFrame) -> dict[str, int]:
    """Edit type -> distinct edit pairs (images) with at least one ok row, in :func:`ordered_types` order."""
    typed = records if EDIT_TYPE in records.columns else add_edit_types(records)
    ok = typed[typed["status"] == "ok"]
    counts = ok.groupby(EDIT_TYPE)["image"].nunique().to_dict()
    return {t: int(counts.get(t, 0)) for t in ordered_types(typed[EDIT_TYPE])}


def per_type_verdicts(records: pd.DataFrame, reference: str | None,
                      metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """:func:`eval.report.pairing.paired_verdicts` on each edit type's rows alone, with an
    :data:`EDIT_TYPE` column first (empty without types or a reference)."""
    typed = records if EDIT_TYPE in records.columns else add_edit_types(records)
    wanted = list(metrics) if metrics is not None else None
    frames = []
    for kind in ordered_types(typed[EDIT_TYPE]):
        block = paired_verdicts(typed[typed[EDIT_TYPE] == kind], reference, wanted)
        if not block.empty:
            frames.append(block.assign(**{EDIT_TYPE: kind}))
    columns = [EDIT_TYPE, *VERDICT_COLUMNS]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
