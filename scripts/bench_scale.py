"""Inversion cost at the real models' sizes: random-weight SD 1.5, SDXL-Turbo and FLUX.1-schnell networks.

Usage (a CUDA GPU; about 3 minutes on one H100 for the three families):
    python scripts/bench_scale.py --device cuda --dtype bfloat16
    python scripts/bench_scale.py --tiny --device cpu        # the same code path on the tiny models

Real weights cannot be downloaded on the machines this project is developed on, so the denoising
networks are built from the published architecture configs (diffusers' ``unet/config.json`` of
stable-diffusion-v1-5 and sdxl-turbo, ``transformer/config.json`` of FLUX.1-schnell) with random
weights, directly on the device in ``--dtype``. The text encoders and the VAE are small stand-ins
with the real output widths (CLIP-L 768, OpenCLIP-bigG 1280, T5-XXL 4096; VAE factor 8 with
4 or 16 latent channels): they run once per image, outside the timed calls. What this measures is
real: wall-clock seconds per image of inversion and of reconstruction (the paper's
"Backward-Forward Time", inversion plus reconstruction, 0.4-0.5 s on an A100 at 512x512 for
SDXL-Turbo and Flux), network forwards and backwards, and peak GPU memory at the true latent
size. Quality is not measured (random weights), so no PSNR is printed.

Each family runs at its paper setting: SD 1.5 DDIM 50 steps, SDXL-Turbo Euler 4 trailing steps,
FLUX.1-schnell flow-matching Euler 4 steps; no classifier-free guidance (inversion with the
source prompt, guidance 1). Times are medians of ``--repeats`` after ``--warmup`` untimed runs,
with CUDA synchronised around each call (``eval.timing.time_call``); peak memory is the CUDA
allocator's peak over the timed calls (``eval.timing.PeakMemory``), and "beyond generation" subtracts
plain generation's peak measured the same way (``eval.timing.generation_peak_mb``).

Beside every method: the seconds spent inside the network during its timed inversions (the counting
wrapper's in-run clock, on the same calls: CUDA event pairs read once after the run) and the
overhead ratio, inversion seconds over those (never below 1); and the bare network's seconds for the
same passes (``eval.timing.bare_network_times``: the diffusers module on inputs prepared once, same
dtype and attention backend, warm-up, median of 20) with ``overhead_bare``, inversion seconds over
those (what an ideal loop would cost; measured apart, it can read below 1). ``--compile FAMILY...`` times those
families again with the network compiled (``gnri.models.runtime.compile_network``, as
``model.compile=true``): the warm-up covers compilation, whose seconds are printed apart. Each
family ends with one markdown table (method x compile off/on) and, for SDXL-Turbo, issue 16's
target line (``gnri_official`` inversion <= 0.25 s, in-run overhead <= 1.05).

    python scripts/bench_scale.py --families sdxl_turbo --compile sdxl_turbo --attention efficient
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel  # noqa: E402

from baselines import ddim, fixed_point  # noqa: E402
from eval.timing import (  # noqa: E402
    InRunNetwork,
    NetworkTimes,
    bare_network_times,
    generation_peak_mb,
    time_call,
)
from eval.timed import invert_once, timed_inversion, warm_up  # noqa: E402
from gnri.core import CountingDenoiser, sample  # noqa: E402
from gnri.methods import anderson, gnri, gnri_official  # noqa: E402
from gnri.models import load_adapter  # noqa: E402
from gnri.models.attention import ATTENTION_BACKENDS, attention_backend  # noqa: E402
from gnri.models.base import ScheduleSpec  # noqa: E402
from gnri.models.runtime import COMPILE_MODES, RuntimeOptions, compile_network, network_module  # noqa: E402
from gnri.models.tiny import SD_BETAS, tiny_clip_tokenizer, tiny_pipeline, tiny_t5_tokenizer  # noqa: E402

# unet/config.json of stable-diffusion-v1-5/stable-diffusion-v1-5 (859.5 M parameters).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8,
)
# unet/config.json of stabilityai/sdxl-turbo (the SDXL base architecture, 2.57 B parameters).
SDXL_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), use_linear_projection=True, cross_attention_dim=2048,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
# transformer/config.json of black-forest-labs/FLUX.1-schnell (11.9 B parameters).
FLUX_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=False,
    axes_dims_rope=(16, 56, 56),
)
# family -> (schedule kind, steps, spacing, image side)
SETTINGS = {"sd15": ("ddim", 50, None, 512), "sdxl_turbo": ("euler", 4, "trailing", 512),
            "flux_schnell": ("flow_euler", 4, None, 512)}
ADAPTER_FAMILY = {"sd15": "sd", "sdxl_turbo": "sdxl", "flux_schnell": "flux"}


@contextlib.contextmanager
def building_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Construct modules directly on ``device`` in ``dtype`` (no full-precision CPU copy first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _clip(width: int, projection: bool = False) -> Any:
    """A one-layer CLIP text stand-in with the real output width (runs once per image)."""
    tok = tiny_clip_tokenizer()
    n = len(tok)
    config = CLIPTextConfig(vocab_size=n, hidden_size=width, intermediate_size=width, num_attention_heads=8,
                            num_hidden_layers=1, max_position_embeddings=77, bos_token_id=n - 2, eos_token_id=n - 1,
                            pad_token_id=n - 1, projection_dim=width)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(latent_channels: int, scaling: float, shift: float | None = None) -> AutoencoderKL:
    """A four-block (factor 8) narrow VAE stand-in with the real latent constants; Flux's (with a
    ``shift``) has no quant convs."""
    extra: dict[str, Any] = {} if shift is None else {"use_quant_conv": False, "use_post_quant_conv": False,
                                                      "shift_factor": shift}
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         block_out_channels=(16,) * 4, layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, scaling_factor=scaling, **extra)


def full_size_pipeline(family: str, device: torch.device, dtype: torch.dtype) -> Any:
    """The diffusers pipeline of ``family`` with its real denoising network (random weights, built
    on ``device`` in ``dtype``; the scheduler stays float64/float32 on the CPU, as diffusers makes it)."""
    tok = tiny_clip_tokenizer()
    if family == "sd15":
        scheduler = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        with building_on(device, dtype):
            parts = dict(vae=_vae(4, 0.18215), text_encoder=_clip(768), unet=UNet2DConditionModel(**SD15_UNET))
        return StableDiffusionPipeline(**parts, tokenizer=tok, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    if family == "sdxl_turbo":
        scheduler = EulerDiscreteScheduler(**SD_BETAS, steps_offset=1, timestep_spacing="trailing")
        with building_on(device, dtype):
            parts = dict(vae=_vae(4, 0.13025), text_encoder=_clip(768), text_encoder_2=_clip(1280, projection=True),
                         unet=UNet2DConditionModel(**SDXL_UNET))
        return StableDiffusionXLPipeline(**parts, tokenizer=tok, tokenizer_2=tok, scheduler=scheduler,
                                         add_watermarker=False)
    if family == "flux_schnell":
        tok2 = tiny_t5_tokenizer()
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)  # schnell: no shift, no dynamic shifting
        with building_on(device, dtype):
            t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=4096, d_kv=64, d_ff=1024, num_layers=1,
                                         num_heads=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
            parts = dict(vae=_vae(16, 0.3611, shift=0.1159), text_encoder=_clip(768), text_encoder_2=t5,
                         transformer=FluxTransformer2DModel(**FLUX_TRANSFORMER))
        return FluxPipeline(**parts, scheduler=scheduler, tokenizer=tok, tokenizer_2=tok2)
    raise ValueError(f"family must be one of {tuple(SETTINGS)}, got {family!r}")


def methods() -> dict[str, Callable[..., Any]]:
    """``name -> invert(denoiser, x0, grid, cond)``: DDIM inversion, fixed point, GNRI's variants."""
    return {
        "ddim": ddim.invert,
        "fixed_point[3]": partial(fixed_point.invert, max_iters=3),
        "gnri": gnri.invert,
        "gnri_official": gnri_official.invert,
        "gnri_aa": anderson.invert,
    }


