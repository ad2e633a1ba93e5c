"""Dataset sources (folder + captions.jsonl, COCO, the built-in sample) and image conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval.data import (
    coco_dataset,
    draw_sample,
    folder_dataset,
    sample_dataset,
    sample_dir,
)
from gnri.images import fit_to_size, load_image, to_rgb_tensor


def _png(path: Path, colour: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_folder_with_captions_jsonl(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "sub" / "b.png")
    _png(tmp_path / "uncaptioned.png")
    lines = [
        {"image": "sub/b.png", "caption": "a b"},
        {"image": "a.png", "caption": "an a"},
        {"image": "gone.png", "caption": "missing file"},
        {"image": "a.png"},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n\n"
    (tmp_path / "captions.jsonl").write_text(text)
    entries = folder_dataset(tmp_path)
    ids = [e.image_id for e in entries]
    assert ids[:2] == ["sub/b.png", "a.png"]
    assert entries[0].caption == "a b" and entries[0].problem is None
    assert entries[0].path == tmp_path / "sub" / "b.png"
    assert "not found" in entries[2].problem
    assert "missing caption" in entries[3].problem
    assert "line 5" in entries[4].problem and "invalid JSON" in entries[4].problem
    assert entries[5].image_id == "uncaptioned.png" and "missing caption" in entries[5].problem
    assert len(entries) == 6


def test_folder_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_dataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="captions.jsonl"):
        folder_dataset(tmp_path)


def test_coco_captions(tmp_path: Path) -> None:
    images = tmp_path / "val"
    _png(images / "1.png")
    _png(images / "2.png")
    _png(images / "3.png")
    data = {
        "images": [
            {"id": 1, "file_name": "1.png"}, {"id": 2, "file_name": "2.png"},
            {"id": 3, "file_name": "3.png"}, {"id": 4, "file_name": "4.png"}, {"id": 5},
        ],
        "annotations": [
            {"image_id": 1, "caption": " first caption "}, {"image_id": 1, "caption": "second"},
            {"image_id": 2, "caption": "two"}, {"image_id": 4, "caption": "four"},
        ],
    }
    ann = tmp_path / "captions.json"
    ann.write_text(json.dumps(data))
    entries = coco_dataset(ann, images)
    assert [e.image_id for e in entries[:4]] == ["1.png", "2.png", "3.png", "4.png"]
    assert entries[0].caption == "first caption" and entries[0].problem is None
    assert entries[1].caption == "two" and entries[1].path == images / "2.png"
    assert "missing caption" in entries[2].problem
    assert "not found" in entries[3].problem
    assert "file_name" in entries[4].problem
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="cannot read COCO"):
        coco_dataset(bad)


def test_coco_images_default_to_the_json_folder(tmp_path: Path) -> None:
    _png(tmp_path / "x.png")
    (tmp_path / "c.json").write_text(json.dumps(
        {"images": [{"id": 7, "file_name": "x.png"}], "annotations": [{"image_id": 7, "caption": "x"}]}
    ))
    [entry] = coco_dataset(tmp_path / "c.json")
    assert entry.problem is None and entry.path == tmp_path / "x.png"


def test_mode_conversion_to_rgb_float(tmp_path: Path) -> None:
    grey = to_rgb_tensor(Image.new("L", (4, 3), 51))
    assert grey.shape == (3, 3, 4) and grey.dtype == torch.float32
    torch.testing.assert_close(grey, torch.full((3, 3, 4), 0.2))

    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    out = to_rgb_tensor(rgba)
    torch.testing.assert_close(out[:, 0, 0], torch.ones(3))  # transparent -> white
    torch.testing.assert_close(out[:, 0, 1], torch.tensor([0.0, 0.0, 1.0]))
    half = to_rgb_tensor(Image.new("LA", (1, 1), (0, 128)))
    assert half.min() == pytest.approx(127 / 255, abs=1 / 255)

    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)  # a 16-bit greyscale PNG
    deep = load_image(path)
    assert Image.open(path).mode.startswith("I")
    torch.testing.assert_close(deep[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))
    assert torch.equal(deep[0], deep[2])

    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    torch.testing.assert_close(to_rgb_tensor(pal)[:, 0, 1], torch.tensor([200, 100, 0]) / 255.0)
    cmyk = to_rgb_tensor(Image.new("CMYK", (1, 1), (0, 0, 0, 0)))
    torch.testing.assert_close(cmyk.flatten(), torch.ones(3))


def test_unreadable_file_raises_oserror(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(OSError):
        load_image(path)


def test_fit_to_size_resizes_shorter_side_then_center_crops() -> None:
    wide = torch.zeros(3, 20, 60)
    wide[:, :, 20:40] = 1.0  # a white centre third
    out = fit_to_size(wide, (10, 10))
    assert out.shape == (3, 10, 10)
    assert out[:, :, 1:-1].min() == 1.0 and out.min() > 0.5  # the centre (edges antialiased)
    tall = fit_to_size(torch.rand(3, 50, 25), (16, 8))
    assert tall.shape == (3, 16, 8)
    same = torch.rand(3, 12, 12)
    assert torch.equal(fit_to_size(same, (12, 12)), same)
    up = fit_to_size(torch.rand(3, 4, 6), (16, 16))
    assert up.shape == (3, 16, 16) and 0.0 <= up.min() and up.max() <= 1.0


def test_builtin_sample_is_small_captioned_and_reproducible(tmp_path: Path) -> None:
    entries = sample_dataset()
    assert len(entries) >= 5 and all(e.problem is None and e.caption for e in entries)
    total = sum(p.stat().st_size for p in sample_dir().iterdir())
    assert total < 50_000
    redrawn = draw_sample(tmp_path)
    for file in redrawn:
        committed = load_image(sample_dir() / file.name)
        assert committed.shape == (3, 64, 64)
        assert torch.equal(load_image(file), committed), file.name
    assert (tmp_path / "captions.jsonl").read_text() == (sample_dir() / "captions.jsonl").read_text()
