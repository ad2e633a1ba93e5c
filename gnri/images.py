"""Image input for the library and the harness: any PIL image or file -> RGB float in [0, 1].

One size rule everywhere: resize so the image covers the model's size (shorter side matching,
bilinear with antialiasing), then center-crop to it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

Tensor = torch.Tensor
UINT16_MAX = 65535.0
UINT8_MAX = 255.0


def load_image(path: str | Path) -> Tensor:
    """Any image file -> RGB float tensor (3, H, W) in [0, 1]; EXIF orientation applied."""
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
    return to_rgb_tensor(img)


def to_rgb_tensor(img: Image.Image) -> Tensor:
    """PIL image of any mode -> (3, H, W) float32 in [0, 1] (alpha composited on white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(img, dtype=np.float64) / UINT16_MAX
        arr = np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    else:
        has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
        rgba = img.convert("RGBA") if has_alpha else img.convert("RGB")
        if has_alpha:
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgba = Image.alpha_composite(white, rgba).convert("RGB")
        arr = np.asarray(rgba, dtype=np.float64) / UINT8_MAX
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()


def fit_to_size(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (C, H, W) so it covers ``size`` (shorter side matching), then center-crop to it."""
    height, width = size
    h, w = image.shape[-2:]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, math.ceil(h * scale - 1e-6)), max(width, math.ceil(w * scale - 1e-6))
    if (new_h, new_w) != (h, w):
        image = F.interpolate(
            image[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )[0].clamp(0.0, 1.0)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return image[..., top : top + height, left : left + width]
