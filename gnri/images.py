"""Image input for the library and the harness: any PIL image or file -> RGB float in [0, 1].

One size rule everywhere: resize so the image covers the model's size (shorter side matching,
bilinear with antialiasing), then center-crop to it.

:func:`load_image` refuses what it cannot turn into an image with :class:`ImageError` (an
``OSError`` and a ``ValueError``), one line naming the file: an empty or truncated file, an
unknown format, non-finite float pixels, or more than ``max_pixels`` pixels (checked from the
header, before anything is decoded: a decompression bomb costs nothing).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

Tensor = torch.Tensor
UINT16_MAX = 65535.0
UINT8_MAX = 255.0
# Default pixel limit of load_image (8192 x 8192): decoded as float32 RGB that is 768 MiB.
MAX_PIXELS = 8192 * 8192
# fit_to_size crops before it resizes when resizing first would make more than this many
# times the target's pixels (a 1 x 100000 strip would otherwise be upscaled to 32 x 3.2M).
MAX_UPSCALE_AREA = 4
_TIFF_BITS, _TIFF_SAMPLE_FORMAT = 258, 339  # TIFF tags BitsPerSample, SampleFormat (2: signed)


class ImageError(OSError, ValueError):
    """An image file that cannot be used; ``str()`` is one line that names the file."""


def load_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> Tensor:
    """Any image file -> RGB float tensor (3, H, W) in [0, 1]; EXIF orientation applied.

    Raises :class:`ImageError` (one line naming ``path``) for a file that is missing, empty,
    truncated or not an image, or whose header declares more than ``max_pixels`` pixels
    (None: no limit). Integer modes are scaled by their type's maximum (8-, 16- and 32-bit,
    negatives clipped); float (``F``) pixels are taken as [0, 1] and clipped.
    """
    try:
        return _load(Path(path), max_pixels)
    except (ImageError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises SyntaxError, struct.error, zlib.error, ...
        raise ImageError(f"{path}: {_reason(err)}") from err


def _load(path: Path, max_pixels: int | None) -> Tensor:
    if os.stat(path).st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    with _open(path, max_pixels) as img:
        scale, unsigned32 = _integer_format(img)
        img.load()
        img = ImageOps.exif_transpose(img)
    return to_rgb_tensor(img, int_max=scale, unsigned32=unsigned32, source=str(path))


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    """``Image.open`` (the header only), refused above ``max_pixels`` before any decoding."""
    saved = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            if saved is not None and (max_pixels is None or max_pixels > saved):
                Image.MAX_IMAGE_PIXELS = max_pixels  # PIL's own guard must not refuse first
            img = Image.open(path)
        except Image.DecompressionBombError as err:
            found = re.search(r"\((\d+) pixels\)", str(err))
            count = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
            raise ImageError(_bomb(path, count, max_pixels)) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageError(_bomb(path, f"{width}x{height} = {width * height:,} pixels", max_pixels))
    return img


def _bomb(path: Path, count: str, limit: int | None) -> str:
    return (f"{path}: {count} exceeds the limit of {limit:,} pixels "
            "(decompression-bomb guard; pass max_pixels to raise it)")


def _reason(err: BaseException) -> str:
    """One line for a PIL/OS error (its first line; an OSError's strerror without the path)."""
    if isinstance(err, Image.UnidentifiedImageError):
        return "not a readable image (unknown format or a damaged header)"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _integer_format(img: Image.Image) -> tuple[float | None, bool]:
    """(maximum of an integer mode's sample type or None, whether ``I`` holds unsigned 32-bit).

    ``I;16*``: 65535; ``I`` from a TIFF: its BitsPerSample / SampleFormat (signed: 2^(b-1) - 1;
    Pillow reads unsigned 32-bit samples as signed, so they are reinterpreted); any other ``I``
    (a 16-bit PNG or PGM as older Pillow opens it): 65535. Other modes: (None, False).
    """
    if img.mode.startswith("I;16"):
        return UINT16_MAX, False
    if img.mode != "I":
        return None, False
    tags = getattr(img, "tag_v2", None)
    if tags is None or _TIFF_BITS not in tags:
        return UINT16_MAX, False
    bits = tags[_TIFF_BITS]
    bits = int(bits[0] if isinstance(bits, tuple) else bits)
    fmt = tags.get(_TIFF_SAMPLE_FORMAT, 1)
    signed = int(fmt[0] if isinstance(fmt, tuple) else fmt) == 2
    return float(2 ** (bits - 1) - 1 if signed else 2**bits - 1), bits == 32 and not signed


def to_rgb_tensor(
    img: Image.Image, int_max: float | None = None, unsigned32: bool = False, source: str = "image"
) -> Tensor:
    """PIL image of any mode -> (3, H, W) float32 in [0, 1] (alpha composited on white).

    Integer greyscale (``I``, ``I;16*``) is divided by ``int_max`` (default 65535) and clipped
    (``unsigned32``: the ``I`` samples are unsigned 32-bit, stored by Pillow as signed);
    float greyscale (``F``) is taken as [0, 1] and clipped, and refused (``ImageError`` naming
    ``source``) if any pixel is NaN or infinite.
    """
    if img.mode.startswith("I") or img.mode == "F":
        grey = np.asarray(img)
        if unsigned32 and grey.dtype.itemsize == 4:
            grey = grey.view(np.uint32)
        grey = grey.astype(np.float64 if img.mode.startswith("I") else np.float32)
        if img.mode == "F":
            if not np.isfinite(grey).all():
                raise ImageError(f"{source}: float image has NaN or infinite pixels")
        else:
            grey = grey / (int_max or UINT16_MAX)
        grey = np.clip(grey, 0.0, 1.0).astype(np.float32)
        arr = np.repeat(grey[..., None], 3, axis=2)
    else:
        has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        rgba = img.convert("RGBA") if has_alpha else img.convert("RGB")
        if has_alpha:
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgba = Image.alpha_composite(white, rgba).convert("RGB")
        arr = np.asarray(rgba, dtype=np.float32) / np.float32(UINT8_MAX)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def fit_to_size(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (C, H, W) so it covers ``size`` (shorter side matching), then center-crop to it.

    A source much longer than the target's aspect (see :data:`MAX_UPSCALE_AREA`) is first
    center-cropped to that aspect, so the intermediate never grows past a few target areas.
    """
    height, width = size
    h, w = image.shape[-2:]
    scale = max(height / h, width / w)
    if h * scale * w * scale > MAX_UPSCALE_AREA * height * width:
        keep_h, keep_w = min(h, max(1, round(height / scale))), min(w, max(1, round(width / scale)))
        top, left = (h - keep_h) // 2, (w - keep_w) // 2
        image = image[..., top : top + keep_h, left : left + keep_w]
        h, w = keep_h, keep_w
        scale = max(height / h, width / w)
    new_h, new_w = max(height, math.ceil(h * scale - 1e-6)), max(width, math.ceil(w * scale - 1e-6))
    if (new_h, new_w) != (h, w):
        image = F.interpolate(
            image[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )[0].clamp(0.0, 1.0)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return image[..., top : top + height, left : left + width]