GIB = 1024.0  # MiB per GiB
# Issue 16's targets on an H100-class GPU, SDXL-Turbo size, 512x512, 4 steps.
TARGET_FAMILY, TARGET_METHOD, TARGET_INVERT_S, TARGET_OVERHEAD = "sdxl_turbo", "gnri_official", 0.25, 1.05


@dataclass
class Row:
    method: str
    invert_s: float
    reconstruct_s: float
    forward: int
    backward: int
    peak_mib: float
    network_s: float | None = None  # the bare network's seconds for this method's passes
    compiled: bool = False
    generation_mib: float = float("nan")  # plain generation's peak, measured the same way
    in_run: InRunNetwork | None = None  # the network's seconds inside the timed inversions (whole batch)

    @property
    def overhead(self) -> float | None:
        """Inversion seconds over the network's seconds inside them (in-run clock, same calls)."""
        if self.in_run is None or self.in_run.unmeasured_backward:
            return None
        return self.in_run.overhead_ratio

    @property
    def overhead_bare(self) -> float | None:
        """Inversion seconds over the bare network's seconds for the same passes (timed apart)."""
        return self.invert_s / self.network_s if self.network_s else None


def _network_seconds(times: NetworkTimes, forward: int, backward: int) -> float | None:
    if times.forward_s is None or (backward and times.backward_s is None):
        return None
    return forward * times.forward_s + backward * (times.backward_s or 0.0)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def run_methods(name_filter: list[str] | None, den: CountingDenoiser, x0: torch.Tensor, grid: Any, cond: Any,
                network: NetworkTimes, args: argparse.Namespace, device: torch.device, compiled: bool,
                generation_mib: float) -> list[Row]:
    """Warm up, then time (median of ``args.repeats``, peak memory over the timed calls) every method."""
    rows = []
    for name, fn in methods().items():
        if name_filter and name not in name_filter:
            continue
        warm_up(lambda: invert_once(fn, den, x0, grid, cond), args.warmup)
        timed = timed_inversion(fn, den, x0, grid, cond, device=device, repeats=args.repeats, memory=True)
        fwd, bwd, in_run = timed.nfe_forward, timed.nfe_backward, timed.in_run
        with torch.no_grad():
            rec = time_call(lambda: sample(den, timed.result.z, grid, cond), device, args.repeats)
        n = args.images
        rows.append(Row(name, timed.seconds / n, rec.median_s / n, fwd, bwd, timed.peak_mb,
                        _network_seconds(network, fwd, bwd), compiled, generation_mib, in_run))
        r = rows[-1]
        print(f"  {name:16s} invert {r.invert_s:7.3f} s  reconstruct {r.reconstruct_s:7.3f} s  "
              f"total {r.invert_s + r.reconstruct_s:7.3f} s  fwd {r.forward:3d}  bwd {r.backward:3d}  "
              f"peak {r.peak_mib:8.0f} MiB  overhead {_fmt(r.overhead, '.3f')}  "
              f"overhead_bare {_fmt(r.overhead_bare, '.3f')}  compile {'on' if compiled else 'off'}",
              flush=True)
    return rows


