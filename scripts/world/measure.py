"""Measure the embedded world's models for the model card, from the committed folders only.

Loads ``datasets/world/{sd,flux,clip}`` offline with diffusers'/transformers' from_pretrained and
prints (and writes to ``datasets/world/metrics.json``): the autoencoder's round-trip PSNR on the
held-out manifest, the CLIP model's 1-of-5 accuracy against the manifest's distractor captions,
and the checker's pass rate of images generated from held-out captions (SD folder: DDIM 50 steps
and Euler trailing 4 steps, guidance 3; Flux folder: flow-matching Euler 8 and 4 steps with true
classifier-free guidance 3 and an empty negative prompt), per attribute too.

    HF_HUB_OFFLINE=1 python -m scripts.world.measure [--n-gen 200]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads starve a shared CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, FluxPipeline, StableDiffusionPipeline
from transformers import CLIPModel, CLIPProcessor

from eval.world.checker import check
from eval.world.generator import digest, read_jsonl, render, scene_from_record
from scripts.world.common import WORLD_DIR, psnr, threads


def heldout(world: Path) -> tuple[list[dict], torch.Tensor]:
    """Manifest rows and their renders (N, 3, H, W) in [0, 1]; each render's digest is verified."""
    rows = read_jsonl(world / "manifests" / "heldout.jsonl")
    imgs = []
    for r in rows:
        img, _ = render(scene_from_record(r))
        if digest(img) != r["sha256"]:
            raise RuntimeError(f"held-out scene {r['index']} renders differently from its manifest digest")
        imgs.append(img)
    return rows, torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def vae_psnr(pipe: StableDiffusionPipeline, x: torch.Tensor) -> dict:
    vals = []
    for chunk in x.split(100):
        z = pipe.vae.encode(chunk * 2 - 1).latent_dist.mode()
        vals.append(psnr((pipe.vae.decode(z).sample.clamp(-1, 1) + 1) / 2, chunk))
    v = torch.cat(vals)
    return {"mean_db": round(float(v.mean()), 2), "min_db": round(float(v.min()), 2), "n": len(v)}


@torch.no_grad()
def clip_accuracy(folder: Path, rows: list[dict], x: torch.Tensor) -> dict:
    model, proc = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    hits = 0
    for r, img in zip(rows, x):
        texts = [r["caption"]] + r["distractors"]
        inputs = proc(text=texts, images=[(img.permute(1, 2, 0) * 255).round().byte().numpy()],
                      return_tensors="pt", padding=True)
        hits += int(model(**inputs).logits_per_image[0].argmax() == 0)
    return {"accuracy": round(hits / len(rows), 4), "n": len(rows), "candidates": 1 + len(rows[0]["distractors"])}


