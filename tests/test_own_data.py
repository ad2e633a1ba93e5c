"""Your own data: a folder without captions.jsonl (unconditional inversion, with a warning) and
your own edit pairs (edits.jsonl) for task=edit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.data import folder_dataset, sample_dataset
from eval.edit_data import edit_folder_dataset
from eval.validate import check_task_fits


def test_a_folder_without_captions_is_unconditional_with_a_warning(tmp_path: Path) -> None:
    for entry in sample_dataset()[:2]:
        shutil.copy(entry.path, tmp_path / entry.path.name)
    entries = folder_dataset(tmp_path)
    assert len(entries) == 2 and all(e.caption == "" and e.problem is None for e in entries)
    assert all("no captions.jsonl" in (e.warning or "") for e in entries)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no captions.jsonl and no images"):
        folder_dataset(empty)


def test_edit_pairs_from_a_folder(tmp_path: Path) -> None:
    source = sample_dataset()[0]
    shutil.copy(source.path, tmp_path / "a.png")
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    lines = [
        {"image": "a.png", "source_caption": "a red circle", "target_caption": "a green circle", "mask": "a_mask.png"},
        {"image": "a.png", "caption": "a red circle", "target_caption": "a red square"},
        {"image": "a.png", "source_caption": "a red circle"},
        {"image": "missing.png", "source_caption": "x", "target_caption": "y"},
        {"image": "a.png", "source_caption": "x", "target_caption": "y", "mask": "nope.png"},
    ]
    (tmp_path / "edits.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    entries = edit_folder_dataset(tmp_path)
    assert [e.problem is None for e in entries] == [True, True, False, False, False]
    first = entries[0]
    assert first.target_caption == "a green circle" and first.mask is not None
    region = first.mask()
    assert region.shape == (64, 64) and region.sum() == 32 * 32 and region[20, 20] and not region[0, 0]
    assert entries[1].mask is None and entries[1].caption == "a red circle"
    assert "needs non-empty 'source_caption' and 'target_caption'" in entries[2].problem
    assert "mask file not found" in entries[4].problem
    check_task_fits("edit", "edit_folder", entries)  # edit pairs: task=edit applies
