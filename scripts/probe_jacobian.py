"""Probe the spectrum of one inversion step's residual operator, band by band (issue 14 diagnostics).

Usage (CPU, offline; under a minute):
    python scripts/probe_jacobian.py --model world_sd --steps 4 --step 0     # Euler trailing, first step
    python scripts/probe_jacobian.py --model world_sd --steps 4 --step 1
    python scripts/probe_jacobian.py --model world_flux --steps 4 --step 0

Each step's fixed-point equation is ``z = f(z)`` (``StepProblem.implicit_map``); its residual
``r(z) = f(z) - z`` has Jacobian ``-(I - J_f)``. The Gaussian model in ``gnri.methods.gnri_2x``
puts the spectrum of ``I - J_f`` in ``[m, 1]`` with ``m = sigma_{t-1} / sigma_t``. This script
measures it: at the step's solution (from ``gnri_2x`` with 2 evaluations per step) it adds, one
radial frequency band of the latent's 2-D FFT at a time, a random perturbation of RMS ``--scale``,
and prints the Rayleigh quotient ``mu = -<d, r(z + d) - r(z)> / <d, d>`` per image (mean, min,
max) and the fraction of the response that stays in the band (1: the operator is diagonal in that
band). It also prints the band powers of the residual and of ``x``. One network call per band, on
latents laid out ``(B, C, H, W)`` (UNet families); a packed flow latent ``(B, L, D)`` is unpacked
by its adapter first when it has ``unpack``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from gnri.core import StepProblem  # noqa: E402
from gnri.methods import gnri_2x  # noqa: E402
from gnri.models.base import ScheduleSpec  # noqa: E402
from scripts.bench_gnri import KINDS, load_images, load_model  # noqa: E402


def band_index(height: int, width: int, bands: int) -> torch.Tensor:
    """The radial frequency band (0 = lowest) of each ``rfft2`` coefficient of an ``height x width`` grid."""
    fy = torch.fft.fftfreq(height).abs()
    fx = torch.fft.rfftfreq(width)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / math.sqrt(0.5)
    return torch.clamp((radius * bands).long(), max=bands - 1)


def band_power(x: torch.Tensor, index: torch.Tensor, bands: int) -> torch.Tensor:
    """Mean power per coefficient of each band, averaged over batch and channels: shape (bands,)."""
    power = torch.fft.rfft2(x.double(), norm="ortho").abs().pow(2).mean(dim=(0, 1))
    return torch.stack([power[index == b].mean() for b in range(bands)])


def band_noise(shape: torch.Size, index: torch.Tensor, band: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise restricted to one band, unit RMS."""
    spectrum = torch.fft.rfft2(torch.randn(shape, generator=generator, dtype=torch.float64), norm="ortho")
    d = torch.fft.irfft2(spectrum * (index == band), s=shape[-2:], norm="ortho")
    return d / d.pow(2).mean().sqrt()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Band-wise spectrum of one inversion step's residual operator.")
    parser.add_argument("--model", choices=tuple(KINDS), default="world_sd")
    parser.add_argument("--kind", choices=("ddim", "euler", "flow_euler"), default=None)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--step", type=int, default=0, help="which inversion step (0: from the clean level)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--bands", type=int, default=8)
    parser.add_argument("--scale", type=float, default=1e-2, help="RMS of each perturbation")
    args = parser.parse_args(argv)
    if not 0 <= args.step < args.steps:
        parser.error(f"--step must be in [0, {args.steps - 1}], got {args.step}")
    adapter = load_model(args.model)
    images, captions = load_images(adapter, args.images, args.model.startswith("world_"))
    kind = args.kind or KINDS[args.model]
    with torch.no_grad():
        x0 = adapter.encode_images(images)
        cond = adapter.encode_prompts(captions)
        grid = adapter.grid(ScheduleSpec(kind=kind, num_steps=args.steps,
                                         spacing="trailing" if kind == "euler" else None), x0.shape)
        den = adapter.denoiser()
        solved = gnri_2x.invert(den, x0, grid, cond, schedule="uniform")
        x, z = solved.trajectory[args.step], solved.trajectory[args.step + 1]
        problem = StepProblem(den, x, grid.levels[args.step], grid.levels[args.step + 1], cond, family=grid.family)
        unpack = getattr(adapter, "unpack", None) if x.dim() != 4 else None
        spatial = (lambda t: unpack(t)) if unpack else (lambda t: t)  # noqa: E731
        pack = getattr(adapter, "pack", None) if unpack else None
        r = problem.implicit_map(problem.predict(z)) - z
        index = band_index(*spatial(x).shape[-2:], args.bands)
        print(f"{args.model} {kind} {args.steps} steps, step {args.step}: m = {gnri_2x.spectrum_floor(problem):.3f}")
        print("residual band power", " ".join(f"{v:.2e}" for v in band_power(spatial(r), index, args.bands)))
        print("x band power       ", " ".join(f"{v:.2e}" for v in band_power(spatial(x), index, args.bands)))
        generator = torch.Generator().manual_seed(0)
        for b in range(args.bands):
            d = band_noise(spatial(z).shape, index, b, generator).to(z.dtype) * args.scale
            d = pack(d) if pack else d
            dr = (problem.implicit_map(problem.predict(z + d)) - (z + d) - r).double()
            mu = -(d.double() * dr).flatten(1).sum(1) / d.double().pow(2).flatten(1).sum(1)
            spectrum = torch.fft.rfft2(spatial(dr), norm="ortho").abs().pow(2)
            inside = float(spectrum[..., index == b].sum() / spectrum.sum())
            print(f"band {b}: mu mean {float(mu.mean()):+.3f}  min {float(mu.min()):+.3f}  "
                  f"max {float(mu.max()):+.3f}  in-band {inside:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
