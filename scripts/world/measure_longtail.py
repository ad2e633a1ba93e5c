"""Measure the long-tailed world's models for their model card: generation accuracy per frequency bin.

For each of the 28 concepts of :mod:`eval.world.longtail` (shape x colour, binned head / medium /
tail by their training counts), generate ``--per-concept`` images from random seeds, each from the
full caption of one of the concept's held-out reference scenes (the world's models were trained on
captions that state all five attributes: a bare ``a red circle`` is outside what they saw), and count
those the world checker passes on the concept (shape and colour only); report the accuracy per bin. Also the pass rate on the
world's held-out captions (all five attributes). The world's own models (trained on uniform
concepts) are measured the same way as the control. Settings: UNet Euler 4 trailing, guidance 3;
flow model 4 steps, true CFG 3 with an empty negative prompt (``datasets/world/world.json``).

    HF_HUB_OFFLINE=1 python -m scripts.world.measure_longtail [--per-concept 16]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, FluxPipeline, StableDiffusionPipeline

from eval.world.checker import check
from eval.world.generator import read_jsonl
from eval.world.longtail import BINS, concepts, reference_scenes
from scripts.world.common import WORLD_DIR, threads
from scripts.world.measure import generate

LONGTAIL_DIR = WORLD_DIR.parent / "world_longtail"


def load(folder: Path, family: str) -> object:
    """The pipeline in ``folder`` set up as the world card's few-step setting."""
    if family == "sd":
        pipe = StableDiffusionPipeline.from_pretrained(folder)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    else:
        pipe = FluxPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe: object, family: str, prompts: list[str], seed: int, size: int) -> torch.Tensor:
    """Images for ``prompts`` at 4 steps with guidance 3 (true CFG on the flow model)."""
    if family == "sd":
        return generate(pipe, prompts, seed, num_inference_steps=4, guidance_scale=3.0, height=size, width=size)
    return generate(pipe, prompts, seed, num_inference_steps=4, height=size, width=size, max_sequence_length=32,
                    true_cfg_scale=3.0, negative_prompt="")


def per_bin(pipe: object, family: str, per_concept: int, seed: int, size: int) -> dict:
    """Checker pass rate per bin (and per concept) of ``per_concept`` images per concept."""
    cs = concepts()
    prompts = [sc.caption for c in cs for sc in reference_scenes(c, per_concept)]
    scored = [c.caption for c in cs for _ in range(per_concept)]
    images = sample(pipe, family, prompts, seed, size)
    ok = torch.tensor([check(img, p).ok for img, p in zip(images, scored)], dtype=torch.float).view(len(cs), -1)
    out = {b: round(float(ok[[i for i, c in enumerate(cs) if c.bin == b]].mean()), 4) for b in BINS}
    out["per_concept"] = {c.name: round(float(ok[i].mean()), 4) for i, c in enumerate(cs)}
    return out


def heldout_pass(pipe: object, family: str, n: int, seed: int, size: int) -> float:
    """Checker pass rate on the first ``n`` held-out captions of the world (all attributes stated)."""
    prompts = [r["caption"] for r in read_jsonl(WORLD_DIR / "manifests" / "heldout.jsonl")[:n]]
    images = sample(pipe, family, prompts, seed, size)
    return round(sum(check(img, p).ok for img, p in zip(images, prompts)) / len(prompts), 4)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-concept", type=int, default=16)
    ap.add_argument("--n-heldout", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    threads()
    size = json.loads((WORLD_DIR / "world.json").read_text())["image_size"]
    res: dict = {"per_concept_images": args.per_concept, "seed": args.seed,
                 "counts": {b: next(c.count for c in concepts() if c.bin == b) for b in BINS},
                 "concepts": {b: [c.name for c in concepts() if c.bin == b] for b in BINS}}
    for world, root in (("world_longtail", LONGTAIL_DIR), ("world", WORLD_DIR)):
        for family in ("sd", "flux"):
            t = time.time()
            pipe = load(root / family, family)
            key = f"{world}_{family}"
            res[key] = {**per_bin(pipe, family, args.per_concept, args.seed, size),
                        "heldout_pass": heldout_pass(pipe, family, args.n_heldout, args.seed, size)}
            res[key]["seconds"] = round(time.time() - t)
            print(key, {k: v for k, v in res[key].items() if k != "per_concept"}, flush=True)
    print(json.dumps(res, indent=2))
    if not args.no_write:
        (LONGTAIL_DIR / "metrics.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
