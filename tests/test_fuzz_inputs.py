"""Fuzzing the inputs (issue 17): image bytes, modes and sizes, manifest lines and captions.

The contract: nothing crashes, every entry gets its rows, and a bad input is a ``skipped`` row
whose reason is one line (never a ``failed`` row from an unexpected exception). Examples are
derandomized (the same every run) and few (24 fuzzed folders through the harness, in 2 sweeps),
so the harness fuzz stays fast; the loaders alone get 150 examples each.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from eval.data import Entry, folder_dataset
from gnri.images import ImageError, fit_to_size, load_image

MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F")
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP")
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp"}
CASES_PER_RUN = 12
FUZZ = settings(max_examples=2, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def _writable(fmt: str, mode: str) -> bool:
    try:
        Image.new(mode, (2, 2)).save(io.BytesIO(), fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


PAIRS = tuple((f, m) for f in FORMATS for m in MODES if _writable(f, m))


def _image(fmt: str, mode: str, size: tuple[int, int], seed: int, transparency: bool) -> bytes:
    """Random pixels in ``mode``, saved as ``fmt`` (palette images may get a transparent index)."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "F":
        img = Image.fromarray(rng.uniform(-0.5, 1.5, (size[1], size[0])).astype(np.float32))
    elif mode in ("I", "I;16"):
        img = Image.fromarray(rng.integers(0, 65536, (size[1], size[0])).astype(np.uint16)).convert(mode)
    else:
        img = rgb.convert(mode)
    out = io.BytesIO()
    extra = {"transparency": 0} if transparency and mode == "P" and fmt in ("PNG", "GIF") else {}
    exif = Image.Exif()
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        exif[0x0112] = int(rng.integers(1, 9))  # any EXIF orientation
        extra["exif"] = exif
    img.save(out, fmt, **extra)
    return out.getvalue()


DAMAGED_FIRST = ("truncate", "flip", "junk", "prefix", "none")  # the harness fuzz: ok images cost an inversion
INTACT_FIRST = ("none", "none", "truncate", "flip", "junk", "prefix")


@st.composite
def image_files(draw: st.DrawFn, damages: tuple[str, ...] = DAMAGED_FIRST) -> tuple[str, bytes]:
    """(file suffix, bytes): a real image in some format/mode/size, maybe damaged, or junk."""
    fmt, mode = draw(st.sampled_from(PAIRS))
    w = draw(st.integers(1, 48))
    h = draw(st.sampled_from([1, 2, 7, 8, 31, 40, 300])) if draw(st.booleans()) else w
    data = _image(fmt, mode, (w, h), draw(st.integers(0, 2**16)), draw(st.booleans()))
    damage = draw(st.sampled_from(damages))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip" and data:
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
        data = bytes(raw)
    elif damage == "junk":
        data = draw(st.binary(max_size=64))
    elif damage == "prefix":
        data = data[:16] + draw(st.binary(max_size=16))
    return SUFFIX[fmt], data


# Text with a lone surrogate: valid in JSON ("\\udfff"), not encodable as UTF-8.
LONE_SURROGATE = st.tuples(st.text(max_size=10), st.integers(0xD800, 0xDFFF).map(chr), st.text(max_size=10)).map(
    "".join)
CAPTIONS = st.one_of(
    st.text(max_size=40),
    LONE_SURROGATE,
    st.text(alphabet=st.characters(codec="utf-8"), min_size=60, max_size=400),  # past CLIP's 77 tokens
    st.sampled_from(["", " ", "\t\n", "\u2028", "\x00", "a cat", "\ufeffbom", "🐱" * 100]),
    st.integers(),
    st.none(),
)
# A caption the harness will use (so the image is loaded): any non-blank text, often long.
USABLE = st.one_of(st.text(min_size=1, max_size=40), st.text(min_size=60, max_size=400), LONE_SURROGATE).filter(
    str.strip)


