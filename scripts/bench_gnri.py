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
after ``--warmup`` untimed runs; CUDA is synchronised before each clock read), then the seconds
spent inside the network during those inversions (``net ms``: the counting wrapper's in-run clock,
forward and backward, on the same calls) and ``x net``, the inversion time over it (never below 1).
Each block's first line is the bare network's call time, timed apart (what an ideal loop costs).

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
from baselines import ddim, edict, fixed_point  # noqa: E402
from eval.data import sample_dataset  # noqa: E402
from eval.metrics.psnr import psnr  # noqa: E402
from eval.timing import InRunNetwork, bare_network_times  # noqa: E402
from eval.timed import invert_once, timed_inversion, warm_up  # noqa: E402
from gnri.core import CountingDenoiser, Level, reconstruct, step_residuals  # noqa: E402
from gnri.methods import anderson, gnri, gnri_2x, gnri_official, newton_krylov  # noqa: E402
from gnri.models.base import ScheduleSpec  # noqa: E402
from gnri.models.tiny import tiny_adapter  # noqa: E402

KINDS = {"sd": "ddim", "sdxl": "euler", "flux": "flow_euler", "world_sd": "euler", "world_flux": "flow_euler",
         "world_longtail_sd": "euler", "world_longtail_flux": "flow_euler"}


@dataclass
class Row:
    name: str
    residual: float
    residual_median: float
    roundtrip: float
    psnr_decoded: float
    psnr_input: float
    forward: int
    backward: int
    seconds: float
    network: InRunNetwork


def official_transcription(
    denoiser: Any, x0: torch.Tensor, grid: Any, cond: Any, *, lam: float = 0.1, n_iters: int = 2,
    start: str = "x", centre: str = "marginal", weight: str = "one",
) -> Any:
    """The public code's sign step written by hand in the grid's latent coordinates (issue 14's
    transcription); never calls ``gnri.methods``. ``f`` is DDIM's Eq. 4 (VP) or the flow Euler step
    solved for ``z_t``; its first probe is DDIMInverseScheduler's call (timestep t, cleaner scales).
    Score ``|f - z| + w (lam/2) (f - c)^2 / s_t^2``, step ``z + mean(score) sign(f - z)``, keep the
    best ``f``. Ablations of the ingredients: ``start='ve'`` (first probe at ``(a_t/a_{t-1}) z_{t-1}``,
    the VE scheduler's), ``centre='z0'`` (``c = z0`` with ``s_t / a_t``), ``weight='a'`` (``w = a_t``)."""
    from types import SimpleNamespace

    lv, x, traj = grid.levels, x0, [x0]
    with torch.no_grad():
        for i in range(len(lv) - 1):
            xl, zl = lv[i], lv[i + 1]
            z = (zl.a / xl.a) * x if start == "ve" else x
            best, best_score = x, torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
            for k in range(n_iters):
                level = Level(zl.t, xl.a, xl.s) if (k == 0 and start == "x") else zl
                pred = denoiser(z, level, cond)
                if grid.family == "vp":
                    f = zl.a * (x - xl.s * pred.eps) / xl.a + zl.s * pred.eps
                else:
                    f = x + (zl.s - xl.s) * (pred.eps - pred.x0)
                if centre == "z0":
                    prior = ((f - x0) * (zl.a / zl.s)) ** 2
                else:
                    prior = ((f - zl.a * x0) / zl.s) ** 2
                fvec = ((f - z).abs() + (zl.a if weight == "a" else 1.0) * (lam / 2) * prior).flatten(1)
                score = fvec.mean(dim=1)
                take = (score < best_score).view(-1, *([1] * (x.dim() - 1)))
                best, best_score = torch.where(take, f, best), torch.minimum(score, best_score)
                z = z + score.view(-1, *([1] * (x.dim() - 1))) * torch.sign(f - z)
            x = best
            traj.append(x)
    return SimpleNamespace(z=x, trajectory=tuple(traj), steps=(), cond_per_step=None, sampler=None)