def print_table(family: str, params: float, rows: list[Row], compile_s: float | None, images: int,
                tiny: bool = False) -> None:
    """One markdown table: the family (model size) x method, compile off and on."""
    print(f"\n### {family} ({params / 1e9:.2f} B parameters), batch {images}, seconds per image")
    if compile_s is not None:
        print(f"compile on: {compile_s:.1f} s compiling (first calls of each input shape), not in any time below")
    print("| method | compile | invert s | network in run s | overhead ratio | bare network s | overhead ratio (bare) "
          "| fwd | bwd | peak GiB | peak beyond generation GiB | reconstruct s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        net = None if r.network_s is None else r.network_s / images
        in_run = None if r.in_run is None else r.in_run.total_s / images
        print(f"| {r.method} | {'on' if r.compiled else 'off'} | {r.invert_s:.3f} | {_fmt(in_run, '.3f')} "
              f"| {_fmt(r.overhead, '.3f')} | {_fmt(net, '.3f')} | {_fmt(r.overhead_bare, '.3f')} "
              f"| {r.forward} | {r.backward} | {r.peak_mib / GIB:.2f} "
              f"| {(r.peak_mib - r.generation_mib) / GIB:+.2f} | {r.reconstruct_s:.3f} |")
    if family == TARGET_FAMILY and not tiny:
        for r in rows:
            if r.method == TARGET_METHOD:
                met = r.invert_s <= TARGET_INVERT_S and (r.overhead or 99.0) <= TARGET_OVERHEAD
                print(f"target {TARGET_METHOD} (compile {'on' if r.compiled else 'off'}): invert {r.invert_s:.3f} s "
                      f"(<= {TARGET_INVERT_S}), overhead {_fmt(r.overhead, '.3f')} (<= {TARGET_OVERHEAD}): "
                      f"{'met' if met else 'NOT met'}")
    print(flush=True)


def bench_family(family: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[Row]:
    """Build ``family``; time the bare network and every method (and, with ``--compile``, again with
    the network compiled), print the family's table."""
    kind, steps, spacing, side = SETTINGS[family]
    if args.tiny:
        pipe = tiny_pipeline(ADAPTER_FAMILY[family], **({"guidance_embeds": False} if family == "flux_schnell" else {}))
        side = None
    else:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(args.seed)
            pipe = full_size_pipeline(family, device, dtype)
    params = sum(p.numel() for p in (pipe.transformer if family == "flux_schnell" else pipe.unet).parameters())
    options: dict[str, Any] = {"image_size": side} if side else {}
    if family == "flux_schnell" and not args.tiny:
        options["max_sequence_length"] = 256  # FLUX.1-schnell's T5 length
    if args.channels_last and family != "flux_schnell":
        options["channels_last"] = True
    adapter = load_adapter(ADAPTER_FAMILY[family], pipe, device=str(device), dtype=dtype, name=family, **options)
    x0 = torch.randn(adapter.latent_shape(args.images), generator=torch.Generator().manual_seed(args.seed)).to(device)
    cond = adapter.encode_prompts(["a photo of a cat sitting on a wooden bench"] * args.images)
    grid = adapter.grid(ScheduleSpec(kind=kind, num_steps=steps, spacing=spacing), x0.shape)
    print(f"\n{family}: denoiser {params / 1e9:.2f} B parameters, latents {tuple(x0.shape)}, {kind} {steps} steps"
          f"{', ' + spacing if spacing else ''}, {dtype}, {device}, attention {args.attention}"
          f"{', channels-last' if options.get('channels_last') else ''}", flush=True)
    raw = adapter.denoiser()
    den = CountingDenoiser(raw)
    level = grid.levels[len(grid.levels) // 2]

    def measure(compiled: bool, name_filter: list[str] | None) -> list[Row]:
        backward = not compiled or "gnri" in (name_filter or [])
        with torch.no_grad():
            sample(raw, x0, grid, cond)  # warm-up (and compilation) of plain generation
        generation = generation_peak_mb(lambda: sample(raw, x0, grid, cond), device)
        network = bare_network_times(raw, x0, level, cond, device, backward=backward)
        print(f"  bare network (compile {'on' if compiled else 'off'}): forward {network.forward_s * 1e3:.1f} ms"
              + (f", backward {network.backward_s * 1e3:.1f} ms" if network.backward_s is not None else "")
              + f" per pass; plain generation peak {generation / GIB:.2f} GiB", flush=True)
        return run_methods(name_filter, den, x0, grid, cond, network, args, device, compiled, generation)

    rows = measure(False, args.methods)
    compile_s = None
    if family in (args.compile or []):
        runtime = RuntimeOptions(compile=True, compile_mode=args.compile_mode, compile_backend=args.compile_backend)
        clock = compile_network(network_module(adapter.pipe), runtime)
        rows += measure(True, args.compile_methods)
        compile_s = clock.seconds
    print_table(family, params, rows, compile_s, args.images, args.tiny)
    if rows:
        base = rows[0].invert_s + rows[0].reconstruct_s  # the first method run (ddim unless --methods)
        print("  total time as a multiple of DDIM inversion + reconstruction: "
              + ", ".join(f"{r.method}{'[compiled]' if r.compiled else ''} {(r.invert_s + r.reconstruct_s) / base:.2f}x"
                          for r in rows), flush=True)
    del adapter, pipe, den, raw
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--images", type=int, default=1, help="batch size; times are per image")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="the tiny random pipelines instead (a CPU smoke test)")
    parser.add_argument("--methods", nargs="+", choices=tuple(methods()), default=None, help="a subset of the methods")
    parser.add_argument("--attention", choices=ATTENTION_BACKENDS, default="default",
                        help="torch's scaled-dot-product-attention backend (gnri.models.attention); on an H100 with "
                             "torch 2.11 the default one fails in the backward pass of FLUX.1-sized attention")
    parser.add_argument("--compile", nargs="*", choices=tuple(SETTINGS), default=[],
                        help="families to time again with the network compiled (torch.compile, gnri.models.runtime)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="default")
    parser.add_argument("--compile-backend", choices=("inductor", "eager", "aot_eager"), default="inductor")
    parser.add_argument("--compile-methods", nargs="+", choices=tuple(methods()),
                        default=["ddim", "fixed_point[3]", "gnri_official", "gnri_aa"],
                        help="methods timed compiled (default: those without backward passes; gnri's VJPs "
                             "compile a backward graph too, which takes minutes)")
    parser.add_argument("--channels-last", action="store_true", help="UNets in channels-last memory format")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("bench_scale: --device cuda but torch.cuda.is_available() is False on this machine", flush=True)
            return 2
        print(f"GPU {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    failed = []
    for family in args.families:
        try:
            with attention_backend(args.attention):
                bench_family(family, args, device, dtype)
        except Exception as err:  # one family's failure must not lose the others' figures
            failed.append(family)
            print(f"{family}: failed: {type(err).__name__}: {err}", flush=True)
            traceback.print_exc(limit=-8)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
