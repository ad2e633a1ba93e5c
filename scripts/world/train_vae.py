"""Train the world's image autoencoder: a small AutoencoderKL, 64x64 RGB -> 16x16x4 latents.

Loss: squared error in [-1, 1] pixels on a sample of the posterior, weighted ``1 +
object_weight`` on the object (grown by a pixel) and 1 elsewhere (the flat background is learnt
first and otherwise dominates the loss; see ``common.object_weights``), plus ``kl_weight`` x the
per-element KL to N(0, I) (a light regulariser, as in Stable Diffusion's VAE, without the
perceptual and adversarial terms). Every step draws fresh training-split scenes, so there is
no epoch and no overfitting. Afterwards ``scaling_factor`` (1 / std) and ``shift_factor``
(mean) are measured on training latents and written into the config, as SD and Flux expect.

    python -m scripts.world.train_vae --work /tmp/gnri_world --seed 0
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads starve a shared CPU

import argparse
import math
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from eval.world.checker import check
from eval.world.generator import scenes
from scripts.world.common import (DEFAULT_WORK, Log, images_and_masks, images_tensor, object_weights, psnr, record,
                                  seed_everything, threads)

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=32,
    sample_size=64, mid_block_add_attention=False,
)


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(steps - warmup, 1)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def heldout_round_trip(vae: AutoencoderKL, n: int, seed: int) -> tuple[float, float]:
    """(mean per-image PSNR, checker pass rate) of encode (posterior mode) -> decode on held-out
    scenes 0..n-1: the ceiling any latent model of the world can reach."""
    x = images_tensor("heldout", 0, n, seed)
    ys = []
    for chunk in x.split(50):
        z = vae.encode(chunk * 2 - 1).latent_dist.mode()
        ys.append((vae.decode(z).sample.clamp(-1, 1) + 1) / 2)
    y = torch.cat(ys)
    ok = [check(img, sc.caption).ok for img, sc in zip(y, scenes("heldout", n, seed))]
    return float(psnr(y, x).mean()), sum(ok) / n


@torch.no_grad()
def latent_stats(vae: AutoencoderKL, n: int, seed: int) -> tuple[float, float]:
    """(mean, std) of posterior-mode latents over training scenes 0..n-1."""
    x = images_tensor("train", 0, n, seed)
    z = torch.cat([vae.encode(c * 2 - 1).latent_dist.mode() for c in x.split(100)])
    return float(z.mean()), float(z.std())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-5)
    ap.add_argument("--object-weight", type=float, default=9.0)
    ap.add_argument("--eval-every", type=int, default=300)
    args = ap.parse_args(argv)
    n_threads = threads()
    seed_everything(args.seed)
    log = Log(args.work, "vae")
    vae = AutoencoderKL(**VAE_CONFIG)
    log(f"AutoencoderKL {sum(p.numel() for p in vae.parameters()) / 1e6:.3f} M params, threads={n_threads}")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    t0, c0 = time.time(), time.process_time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup=50)
        x, masks = images_and_masks("train", step * args.batch, args.batch, args.seed)
        x = x * 2 - 1
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        mse = (object_weights(masks, args.object_weight) * (y - x) ** 2).mean()
        kl = post.kl().mean() / post.mean[0].numel()
        loss = mse + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            log(f"step {step} mse {mse.item():.5f} kl/elem {kl.item():.3f} {(time.time() - t0) / (step + 1):.3f} s/step "
                f"({(time.process_time() - c0) / (step + 1):.3f} cpu)")
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            vae.eval()
            p, ok = heldout_round_trip(vae, 100, args.seed)
            log(f"step {step + 1} held-out PSNR {p:.2f} dB, checker pass rate {ok:.3f}")
            vae.train()
    train_s, cpu_s = time.time() - t0, time.process_time() - c0
    vae.eval()
    mean, std = latent_stats(vae, 2000, args.seed)
    vae.register_to_config(scaling_factor=1.0 / std, shift_factor=mean)
    value, ok = heldout_round_trip(vae, 200, args.seed)
    vae.save_pretrained(args.work / "vae")
    log(f"done: {train_s:.0f} s wall, {cpu_s:.0f} s cpu, held-out PSNR {value:.2f} dB, checker pass rate {ok:.3f}, latent mean {mean:.4f} std {std:.4f}")
    record(args.work, "vae", train_seconds=round(train_s, 1), cpu_seconds=round(cpu_s, 1), wall_seconds=round(time.time() - log.t0, 1),
           steps=args.steps, batch=args.batch, lr=args.lr, kl_weight=args.kl_weight, seed=args.seed,
           object_weight=args.object_weight, heldout_psnr_db=round(value, 3), heldout_checker_pass=round(ok, 4),
           params=sum(p.numel() for p in vae.parameters()), threads=n_threads)


if __name__ == "__main__":
    main()