def _diffusers_schedulers(config: Any, num_steps: int, **overrides: Any) -> tuple[Any, Any]:
    """Fresh (DDIMInverseScheduler, DDIMScheduler) from a scheduler config with ``set_timesteps(num_steps)``;
    ``prediction_type`` forced to ``epsilon`` because they are fed ``Prediction.eps``."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    pair = []
    for cls in (DDIMInverseScheduler, DDIMScheduler):
        sched = cls.from_config(config, **{**overrides, "prediction_type": "epsilon"})
        sched.set_timesteps(num_steps)
        pair.append(sched)
    return pair[0], pair[1]


def _vp(alphabar: Any, t: int) -> Level:
    """The VP level of a table entry (``a = sqrt(alphabar)``), at network timestep ``t``."""
    ab = float(alphabar)
    return Level(float(t), ab**0.5, (1.0 - ab) ** 0.5)


def diffusers_transcription(
    denoiser: Any, x0: torch.Tensor, grid: Any, cond: Any, *, scheduler_config: Any, num_steps: int,
    lam: float = 0.1, n_iters: int = 2, **overrides: Any,
) -> Any:
    """A second, grid-free transcription of the public code (issue 26): the levels come from diffusers'
    ``DDIMInverseScheduler`` (its timesteps, ``alphas_cumprod`` and ``initial_alpha_cumprod``) and every
    ``f`` is ``DDIMInverseScheduler.step``; reconstruction is ``DDIMScheduler.step`` over its own
    timesteps (the result's ``sampler``), so ``grid`` is never read. Start from the previous latent, the
    first probe is the DDIM-inversion call (the network at ``t`` on the cleaner latent), score
    ``mean(|f - z| + (lam/2) (f - sqrt(abar_t) z0)^2 / (1 - abar_t))``, step ``z + score sign(f - z)``,
    keep the best ``f``; ``n_iters=1`` is plain DDIM inversion. ``overrides``: scheduler-config ablations."""
    from types import SimpleNamespace

    inv, fwd = _diffusers_schedulers(scheduler_config, num_steps, **overrides)
    ratio = inv.config.num_train_timesteps // num_steps
    x, traj = x0, [x0]
    with torch.no_grad():
        for t in (int(t) for t in inv.timesteps):
            src = min(t - ratio, inv.config.num_train_timesteps - 1)
            src_level = _vp(inv.alphas_cumprod[src] if src >= 0 else inv.initial_alpha_cumprod, t)
            dst_level = _vp(inv.alphas_cumprod[t], t)
            z, best = x, x
            best_score = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
            for k in range(n_iters):
                eps = denoiser(z, src_level if k == 0 else dst_level, cond).eps
                f = inv.step(eps, t, x).prev_sample.to(x.dtype)
                prior = (f - dst_level.a * x0) ** 2 / dst_level.s**2
                score = ((f - z).abs() + (lam / 2) * prior).flatten(1).mean(dim=1)
                take = (score < best_score).view(-1, *([1] * (x.dim() - 1)))
                best, best_score = torch.where(take, f, best), torch.minimum(score, best_score)
                z = z + score.view(-1, *([1] * (x.dim() - 1))) * torch.sign(f - z)
            x = best
            traj.append(x)

    def sampler(den: Any, _grid: Any, c: Any, z_t: torch.Tensor) -> torch.Tensor:
        z = z_t
        with torch.no_grad():
            for t in (int(t) for t in fwd.timesteps):
                z = fwd.step(den(z, _vp(fwd.alphas_cumprod[t], t), c).eps, t, z).prev_sample.to(z_t.dtype)
        return z

    return SimpleNamespace(z=x, trajectory=tuple(traj), steps=(), cond_per_step=None, sampler=sampler)


def diffusers_methods(scheduler_config: Any, num_steps: int) -> dict[str, Callable[..., Any]]:
    """Issue 26: DDIM inversion and the public code's step on diffusers' own DDIM tables (not the grid),
    with two scheduler-config ablations (the clean end at alphabar 1; timesteps without the offset)."""
    bound = partial(diffusers_transcription, scheduler_config=scheduler_config, num_steps=num_steps)
    return {
        "ddim[diffusers]": partial(bound, n_iters=1),
        "transcription[diffusers]": bound,
        "ddim[diffusers,alpha_to_one]": partial(bound, n_iters=1, set_alpha_to_one=True),
        "transcription[diffusers,alpha_to_one]": partial(bound, set_alpha_to_one=True),
        "ddim[diffusers,offset=0]": partial(bound, n_iters=1, steps_offset=0),
        "transcription[diffusers,offset=0]": partial(bound, steps_offset=0),
    }


def official_methods() -> dict[str, Callable[..., Any]]:
    """Issue 14: gnri_official's coordinates against the by-hand transcription and its ablations."""
    return {
        "ddim": ddim.invert,
        "gnri_official": gnri_official.invert,
        "gnri_official[scheduler]": partial(gnri_official.invert, coordinates="scheduler"),
        "gnri_official[latent]": partial(gnri_official.invert, coordinates="latent"),
        "transcription": official_transcription,
        "transcription[start=ve]": partial(official_transcription, start="ve"),
        "transcription[centre=z0]": partial(official_transcription, centre="z0"),
        "transcription[weight=a]": partial(official_transcription, weight="a"),
        "transcription[start=ve,weight=a]": partial(official_transcription, start="ve", weight="a"),
    }


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


def two_x_methods() -> dict[str, Callable[..., Any]]:
    """Issue 14: gnri_2x and its attempts against the methods at 2N network calls (DDIM at N); the
    attempts before the front-loaded schedule are the ``uniform`` rows."""
    return {
        "ddim": ddim.invert,
        "fp2": partial(fixed_point.invert, max_iters=2),
        "edict": edict.invert,
        "gnri_official": gnri_official.invert,
        "gnri_aa[iters=2]": partial(anderson.invert, max_iters=2),
        "gnri_aa[warm,iters=2]": partial(anderson.invert, start="previous", max_iters=2),
        "gnri_2x": gnri_2x.invert,
        "gnri_2x[uniform]": partial(gnri_2x.invert, schedule="uniform"),
        "gnri_2x[first_step_evals=4]": partial(gnri_2x.invert, first_step_evals=4),
        "gnri_2x[first_step_evals=8]": partial(gnri_2x.invert, first_step_evals=8),
        "gnri_2x[1.5/step]": partial(gnri_2x.invert, evals_per_step=1.5),
        "gnri_2x[1.5/step,uniform]": partial(gnri_2x.invert, evals_per_step=1.5, schedule="uniform"),
        "gnri_2x[start=x]": partial(gnri_2x.invert, schedule="uniform", start="x"),
        "gnri_2x[start=previous]": partial(gnri_2x.invert, schedule="uniform", start="previous"),
        "gnri_2x[previous,sigma]": partial(gnri_2x.invert, schedule="uniform", start="previous", first="sigma"),
        "gnri_2x[first=fixed_point]": partial(gnri_2x.invert, schedule="uniform", first="fixed_point"),
        "gnri_2x[first=sigma]": partial(gnri_2x.invert, schedule="uniform", first="sigma"),
        "gnri_2x[second=chebyshev]": partial(gnri_2x.invert, schedule="uniform", second="chebyshev"),
    }


def lam_times_numel(factor: float, **options: Any) -> Callable[..., Any]:
    """gnri with ``lam = factor * D`` (D: the latent's per-sample size), the public fork's scaling."""

    def run(denoiser: Any, x0: torch.Tensor, grid: Any, cond: Any) -> Any:
        return gnri.invert(denoiser, x0, grid, cond, lam=factor * x0[0].numel(), **options)

    return run


PAPER_EULER = {"start": "prior_mean", "prior_mean": "transition", "prior_weight": "one"}


def ablation_methods() -> dict[str, Callable[..., Any]]:
    """Issue 14's ablations of the paper variant ``gnri`` (defaults: lam 0.1, 2 iterations, min_norm,
    l2 prior, output f), with DDIM inversion, gnri_official and gnri_2x for reference."""
    table: dict[str, Callable[..., Any]] = {"ddim": ddim.invert}
    for lam in (0.0, 0.01, 0.1, 1.0):
        table[f"gnri[lam={lam:g}]"] = partial(gnri.invert, lam=lam)
    table["gnri[lam=0.1xD]"] = lam_times_numel(0.1)
    for iters in (1, 3, 4, 5):  # 2: the default, the row gnri[lam=0.1]
        table[f"gnri[iters={iters}]"] = partial(gnri.invert, max_iters=iters, tol=0.0)
    for rule, norm in (("min_norm", "l2_squared"), ("elementwise", "l2"), ("elementwise", "l2_squared")):
        table[f"gnri[{rule},{norm}]"] = partial(gnri.invert, step_rule=rule, prior_norm=norm)
    table["gnri[output=z]"] = partial(gnri.invert, output="z")
    table["gnri[paper_euler]"] = partial(gnri.invert, **PAPER_EULER)
    table["gnri_official"] = gnri_official.invert
    table["gnri_2x"] = gnri_2x.invert
    return table


SUITES: dict[str, Callable[[], dict[str, Callable[..., Any]]]] = {
    "ablation": ablation_methods,
    "variants": methods, "official": official_methods, "2x": two_x_methods}


def load_model(name: str, device: str = "cpu") -> Any:
    """A tiny random-weight adapter (``sd``, ``sdxl``, ``flux``) or a trained world model (``world_*``)."""
    if name.startswith("world_"):
        from eval.world_data import world_adapter

        variant, _, family = name.rpartition("_")  # world_sd -> world; world_longtail_flux -> world_longtail
        return world_adapter(family, variant=variant, name=name, device=device)
    return tiny_adapter(name, device=device)


def _ddim_config(adapter: Any, spacing: str | None) -> dict[str, Any]:
    """The adapter's scheduler config, with the run's ``--spacing`` where one is given."""
    config = dict(adapter.pipe.scheduler.config)
    return config | ({"timestep_spacing": spacing} if spacing else {})


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
) -> tuple[Any, int, int, float, InRunNetwork]:
    """Invert (warm-up, then timed repeats); NFE of one inversion; median seconds; the network's
    seconds inside the timed inversions (the counting wrapper's in-run clock)."""
    den = CountingDenoiser(adapter.denoiser())
    warm_up(lambda: invert_once(fn, den, x0, grid, cond, checked=False), warmup)
    timed = timed_inversion(fn, den, x0, grid, cond, device=x0.device, repeats=repeats, checked=False)
    return timed.result, timed.nfe_forward, timed.nfe_backward, timed.seconds, timed.in_run


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
    spacing = args.spacing or ("trailing" if kind in ("euler", "euler_ancestral") else None)
    print(f"model {label}  latents {args.latents} (RMS {float(x0.pow(2).mean().sqrt()):.3f})  "
          f"images {len(captions)}  warmup {args.warmup}  repeats {args.repeats}  device {device}")
    for steps in args.steps:
        grid = adapter.grid(ScheduleSpec(kind=kind, num_steps=steps, spacing=spacing), x0.shape)
        den = adapter.denoiser()
        ceiling = float(psnr(decoded, images).mean())
        print(f"\n{steps} steps ({kind}{', ' + spacing if spacing else ''}); VAE ceiling PSNR vs input {ceiling:.2f} dB")
        bare = bare_network_times(den, x0, grid.levels[len(grid.levels) // 2], cond, torch.device(device))
        print(f"bare network call (batch {len(captions)}, same run): "
              + (f"{1e3 * bare.forward_s:.1f} ms" if bare.forward_s is not None else f"unavailable ({bare.reason})"))
        print(f"{'method':24s} {'residual':>9s} {'res med':>9s} {'roundtrip':>9s} {'PSNR dec':>8s} {'PSNR in':>8s} "
              f"{'gap dB':>6s} {'fwd':>4s} {'bwd':>4s} {'time/ddim':>9s} {'ms':>8s} {'net ms':>8s} {'x net':>6s}",
              flush=True)
        base = None  # the first method's time (ddim in every suite)
        table = SUITES[args.suite]()
        if args.suite == "official" and kind == "ddim":
            table |= diffusers_methods(_ddim_config(adapter, spacing), steps)
        for name, fn in table.items():
            result, fwd, bwd, secs, network = run_method(fn, adapter, x0, grid, cond, args.warmup, args.repeats)
            base = secs if base is None else base
            with torch.no_grad():
                rec = reconstruct(den, result, grid, cond)
                img = adapter.decode_latents(rec)
                per_step = step_residuals(den, result, grid, cond)
                r = Row(
                    name, float(per_step.mean()), float(per_step.median()),
                    float((rec - x0).pow(2).mean().sqrt()), float(psnr(img, decoded).mean()),
                    float(psnr(img, images).mean()), fwd, bwd, secs, network,
                )
            print(f"{r.name:24s} {r.residual:9.2e} {r.residual_median:9.2e} {r.roundtrip:9.2e} {r.psnr_decoded:8.2f} "
                  f"{r.psnr_input:8.2f} {ceiling - r.psnr_input:6.2f} {r.forward:4d} {r.backward:4d} "
                  f"{r.seconds / base:9.2f} {1e3 * r.seconds:8.1f} {1e3 * r.network.total_s:8.1f} "
                  f"{_ratio(r.network):>6s}", flush=True)


def _ratio(network: InRunNetwork) -> str:
    """The in-run overhead ratio, or n/a (no network time, or a backward pass that was not timed)."""
    if network.overhead_ratio is None or network.unmeasured_backward:
        return "n/a"
    return f"{network.overhead_ratio:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GNRI variants vs DDIM inversion and fixed point, one model.")
    parser.add_argument("--model", choices=tuple(KINDS), default="sd",
                        help="tiny model family, or world_sd / world_flux (the embedded world's trained models), "
                             "world_longtail_sd / world_longtail_flux (trained on the long-tailed world; used for no tuning)")
    parser.add_argument("--kind", choices=("ddim", "euler", "euler_ancestral", "flow_euler"), default=None,
                        help="schedule kind (default: ddim for sd, euler for sdxl and world_sd, flow_euler for flux)")
    parser.add_argument("--spacing", choices=("leading", "trailing", "linspace"), default=None,
                        help="timestep spacing (default: trailing for euler, the checkpoint's own otherwise)")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 10], help="inversion step counts")
    parser.add_argument("--images", type=int, default=4, help="how many sample images (batched)")
    parser.add_argument("--latents", choices=("randn", "encoded"), default="randn")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite", choices=tuple(SUITES), default="variants",
                        help="variants: GNRI's variants (default); official: gnri_official vs the by-hand transcription")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto (cuda if available)")
    bench(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
