"""Train the world's noise-prediction UNet (Stable Diffusion family) on cached VAE latents.

UNet2DConditionModel, 1.7 M parameters, on 16x16x4 latents scaled by the VAE's
``scaling_factor``, conditioned by cross-attention on the frozen CLIP text tower's last hidden
states at 77 tokens (exactly what StableDiffusionPipeline.encode_prompt returns). Epsilon
prediction on SD's DDPM schedule (scaled-linear betas 0.00085-0.012, 1000 steps), uniform
timesteps; the caption becomes "" with probability ``uncond_prob`` (classifier-free guidance);
AdamW with warm-up and cosine decay; the exponential moving average of the weights is saved.

Three choices make a model this small learn in minutes, each measured on this world:
- GroupNorm with 8 groups, not 32: at 32 channels, 32 groups is instance normalisation, which
  strips each channel's spatial mean, and at high noise an epsilon model must output exactly
  that (the caption's mean latent colour) to within a few per cent. With 8 groups the x0 mean
  error at t=999 fell from 0.80 to 0.46 in an eighth of the steps.
- Min-SNR-gamma weights ``min(SNR, gamma) / SNR`` (Hang et al. 2023): otherwise the barely
  learnable low-noise steps dominate the gradient.
- Weights ``1 + object_weight`` on the object's latent cells (``common.object_weights``);
  a positive per-element weight leaves the optimum, and so what the model estimates, unchanged.

    python -m scripts.world.train_unet --work /tmp/gnri_world --seed 0
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads starve a shared CPU

import argparse
import copy
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from scripts.world.common import (DEFAULT_WORK, Checkpoint, Log, object_weights, record, sd_text_embeddings,
                                  seed_everything, threads)
from scripts.world.latents import load_latents
from scripts.world.train_vae import lr_at

UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8,
)
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def text_tower(work: Path) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """The CLIP model's tokenizer and its text tower as a stand-alone CLIPTextModel."""
    clip = CLIPModel.from_pretrained(work / "clip")
    te = CLIPTextModel(clip.config.text_config)
    te.load_state_dict(clip.text_model.state_dict())
    return CLIPTokenizer.from_pretrained(work / "clip"), te.eval()


def caption_table(captions: list[str], embed: "callable", chunk: int = 256) -> tuple[torch.Tensor, list[str]]:
    """Embeddings of the distinct captions plus "" (last row); returns (table, distinct captions)."""
    distinct = sorted(set(captions)) + [""]
    rows = [embed(distinct[i:i + chunk]) for i in range(0, len(distinct), chunk)]
    return torch.cat(rows), distinct


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--uncond-prob", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--object-weight", type=float, default=4.0)
    ap.add_argument("--min-snr-gamma", type=float, default=5.0)
    ap.add_argument("--norm-groups", type=int, default=UNET_CONFIG["norm_num_groups"])
    args = ap.parse_args(argv)
    n_threads = threads()
    seed_everything(args.seed)
    log = Log(args.work, "unet")
    cache = load_latents(args.work)
    scale = AutoencoderKL.load_config(args.work / "vae")["scaling_factor"]
    tok, te = text_tower(args.work)
    table, distinct = caption_table(cache["captions"], lambda p: sd_text_embeddings(tok, te, p))
    index = {c: i for i, c in enumerate(distinct)}
    cap_ids = torch.tensor([index[c] for c in cache["captions"]])
    uncond_id = len(distinct) - 1
    sched = DDPMScheduler(**SD_SCHEDULE)
    snr = sched.alphas_cumprod / (1 - sched.alphas_cumprod)
    snr_weight = snr.clamp(max=args.min_snr_gamma) / snr
    unet = UNet2DConditionModel(**{**UNET_CONFIG, "norm_num_groups": args.norm_groups})
    ema = copy.deepcopy(unet).requires_grad_(False)
    log(f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.3f} M params, {len(cap_ids)} latents, "
        f"{len(distinct) - 1} captions, scaling {scale:.4f}, threads={n_threads}")
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    n = len(cap_ids)
    ckpt = Checkpoint(args.work, "unet", every=250)
    start, wall0, cpu0 = ckpt.load(unet, ema, opt, gen)
    if start:
        log(f"resumed after step {start}")
    t0, c0 = time.time() - wall0, time.process_time() - cpu0
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup=200)
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        mean, std = cache["mean"][idx], cache["std"][idx]
        x0 = (mean + std * torch.randn(mean.shape, generator=gen)) * scale
        ids = torch.where(torch.rand(args.batch, generator=gen) < args.uncond_prob, uncond_id, cap_ids[idx])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), generator=gen)
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=table[ids]).sample
        weights = object_weights(cache["masks"][idx], args.object_weight) * snr_weight[t][:, None, None, None]
        loss = (weights * (pred - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, min(args.ema, (step + 1) / (step + 10)))
        ckpt.maybe_save(step + 1, unet, ema, opt, gen, time.time() - t0, time.process_time() - c0)
        if step % 100 == 0 or step == args.steps - 1:
            log(f"step {step} loss {loss.item():.4f} {(time.time() - t0) / (step + 1):.3f} s/step "
                f"({(time.process_time() - c0) / (step + 1):.3f} cpu)")
    train_s, cpu_s = time.time() - t0, time.process_time() - c0
    ema.save_pretrained(args.work / "unet")
    log(f"done: {train_s:.0f} s wall, {cpu_s:.0f} s cpu")
    record(args.work, "unet", train_seconds=round(train_s, 1), cpu_seconds=round(cpu_s, 1), steps=args.steps,
           batch=args.batch, lr=args.lr, uncond_prob=args.uncond_prob, ema=args.ema, seed=args.seed,
           object_weight=args.object_weight, min_snr_gamma=args.min_snr_gamma,
           params=sum(p.numel() for p in unet.parameters()), threads=n_threads)


if __name__ == "__main__":
    main()
