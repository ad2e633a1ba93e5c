"""GNRI's variants side by side with DDIM inversion and fixed point at matched NFE (one model, one run).

Usage (CPU, offline; a few minutes on the tiny models):
    OMP_NUM_THREADS=2 python scripts/bench_gnri.py --model sd --steps 4 10
    python scripts/bench_gnri.py --model world_sd --latents encoded --steps 4 10   # trained world UNet, Euler trailing
    python scripts/bench_gnri.py --model world_flux --latents encoded --steps 4 8
    python scripts/bench_gnri.py --model flux --latents encoded --repeats 5

Per method and step count it prints: the mean per-step residual (``gnri.core.step_residuals``,
``x`` units), the latent round-trip error ``RMS(sample(invert(x0)) - x0)``, the PSNR of the
decoded reconstruction against the decoded ``x0`` and against the input image, the gap of the
latter to the VAE ceiling (encode then decode, no diffusion), network
forwards and backwards per inversion (per batch call; x2 with guidance), and the inversion time
as a multiple of DDIM inversion's and in milliseconds for the whole batch (medians of ``--repeats``
after ``--warmup`` untimed runs; CUDA is synchronised before each clock read).

``--latents randn`` (default) draws unit-normal latents (the scale of a real VAE's scaled latents)
and uses their decodings as the input images, so both PSNR columns agree and the VAE ceiling is
infinite; ``encoded`` encodes the sample images with the model's VAE (the tiny random VAE gives
latents ~20x smaller, a regime where a random UNet's maps barely contract, and ~9 dB images).
Fixed point runs at the network-pass budget of each GNRI variant (``fp<N>``: N forwards per step;
gnri's default costs 3 forwards + 2 backwards per step, gnri_official 2, gnri_aa and gnri_nk 3).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from baselines import anderson as aidi  # noqa: E402
from baselines import ddim, fixed_point  # noqa: E402
from eval.data import sample_dataset  # noqa: E402
from eval.metrics.psnr import psnr  # noqa: E402
from eval.timing import time_call  # noqa: E402
from gnri.core import CountingDenoiser, sample, step_residuals  # noqa: E402
from gnri.methods import anderson, gnri, gnri_official, newton_krylov  # noqa: E402
from gnri.models.base import ScheduleSpec  # noqa: E402
from gnri.models.tiny import tiny_adapter  # noqa: E402

KINDS = {"sd": "ddim", "sdxl": "euler", "flux": "flow_euler", "world_sd": "euler", "world_flux": "flow_euler"}


@dataclass
class Row:
    name: str
    residual: float
    roundtrip: float
    psnr_decoded: float
    psnr_input: float
    forward: int
    backward: int
    seconds: float


def methods() -> dict[str, Callable[..., Any]]:
    """Every method of the table: ``name -> invert(denoiser, x0, grid, cond)``."""
    return {
        "ddim": ddim.invert,
        "fp2": partial(fixed_point.invert, max_iters=2),
        "fp3": partial(fixed_point.invert, max_iters=3),
        "fp5": partial(fixed_point.invert, max_iters=5),
        "aidi3": partial(aidi.invert, max_iters=3),
        "gnri": gnri.invert,
        "gnri[output=z]": partial(gnri.invert, output="z"),
        "gnri[lam=0]": partial(gnri.invert, lam=0.0),
        "gnri[elementwise]": partial(gnri.invert, step_rule="elementwise"),
        "gnri_official": gnri_official.invert,
        "gnri_official[latent]": partial(gnri_official.invert, coordinates="latent"),
        "gnri_aa": anderson.invert,
        "gnri_aa[iters=2]": partial(anderson.invert, max_iters=2),
        "gnri_aa[iters=5]": partial(anderson.invert, max_iters=5),
        "gnri_aa[warm]": partial(anderson.invert, start="previous"),
        "gnri_aa[warm,iters=2]": partial(anderson.invert, start="previous", max_iters=2),
        "gnri_aa[lam=0.1]": partial(anderson.invert, lam=0.1),
        "gnri_nk": newton_krylov.invert,
    }


def load_model(name: str, device: str = "cpu") -> Any:
    """A tiny random-weight adapter (``sd``, ``sdxl``, ``flux``) or a trained world model (``world_*``)."""
    if name.startswith("world_"):
        from eval.world_data import world_adapter

        return world_adapter(name.removeprefix("world_"), name=name, device=device)
    return tiny_adapter(name, device=device)


def load_images(adapter: Any, count: int, world: bool) -> tuple[torch.Tensor, list[str]]:
    """The first ``count`` images (built-in sample, or held-out world scenes), resized to the
    model's size, and their captions."""
    if world:
        from eval.world_data import world_dataset

        entries = [e for e in world_dataset(max_images=count) if e.problem is None]
    else:
        entries = [e for e in sample_dataset() if e.problem is None][:count]
    h, w = adapter.image_size()
    imgs = [Image.open(e.path).convert("RGB").resize((w, h), Image.BICUBIC) for e in entries]
    x = torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in imgs])
    return x.float() / 255.0, [e.caption or "" for e in entries]


