"""Bad inputs: every bad image file or manifest line becomes an entry/row with a reason (issue 17).

Image files are checked through :func:`gnri.images.load_image` (what the harness calls: an
``OSError``/``ValueError`` from it is a ``skipped`` row), manifests through
:func:`eval.data.folder_dataset` / :func:`eval.data.coco_dataset`, and the two together
through :func:`eval.tasks.reconstruct.evaluate` on the tiny SD model.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from eval.data import Entry, coco_dataset, folder_dataset, with_caption_warnings
from gnri.images import MAX_PIXELS, ImageError, fit_to_size, load_image
from gnri.models.common import token_overflow

# --- hand-made files (formats PIL cannot write) ---------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG with the given IHDR and ``raw`` (filter bytes included) as its only IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def rgb16_png(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of ``arr`` (H, W, 3) uint16."""
    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    return png_bytes(w, h, 16, 2, raw)


def tiff_bytes(arr: np.ndarray, sample_format: int) -> bytes:
    """A one-strip greyscale little-endian TIFF of ``arr`` (SampleFormat 1 uint, 2 int, 3 float)."""
    h, w = arr.shape
    data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    tags = [(256, 3, w), (257, 3, h), (258, 3, arr.dtype.itemsize * 8), (259, 3, 1), (262, 3, 1),
            (273, 4, 8), (277, 3, 1), (278, 3, h), (279, 4, len(data)), (339, 3, sample_format)]
    out = b"II*\0" + struct.pack("<I", 8 + len(data)) + data + struct.pack("<H", len(tags))
    for tag, typ, value in tags:
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, 1) + packed
    return out + b"\0\0\0\0"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _photo(size: tuple[int, int] = (48, 32)) -> Image.Image:
    """A smooth asymmetric RGB image (JPEG-friendly)."""
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    arr = np.stack([x, y, 1 - x * y], axis=2) * 255
    return Image.fromarray(arr.astype(np.uint8))


def _assert_one_line_naming(err: BaseException, path: Path) -> None:
    text = str(err)
    assert "\n" not in text and str(path) in text, text


# --- image files ------------------------------------------------------------------------------


def test_zero_byte_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.png", b"")
    with pytest.raises(ImageError, match="empty file") as err:
        load_image(path)
    _assert_one_line_naming(err.value, path)
    assert isinstance(err.value, OSError) and isinstance(err.value, ValueError)  # the harness catches both


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused_naming_them(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"full.{fmt.lower()}"
    Image.effect_noise((64, 64), 60).convert("RGB").save(path, fmt)
    data = path.read_bytes()
    for cut in (8, 40, len(data) // 2):
        bad = _write(tmp_path / f"cut{cut}.{fmt.lower()}", data[:cut])
        with pytest.raises(ImageError) as err:
            load_image(bad)
        _assert_one_line_naming(err.value, bad)


def test_missing_file_and_directory_are_one_line_errors(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.png", tmp_path):
        with pytest.raises(ImageError) as err:
            load_image(path)
        _assert_one_line_naming(err.value, path)


def test_16bit_rgb_png(tmp_path: Path) -> None:
    arr = np.zeros((4, 5, 3), np.uint16)
    arr[..., 0] = 65535
    arr[0, 0] = (0, 32768, 65535)
    path = _write(tmp_path / "rgb16.png", rgb16_png(arr))
    out = load_image(path)
    assert out.shape == (3, 4, 5)
    torch.testing.assert_close(out, torch.from_numpy(arr / 65535.0).permute(2, 0, 1).float(), atol=1 / 255, rtol=0)


def test_32bit_integer_tiffs_scale_by_their_type(tmp_path: Path) -> None:
    """uint32: / (2^32 - 1); int32: / (2^31 - 1), negatives clipped (not / 65535, which saturates)."""
    unsigned = np.array([[0, 2**31, 2**32 - 1]], dtype=np.uint32)
    out = load_image(_write(tmp_path / "u32.tif", tiff_bytes(unsigned, 1)))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 0.5, 1.0]), atol=1e-6, rtol=0)
    signed = np.array([[-(2**31), 0, 2**30, 2**31 - 1]], dtype=np.int32)
    out = load_image(_write(tmp_path / "i32.tif", tiff_bytes(signed, 2)))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 0.0, 0.5, 1.0]), atol=1e-6, rtol=0)
    assert torch.equal(out[0], out[2])


