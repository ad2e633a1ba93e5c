"""Deterministic subsets: the committed COCO 2017 val order, the id-list loader, and data-path errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from eval import validate
from eval.data import COCO_VAL_IDS, coco_dataset, read_id_list, subset_order
from eval.edit_data import piebench_dataset


def test_order_is_the_documented_hash_rule() -> None:
    ids = [139, 285, 632, 724, 776]
    digests = {i: hashlib.sha256(f"gnri-bench:coco2017-val:{i}".encode()).hexdigest() for i in ids}
    by_hand = [i for _, i in sorted((d, i) for i, d in digests.items())]
    assert subset_order(ids) == by_hand
    assert subset_order(reversed(ids)) == by_hand  # the input order does not matter
    assert subset_order(ids, salt="other") != by_hand


def test_committed_coco_val_list_follows_the_rule() -> None:
    text = COCO_VAL_IDS.read_text(encoding="utf-8")
    assert "SHA-256" in text and "gnri-bench:coco2017-val" in text and "NOT FOUND" in text
    ids = read_id_list(COCO_VAL_IDS)
    assert len(ids) == 5000 and len(set(ids)) == 5000  # COCO 2017 val
    assert {139, 285, 632, 724, 776, 785, 872, 885} <= set(ids)  # val2017's first file names, as COCO lists them
    assert ids == subset_order(ids)


def _coco(tmp_path: Path) -> Path:
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (1, 2, 3, 4)],
            "annotations": [{"image_id": 3, "caption": " three "}, {"image_id": 1, "caption": "one"},
                            {"image_id": 3, "caption": "second caption of three"}, {"image_id": 2, "caption": "two"}]}
    (tmp_path / "captions.json").write_text(json.dumps(data))
    for i in (1, 2, 3, 4):
        (tmp_path / f"{i:012d}.jpg").write_bytes(b"")
    return tmp_path / "captions.json"


def test_coco_loader_keeps_listed_ids_in_list_order(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    (tmp_path / "ids.txt").write_text("# a comment\n3\n\n1  # trailing comment\n")
    entries = coco_dataset(path, ids=tmp_path / "ids.txt")
    assert [(e.image_id, e.caption) for e in entries] == [("000000000003.jpg", "three"), ("000000000001.jpg", "one")]
    assert [e.image_id for e in coco_dataset(path)] == [f"{i:012d}.jpg" for i in (1, 2, 3, 4)]


@pytest.mark.parametrize("content, message", [
    ("3\n9\n", r"1 of 2 listed ids \(first 9\) are not in .*captions_val2017.json\?"),
    ("3\nx3\n", "line 2: 'x3' is not an image id"),
    ("3\n3\n", "repeats an id"),
    ("# nothing\n", "lists no ids"),
])
def test_bad_id_lists_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = _coco(tmp_path)
    (tmp_path / "ids.txt").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        coco_dataset(path, ids=tmp_path / "ids.txt")
    assert "\n" not in str(info.value)


def test_piebench_uses_every_mapping_entry_in_order(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "annotation_images").mkdir()
    mapping = {}
    for k, t in (("000000000002", "0"), ("111000000000", "1"), ("000000000001", "0")):
        Image.new("RGB", (512, 512)).save(tmp_path / "annotation_images" / f"{k}.jpg")
        mapping[k] = {"image_path": f"{k}.jpg", "original_prompt": "a [cat]", "editing_prompt": "a [dog]",
                      "editing_type_id": t, "mask": [0, 5]}
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    entries = piebench_dataset(tmp_path)
    assert [e.image_id for e in entries] == list(mapping) and all(e.problem is None for e in entries)
    assert [e.image_id for e in piebench_dataset(tmp_path, edit_types=[1])] == ["111000000000"]


@pytest.mark.parametrize("name, cfg, message", [
    ("coco", {"path": "???", "images": None}, r"dataset=coco needs dataset.path=.*cocodataset.org.*captions_val2017"),
    ("coco", {"path": "/no/such.json", "images": None}, r"dataset.path=/no/such.json does not exist: get COCO 2017"),
    ("piebench", {"path": "???", "images": None}, r"needs dataset.path=.*PnPInversion.*mapping_file.json"),
])
def test_absent_data_says_what_to_download(name: str, cfg: dict, message: str) -> None:
    with pytest.raises(validate.ConfigError, match=message) as info:
        validate.check_dataset_config(name, OmegaConf.create(cfg))
    assert "\n" not in str(info.value)


def test_absent_image_folder_is_refused(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    with pytest.raises(validate.ConfigError, match="dataset.images=/no/val2017 does not exist"):
        validate.check_dataset_config("coco", OmegaConf.create({"path": str(path), "images": "/no/val2017"}))
    validate.check_dataset_config("coco", OmegaConf.create({"path": str(path), "images": str(tmp_path)}))