def run_method(
    fn: Callable[..., Any], adapter: Any, x0: torch.Tensor, grid: Any, cond: Any, warmup: int, repeats: int
) -> tuple[Any, int, int, float]:
    """Invert (warm-up, then timed repeats); NFE of one inversion; median seconds."""
    den = CountingDenoiser(adapter.denoiser())
    for _ in range(warmup):
        fn(den, x0, grid, cond)

    def once() -> Any:
        den.counter.reset()  # the counts of the last call: one inversion
        return fn(den, x0, grid, cond)

    timed = time_call(once, x0.device, repeats)
    return timed.value, den.counter.forward, den.counter.backward, timed.median_s


def bench(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    adapter = load_model(args.model, device)
    images, captions = load_images(adapter, args.images, args.model.startswith("world_"))
    images = images.to(device)
    with torch.no_grad():
        if args.latents == "encoded":
            x0 = adapter.encode_images(images)
        else:
            x0 = torch.randn(adapter.latent_shape(len(captions)), generator=torch.Generator().manual_seed(args.seed))
            x0 = x0.to(device)
            images = adapter.decode_latents(x0)
        decoded = adapter.decode_latents(x0)
    cond = adapter.encode_prompts(captions)
    label = args.model if args.model.startswith("world_") else f"tiny_{args.model}"
    kind = args.kind or KINDS[args.model]
    spacing = args.spacing or ("trailing" if kind == "euler" else None)
    print(f"model {label}  latents {args.latents} (RMS {float(x0.pow(2).mean().sqrt()):.3f})  "
          f"images {len(captions)}  warmup {args.warmup}  repeats {args.repeats}  device {device}")
    for steps in args.steps:
        grid = adapter.grid(ScheduleSpec(kind=kind, num_steps=steps, spacing=spacing), x0.shape)
        den = adapter.denoiser()
        rows = []
        for name, fn in methods().items():
            result, fwd, bwd, secs = run_method(fn, adapter, x0, grid, cond, args.warmup, args.repeats)
            with torch.no_grad():
                rec = sample(den, result.z, grid, cond)
                img = adapter.decode_latents(rec)
                rows.append(Row(
                    name, float(step_residuals(den, result, grid, cond).mean()),
                    float((rec - x0).pow(2).mean().sqrt()), float(psnr(img, decoded).mean()),
                    float(psnr(img, images).mean()), fwd, bwd, secs,
                ))
        base = next(r.seconds for r in rows if r.name == "ddim")
        ceiling = float(psnr(decoded, images).mean())
        print(f"\n{steps} steps ({kind}{', ' + spacing if spacing else ''}); VAE ceiling PSNR vs input {ceiling:.2f} dB")
        print(f"{'method':24s} {'residual':>9s} {'roundtrip':>9s} {'PSNR dec':>8s} {'PSNR in':>8s} "
              f"{'gap dB':>6s} {'fwd':>4s} {'bwd':>4s} {'time/ddim':>9s} {'ms':>8s}")
        for r in rows:
            print(f"{r.name:24s} {r.residual:9.2e} {r.roundtrip:9.2e} {r.psnr_decoded:8.2f} {r.psnr_input:8.2f} "
                  f"{ceiling - r.psnr_input:6.2f} {r.forward:4d} {r.backward:4d} {r.seconds / base:9.2f} {1e3 * r.seconds:8.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GNRI variants vs DDIM inversion and fixed point, one model.")
    parser.add_argument("--model", choices=tuple(KINDS), default="sd",
                        help="tiny model family, or world_sd / world_flux (the embedded world's trained models)")
    parser.add_argument("--kind", choices=("ddim", "euler", "flow_euler"), default=None,
                        help="schedule kind (default: ddim for sd, euler for sdxl and world_sd, flow_euler for flux)")
    parser.add_argument("--spacing", choices=("leading", "trailing", "linspace"), default=None,
                        help="timestep spacing (default: trailing for euler, the checkpoint's own otherwise)")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 10], help="inversion step counts")
    parser.add_argument("--images", type=int, default=4, help="how many sample images (batched)")
    parser.add_argument("--latents", choices=("randn", "encoded"), default="randn")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto (cuda if available)")
    bench(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