def test_float_tiff_is_taken_as_unit_range(tmp_path: Path) -> None:
    arr = np.array([[0.0, 0.25, 0.5, 1.5, -1.0]], dtype=np.float32)
    out = load_image(_write(tmp_path / "f32.tif", tiff_bytes(arr, 3)))
    torch.testing.assert_close(out[1, 0], torch.tensor([0.0, 0.25, 0.5, 1.0, 0.0]))
    nan = _write(tmp_path / "nan.tif", tiff_bytes(np.array([[0.5, np.nan]], dtype=np.float32), 3))
    with pytest.raises(ImageError, match="NaN") as err:
        load_image(nan)
    _assert_one_line_naming(err.value, nan)


@pytest.mark.parametrize("fmt", ["png", "gif"])
def test_palette_with_transparency_composites_on_white(tmp_path: Path, fmt: str) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 0])
    pal.putpixel((1, 0), 1)
    path = tmp_path / f"pal.{fmt}"
    pal.save(path, transparency=0)
    out = load_image(path)
    torch.testing.assert_close(out[:, 0, 0], torch.ones(3))  # index 0 is transparent
    torch.testing.assert_close(out[:, 0, 1], torch.tensor([200.0, 100.0, 0.0]) / 255)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("RGB", (16, 16), (200, 50, 20)).convert("CMYK").save(path, quality=100)
    assert Image.open(path).mode == "CMYK"
    out = load_image(path)
    torch.testing.assert_close(out[:, 8, 8], torch.tensor([200.0, 50.0, 20.0]) / 255, atol=3 / 255, rtol=0)


@pytest.mark.parametrize(("orientation", "corner"), [(3, "bottom_right"), (6, "top_right"), (8, "bottom_left")])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, corner: str) -> None:
    """A 60x40 image with a red top-left block, stored with an EXIF rotation: the block moves."""
    img = Image.new("RGB", (60, 40), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    h, w = (40, 60) if orientation == 3 else (60, 40)
    assert out.shape == (3, h, w)
    rows = slice(0, 10) if corner.startswith("top") else slice(h - 10, h)
    cols = slice(w - 10, w) if corner.endswith("right") else slice(0, 10)
    assert out[0, rows, cols].mean() > 0.9 and out[2, rows, cols].mean() < 0.1


def test_tiny_and_strip_images_fit_without_a_huge_intermediate(tmp_path: Path, monkeypatch) -> None:
    """8x8 upsamples; a 1x100000 strip is cropped to the target's aspect before it is resized."""
    path = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8), (0, 255, 0)).save(path)
    out = fit_to_size(load_image(path), (32, 32))
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 32, 32))

    sizes = []
    real = torch.nn.functional.interpolate

    def spy(x, size=None, **kw):
        sizes.append(tuple(size))
        assert size[0] * size[1] <= 4 * 32 * 32, f"intermediate {size} too large"
        return real(x, size=size, **kw)

    monkeypatch.setattr(torch.nn.functional, "interpolate", spy)
    strip = torch.rand(3, 1, 100_000)
    assert fit_to_size(strip, (32, 32)).shape == (3, 32, 32)
    assert fit_to_size(torch.rand(3, 20, 60), (10, 10)).shape == (3, 10, 10)
    assert sizes


def test_decompression_bomb_refused_from_the_header(tmp_path: Path, monkeypatch) -> None:
    """A header declaring 10^10 pixels, and a real image over a given limit, are refused with the
    pixel count and the limit, without decoding (decoding is made to fail loudly here)."""
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a refused image"))
    huge = _write(tmp_path / "bomb.png", png_bytes(100_000, 100_000, 1, 0, b"\0" * 64))
    with pytest.raises(ImageError) as err:
        load_image(huge)
    _assert_one_line_naming(err.value, huge)
    assert "10,000,000,000 pixels" in str(err.value) and f"{MAX_PIXELS:,}" in str(err.value)

    real = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(real)
    with pytest.raises(ImageError, match=r"300x200 = 60,000 pixels exceeds the limit of 10,000") as err:
        load_image(real, max_pixels=10_000)
    _assert_one_line_naming(err.value, real)