def save_grid(images: torch.Tensor, path: Path, n: int = 32, cols: int = 8) -> None:
    """Write the first ``n`` images as one PNG grid (for looking at, not for metrics)."""
    from PIL import Image

    imgs = (images[:n].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    rows = [np.concatenate(list(imgs[i:i + cols]), axis=1) for i in range(0, len(imgs), cols)]
    rows[-1] = np.pad(rows[-1], ((0, 0), (0, rows[0].shape[1] - rows[-1].shape[1]), (0, 0)))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def score(images: torch.Tensor, prompts: list[str]) -> dict:
    verdicts = [check(img, p) for img, p in zip(images, prompts)]
    per = Counter()
    for v in verdicts:
        per.update({k: int(ok) for k, ok in v.checks.items()})
    n = len(verdicts)
    return {"pass_rate": round(sum(v.ok for v in verdicts) / n, 4), "n": n,
            "per_attribute": {k: round(c / n, 4) for k, c in sorted(per.items())}}


@torch.no_grad()
def generate(pipe: object, prompts: list[str], seed: int, chunk: int = 50, **kwargs: object) -> torch.Tensor:
    out = []
    for i in range(0, len(prompts), chunk):
        g = torch.Generator().manual_seed(seed + i)
        batch = prompts[i:i + chunk]
        extra = {**kwargs, "negative_prompt": [kwargs["negative_prompt"]] * len(batch)} if "negative_prompt" in kwargs else kwargs
        out.append(pipe(prompt=batch, generator=g, output_type="pt", **extra).images)
    return torch.cat(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=WORLD_DIR)
    ap.add_argument("--n-gen", type=int, default=200)
    ap.add_argument("--gen-start", type=int, default=0, help="first held-out caption used for generation")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--sd-guidance", type=float, nargs="*", default=None, help="extra SD guidance scales to report")
    ap.add_argument("--only", nargs="*", default=None, help="subset of: vae clip sd flux")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--grids", type=Path, default=None, help="folder for PNG grids of the first generated images")
    args = ap.parse_args(argv)
    threads()
    settings = json.loads((args.world / "world.json").read_text())
    size = settings["image_size"]
    rows, x = heldout(args.world)
    prompts = [r["caption"] for r in rows[args.gen_start:args.gen_start + args.n_gen]]
    only = set(args.only or ["vae", "clip", "sd", "flux"])
    res: dict = {}
    sd = StableDiffusionPipeline.from_pretrained(args.world / settings["sd"]["folder"])
    sd.set_progress_bar_config(disable=True)
    if "vae" in only:
        res["vae_round_trip_psnr"] = vae_psnr(sd, x)
        print("vae", res["vae_round_trip_psnr"], flush=True)
    if "clip" in only:
        res["clip_true_caption_accuracy"] = clip_accuracy(args.world / settings["clip"]["folder"], rows, x)
        print("clip", res["clip_true_caption_accuracy"], flush=True)
    if "sd" in only:
        s = settings["sd"]
        for g in [s["guidance_scale"]] + list(args.sd_guidance or []):
            t = time.time()
            imgs = generate(sd, prompts, args.seed, num_inference_steps=s["num_inference_steps"], guidance_scale=g,
                            height=size, width=size)
            res[f"sd_ddim{s['num_inference_steps']}_cfg{g:g}"] = {**score(imgs, prompts), "seconds": round(time.time() - t)}
            if args.grids:
                save_grid(imgs, args.grids / f"sd_ddim_cfg{g:g}.png")
            print(f"sd ddim cfg {g}", res[f"sd_ddim{s['num_inference_steps']}_cfg{g:g}"], flush=True)
        few = s["few_step"]
        sd.scheduler = EulerDiscreteScheduler.from_config(sd.scheduler.config, timestep_spacing=few["timestep_spacing"])
        imgs = generate(sd, prompts, args.seed, num_inference_steps=few["num_inference_steps"],
                        guidance_scale=s["guidance_scale"], height=size, width=size)
        key = f"sd_euler{few['num_inference_steps']}_trailing_cfg{s['guidance_scale']:g}"
        res[key] = score(imgs, prompts)
        print(key, res[key], flush=True)
        if args.grids:
            save_grid(imgs, args.grids / f"{key}.png")
    if "flux" in only:
        f = settings["flux"]
        flux = FluxPipeline.from_pretrained(args.world / f["folder"])
        flux.set_progress_bar_config(disable=True)
        cfg = f.get("true_cfg_scale", 1.0)
        guidance = {"true_cfg_scale": cfg, "negative_prompt": ""} if cfg > 1.0 else {}
        for steps in (f["num_inference_steps"], 4):
            imgs = generate(flux, prompts, args.seed, num_inference_steps=steps, height=size, width=size,
                            max_sequence_length=f["max_sequence_length"], **guidance)
            res[f"flux_euler{steps}"] = score(imgs, prompts)
            if args.grids:
                save_grid(imgs, args.grids / f"flux_euler{steps}.png")
            print(f"flux {steps}", res[f"flux_euler{steps}"], flush=True)
    res["weights_mb"] = round(sum(p.stat().st_size for p in args.world.rglob("*.safetensors")) / 1e6, 2)
    res["folder_mb"] = round(sum(p.stat().st_size for p in args.world.rglob("*") if p.is_file()) / 1e6, 2)
    print(json.dumps(res, indent=2))
    if not args.no_write:
        path = args.world / "metrics.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**old, **res}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
