"""Encode the training set once: VAE posterior means/stds, object masks at latent resolution
(area fractions) and captions, cached in the work folder.

    python -m scripts.world.latents --work /tmp/gnri_world --seed 0 --n 20000
    python -m scripts.world.latents --work /tmp/gnri_longtail --seed 1 --world longtail

``--world longtail`` encodes the long-tailed training set of :mod:`eval.world.longtail`
(all of it: ``--n`` is ignored) instead of the world's uniform ``train`` split.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads starve a shared CPU

import argparse
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from eval.world.generator import render_many
from eval.world.longtail import longtail_scenes, train_size
from scripts.world.common import DEFAULT_WORK, Log, captions, images_and_masks, record, threads

CHUNK = 250


def longtail_images_and_masks(start: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Long-tailed training scenes ``start .. start + n - 1`` as (images in [0, 1], masks)."""
    imgs, masks = render_many(longtail_scenes(n, seed, start))
    return (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0, torch.from_numpy(masks)[:, None].float())


@torch.no_grad()
def encode_train(work: Path, n: int, seed: int, world: str = "world") -> dict:
    """Posterior mean and std (N, 4, h, w) of training scenes 0..n-1 (unscaled), the object
    masks' area fraction per latent cell (N, 1, h, w), and the captions."""
    vae = AutoencoderKL.from_pretrained(work / "vae").eval()
    load = longtail_images_and_masks if world == "longtail" else (lambda s, k, sd: images_and_masks("train", s, k, sd))
    means, stds, masks = [], [], []
    for start in range(0, n, CHUNK):
        x, m = load(start, min(CHUNK, n - start), seed)
        post = vae.encode(x * 2 - 1).latent_dist
        means.append(post.mean)
        stds.append(post.std)
        masks.append(torch.nn.functional.adaptive_avg_pool2d(m, post.mean.shape[-1]))
    return {"mean": torch.cat(means), "std": torch.cat(stds), "masks": torch.cat(masks),
            "captions": ([sc.caption for sc in longtail_scenes(n, seed)] if world == "longtail"
                         else captions("train", 0, n, seed)), "seed": seed}


def load_latents(work: Path) -> dict:
    """The cache written by :func:`main`; a one-line error if it is missing."""
    path = work / "latents.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `python -m scripts.world.latents --work {work}` first")
    return torch.load(path, weights_only=True)  # tensors, captions and the seed: no code runs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--world", choices=("world", "longtail"), default="world")
    args = ap.parse_args(argv)
    if args.world == "longtail":
        args.n = train_size()
    threads()
    log = Log(args.work, "latents")
    t0, c0 = time.time(), time.process_time()
    cache = encode_train(args.work, args.n, args.seed, args.world)
    torch.save(cache, args.work / "latents.pt")
    log(f"encoded {args.n} training images in {time.time() - t0:.0f} s; latent std {cache['mean'].std():.4f}")
    record(args.work, "latents", train_seconds=round(time.time() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1),
           n=args.n, seed=args.seed, world=args.world)


if __name__ == "__main__":
    main()