def _line(item: dict[str, object], ascii_only: bool) -> bytes:
    return json.dumps(item, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _other_line(draw: st.DrawFn, image: str) -> bytes:
    """A second manifest line: junk bytes, a lone surrogate, or ``image`` (or another name)
    with any caption (possibly none, blank, a number, or a second usable caption)."""
    kind = draw(st.sampled_from(["caption", "caption", "no_caption", "junk", "surrogate"]))
    if kind == "junk":
        return draw(st.binary(max_size=40)).replace(b"\n", b" ")
    if kind == "surrogate":
        return b'{"image": "%s", "caption": "x \\udfff y"}' % image.encode()
    name = draw(st.sampled_from([image, image, "missing.png", "", "../x.png", "a\nb.png"]))
    item: dict[str, object] = {"image": name}
    if kind == "caption":
        item["caption"] = draw(CAPTIONS)
    return _line(item, draw(st.booleans()))


@st.composite
def datasets(draw: st.DrawFn) -> tuple[tuple[str, bytes], list[bytes]]:
    """One image file with a usable caption (the harness cost is per usable image) and 0-2 more
    manifest lines."""
    suffix, data = draw(image_files())
    name = f"img0{suffix}"
    lines = [_line({"image": name, "caption": draw(USABLE)}, draw(st.booleans()))]
    lines += [_other_line(draw, name) for _ in range(draw(st.integers(0, 2)))]
    return (name, data), lines


@pytest.fixture(scope="module")
def run_harness(tiny_sd_adapter):
    from baselines.ddim import invert
    from eval.tasks.reconstruct import evaluate
    from eval.metrics import build_metrics
    from gnri.models.base import ScheduleSpec

    metrics = build_metrics(["psnr"])

    def run(entries):
        return evaluate(tiny_sd_adapter, ScheduleSpec("ddim", 1), invert, "ddim", entries, metrics,
                        max_images=None, progress=False, warmup=0, time_network=False)

    return run


@FUZZ
@given(cases=st.lists(datasets(), min_size=CASES_PER_RUN, max_size=CASES_PER_RUN))
def test_fuzzed_datasets_through_the_harness(cases, run_harness) -> None:
    """0 crashes; every entry gets all its rows; bad inputs are skipped with a one-line reason.

    Each example is a sweep over several fuzzed folders (``CASES_PER_RUN`` x ``max_examples``
    cases in all): the harness's per-run cost (probe, bare-network timing) is paid per example.
    """
    entries: list[Entry] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, ((name, data), lines) in enumerate(cases):
            root = Path(tmp) / str(k)
            root.mkdir()
            (root / name).write_bytes(data)
            (root / "captions.jsonl").write_bytes(b"\n".join(lines))
            found = folder_dataset(root)
            ids = [e.image_id for e in found]
            assert len(set(ids)) == len(ids)
            entries += [replace(e, image_id=f"{k}/{e.image_id}") for e in found]
        table = run_harness(entries)
    assert set(table["image"]) == {e.image_id for e in entries}
    counts = table.groupby("image").size()
    assert counts.nunique() == 1 and len(table) == counts.iloc[0] * len(entries)
    assert set(table["status"]) <= {"ok", "skipped", "unavailable"}, table[["image", "status", "reason"]]
    assert not table["reason"].str.contains("\n").any()
    table.to_csv(io.StringIO())  # every id, caption and reason can be written out
    ok = table[table["status"] == "ok"]
    assert ok["value"].notna().all()


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(file=image_files(INTACT_FIRST))
def test_fuzzed_image_files_load_or_refuse_in_one_line(file) -> None:
    """load_image + fit_to_size: a finite (3, 32, 32) tensor in [0, 1], or ImageError naming the file."""
    suffix, data = file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            image = load_image(path)
        except ImageError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            return
    assert image.dtype == torch.float32 and image.shape[0] == 3
    out = fit_to_size(image, (32, 32))
    assert out.shape == (3, 32, 32) and bool(torch.isfinite(out).all())
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(lines=st.lists(st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode),
                                st.builds(lambda c: json.dumps({"image": "a.png", "caption": c}).encode(), CAPTIONS)),
                      max_size=6))
def test_fuzzed_manifests_give_distinct_writable_entries(lines) -> None:
    """Any bytes as captions.jsonl: no exception, distinct UTF-8 ids, one-line problems."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Image.new("RGB", (4, 4)).save(root / "a.png")
        (root / "captions.jsonl").write_bytes(b"\n".join(lines))
        entries = folder_dataset(root)
    ids = [e.image_id for e in entries]
    assert len(set(ids)) == len(ids) and entries
    for e in entries:
        e.image_id.encode("utf-8")
        assert e.caption is None or isinstance(e.caption.encode("utf-8"), bytes)
        assert e.problem is not None or (e.caption and e.caption.strip() and e.path is not None)
        assert e.problem is None or "\n" not in e.problem