def test_pixel_limit_is_overridable_past_pils_own(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "img.png"
    Image.new("RGB", (100, 100), (9, 9, 9)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL alone would refuse 10,000 > 2 x 1000
    assert load_image(path, max_pixels=20_000).shape == (3, 100, 100)
    assert load_image(path, max_pixels=None).shape == (3, 100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
    with pytest.raises(ImageError, match="10,000 pixels exceeds the limit of 5,000"):
        load_image(path, max_pixels=5_000)


# --- manifests ----------------------------------------------------------------------------------


def _folder(tmp_path: Path, lines: list[bytes | str | dict], images: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    for name in images:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name)
    raw = [x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode() for x in lines]
    (tmp_path / "captions.jsonl").write_bytes(b"\n".join(raw) + b"\n")
    return tmp_path


def test_manifest_lines_that_are_not_objects_with_an_image(tmp_path: Path) -> None:
    root = _folder(tmp_path, ['["a.png", "x"]', '"a.png"', "42", {"caption": "no image"},
                              {"image": 3, "caption": "x"}, {"image": "a.png", "caption": "fine"},
                              {"image": "b.png", "caption": "fine too"}])
    entries = folder_dataset(root)
    problems = [e.problem for e in entries[:5]]
    assert "line 1" in problems[0] and "array" in problems[0]
    assert "line 2" in problems[1] and "string" in problems[1]
    assert "line 3" in problems[2] and "number" in problems[2]
    assert "line 4" in problems[3] and "'image'" in problems[3]
    assert "line 5" in problems[4] and "'image'" in problems[4]
    assert [(e.image_id, e.problem) for e in entries[5:]] == [("a.png", None), ("b.png", None)]


def test_non_utf8_line_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    root = _folder(tmp_path, ['\ufeff{"image": "a.png", "caption": "bom first"}',
                              b'{"image": "a.png", "caption": "caf\xe9"}',
                              {"image": "b.png", "caption": "after \u2028 the bad line"}])
    entries = folder_dataset(root)
    assert [e.problem for e in entries].count(None) == 2
    assert entries[0].caption == "bom first"
    assert entries[1].image_id == "captions.jsonl line 2" and "not UTF-8" in entries[1].problem
    assert "0xe9" in entries[1].problem
    assert entries[2].caption == "after \u2028 the bad line"  # U+2028 is not a line break


@pytest.mark.parametrize("caption", ["", "   ", "\t\n"])
def test_blank_caption_is_skipped_with_the_reason(tmp_path: Path, caption: str) -> None:
    entries = folder_dataset(_folder(tmp_path, [{"image": "a.png", "caption": caption},
                                                {"image": "b.png", "caption": "ok"}]))
    assert "empty caption" in entries[0].problem and entries[1].problem is None


def test_non_string_and_non_unicode_captions(tmp_path: Path) -> None:
    entries = folder_dataset(_folder(tmp_path, [{"image": "a.png", "caption": 7},
                                                '{"image": "b.png", "caption": "half \\ud800 a pair"}',
                                                '{"image": "\\udc00.png", "caption": "x"}']))
    assert "must be a string" in entries[0].problem
    assert "Unicode" in entries[1].problem and entries[1].caption is None
    assert "file name" in entries[2].problem and entries[2].image_id == "captions.jsonl line 3"
    for e in entries:
        e.image_id.encode("utf-8")  # every id can go into results.csv


def test_duplicate_image_ids_are_told_apart(tmp_path: Path) -> None:
    entries = folder_dataset(_folder(tmp_path, [{"image": "a.png", "caption": "a red square"},
                                                {"image": "a.png", "caption": "a crimson square"},
                                                {"image": "./a.png", "caption": "a red tile"},
                                                {"image": "a.png", "caption": "a red square"},
                                                {"image": "b.png", "caption": "b"}]))
    assert [e.image_id for e in entries] == ["a.png", "a.png#2", "./a.png", "a.png#3", "b.png"]
    assert [e.problem is None for e in entries] == [True, True, True, False, True]
    assert "duplicate of a.png" in entries[3].problem
    assert entries[1].caption == "a crimson square" and entries[1].path == tmp_path / "a.png"


def test_coco_duplicates_blank_and_odd_ids(tmp_path: Path) -> None:
    for name in ("1.png", "2.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    data = {"images": [{"id": 1, "file_name": "1.png"}, {"id": 2, "file_name": "2.png"},
                       {"id": 3, "file_name": "1.png"}, {"id": [4], "file_name": "2.png"}],
            "annotations": [{"image_id": 1, "caption": "  "}, {"image_id": 1, "caption": "one"},
                            {"image_id": 2, "caption": " "}, {"image_id": 3, "caption": "one again"},
                            {"image_id": [4], "caption": "list id"}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    entries = coco_dataset(tmp_path / "c.json")
    assert [e.image_id for e in entries] == ["1.png", "2.png", "1.png#2", "2.png#2"]
    assert entries[0].caption == "one" and entries[0].problem is None  # first non-blank caption
    assert "empty caption" in entries[1].problem
    assert entries[2].caption == "one again" and entries[2].problem is None
    assert "missing caption" in entries[3].problem
    (tmp_path / "bad.json").write_bytes(b'{"images": ["\xff"]}')
    with pytest.raises(ValueError, match="cannot read COCO") as err:
        coco_dataset(tmp_path / "bad.json")
    assert "\n" not in str(err.value)


def test_long_caption_truncates_with_a_warning(tiny_sd_adapter, tiny_sdxl_adapter, tiny_flux_adapter) -> None:
    """diffusers truncates (and only logs); token_overflow counts exactly what it drops."""
    tok = tiny_sd_adapter.pipe.tokenizer
    long, kept = "x " * 100, "x " * 75  # the byte-level CLIP vocabulary: one token per word here
    assert token_overflow(tok, long) == 100 + 2 - 77 and token_overflow(tok, kept) == 0
    full = tiny_sd_adapter.encode_prompts([long]).positive["prompt_embeds"]
    cut = tiny_sd_adapter.encode_prompts([kept]).positive["prompt_embeds"]
    torch.testing.assert_close(full, cut)
    assert tiny_sd_adapter.prompt_warning(kept) is None
    assert "25 dropped" in tiny_sd_adapter.prompt_warning(long)
    for adapter in (tiny_sdxl_adapter, tiny_flux_adapter):
        cond = adapter.encode_prompts(["a photo of a cat " * 60], guidance_scale=2.0)
        assert all(bool(torch.isfinite(t).all()) for t in cond.positive.values())
        assert "caption truncated" in adapter.prompt_warning("a photo of a cat " * 60)
    entries = [Entry("a", Path("a.png"), long), Entry("b", Path("b.png"), kept), Entry("c", None, long, "bad")]
    warned = with_caption_warnings(entries, tiny_sd_adapter)
    assert "text_encoder keeps 77 tokens, 25 dropped" in warned[0].warning
    assert warned[1].warning is None and warned[2].warning is None


# --- through the harness ------------------------------------------------------------------------


def test_every_bad_input_is_a_row_and_the_sweep_goes_on(tmp_path: Path, tiny_sd_adapter) -> None:
    from baselines.ddim import invert
    from eval.tasks.reconstruct import evaluate
    from eval.metrics import build_metrics
    from gnri.models.base import ScheduleSpec

    files = {
        "empty.png": b"",
        "truncated.png": b"",
        "u32.tif": tiff_bytes(np.full((8, 8), 2**31, np.uint32), 1),
        "bomb.png": png_bytes(100_000, 100_000, 1, 0, b"\0" * 64),
    }
    for name, data in files.items():
        _write(tmp_path / name, data)
    _photo().save(tmp_path / "photo.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "photo.png").read_bytes()[:60])
    lines = [{"image": n, "caption": f"an image called {n}"} for n in files]
    lines += [{"image": "photo.png", "caption": "  "}, {"image": "photo.png", "caption": "x " * 100}, "[1, 2]"]
    (tmp_path / "captions.jsonl").write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    entries = folder_dataset(tmp_path)
    table = evaluate(tiny_sd_adapter, ScheduleSpec("ddim", 1), invert, "ddim", entries, build_metrics(["psnr"]),
                     max_images=None, progress=False, warmup=0, time_network=False)
    assert set(table["image"]) == {e.image_id for e in entries}
    per_image = table.groupby("image", sort=False)
    assert per_image.size().nunique() == 1  # every entry got all its rows
    status = per_image["status"].agg(lambda s: s.iloc[0])
    reason = per_image["reason"].agg(lambda s: s.iloc[0])
    for name in ("empty.png", "truncated.png", "bomb.png"):
        assert status[name] == "skipped" and name in reason[name] and "\n" not in reason[name]
    assert "pixels exceeds the limit" in reason["bomb.png"]
    assert status["photo.png"] == "skipped" and "empty caption" in reason["photo.png"]
    for name in ("u32.tif", "photo.png#2"):  # (each ok image costs an inversion: keep them few)
        assert status[name] == "ok", (name, reason[name])
    assert status["captions.jsonl line 7"] == "skipped" and "array" in reason["captions.jsonl line 7"]


def test_piebench_bad_images_and_prompts_are_problems(tmp_path: Path) -> None:
    """PIE-Bench reads only image headers: a bomb or junk file, or a blank prompt, is a problem entry."""
    from eval.edit_data import piebench_dataset

    images = tmp_path / "annotation_images"
    images.mkdir()
    _write(images / "bomb.png", png_bytes(100_000, 100_000, 1, 0, b"\0" * 64))
    _write(images / "junk.jpg", b"\xff\xd8 not really")
    Image.new("RGB", (512, 512)).save(images / "ok.png")
    item = {"original_prompt": "a [cat]", "editing_prompt": "a [dog]", "mask": [0, 10]}
    mapping = {"1": {**item, "image_path": "bomb.png"}, "2": {**item, "image_path": "junk.jpg"},
               "3": {**item, "image_path": "ok.png", "editing_prompt": "  "}, "4": {**item, "image_path": "ok.png"}}
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    entries = piebench_dataset(tmp_path)
    assert "cannot read" in entries[0].problem and "cannot read" in entries[1].problem
    assert "empty original_prompt or editing_prompt" in entries[2].problem
    assert entries[3].problem is None
