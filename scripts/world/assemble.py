"""Assemble the committed model folders from the trained components in the work folder.

``datasets/world/sd/``: a StableDiffusionPipeline folder (vae, text_encoder = the CLIP text
tower as CLIPTextModel, tokenizer, unet, DDIMScheduler on SD's schedule with clip_sample
False). ``datasets/world/flux/``: a FluxPipeline folder (the same vae and CLIP text tower,
text_encoder_2/tokenizer_2 = the tiny frozen random T5, transformer, FlowMatchEulerDiscreteScheduler
with shift 1 and no dynamic shifting, as FLUX.1-schnell). ``datasets/world/clip/``: the
CLIPModel with its CLIPProcessor. ``datasets/world/world.json``: the settings the models were
trained and measured with. Everything is float32 safetensors.

    python -m scripts.world.assemble --work /tmp/gnri_world
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from diffusers import (AutoencoderKL, DDIMScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline,
                       FluxTransformer2DModel, StableDiffusionPipeline, UNet2DConditionModel)
from transformers import CLIPModel, CLIPProcessor, T5EncoderModel, T5Tokenizer

from eval.world.generator import IMAGE_SIZE
from scripts.world.common import DEFAULT_WORK, T5_MAX_LENGTH, WORLD_DIR
from scripts.world.train_unet import SD_SCHEDULE, text_tower

# Sampling settings the card's numbers were measured with (also the adapters' defaults).
SETTINGS = {
    "image_size": IMAGE_SIZE,
    "sd": {"folder": "sd", "num_inference_steps": 50, "scheduler": "DDIMScheduler", "guidance_scale": 3.0,
           "few_step": {"scheduler": "EulerDiscreteScheduler", "timestep_spacing": "trailing",
                        "num_inference_steps": 4}},
    "flux": {"folder": "flux", "num_inference_steps": 8, "max_sequence_length": T5_MAX_LENGTH,
             "true_cfg_scale": 3.0},  # FluxPipeline's true CFG with an empty negative, as the UNet's guidance 3
    "clip": {"folder": "clip", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
}


def sd_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SD_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)


def assemble(work: Path, out: Path) -> None:
    """Write the sd/, flux/ and clip/ folders and world.json under ``out``."""
    vae = AutoencoderKL.from_pretrained(work / "vae")
    tok, te = text_tower(work)
    sd = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok,
                                 unet=UNet2DConditionModel.from_pretrained(work / "unet"), scheduler=sd_scheduler(),
                                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    flux = FluxPipeline(scheduler=flux_scheduler(), vae=vae, text_encoder=te, tokenizer=tok,
                        text_encoder_2=T5EncoderModel.from_pretrained(work / "text_encoder_2"),
                        tokenizer_2=T5Tokenizer.from_pretrained(work / "tokenizer_2"),
                        transformer=FluxTransformer2DModel.from_pretrained(work / "transformer"))
    for name, pipe in (("sd", sd), ("flux", flux)):
        shutil.rmtree(out / name, ignore_errors=True)
        pipe.save_pretrained(out / name, safe_serialization=True)
    shutil.rmtree(out / "clip", ignore_errors=True)
    CLIPModel.from_pretrained(work / "clip").save_pretrained(out / "clip", safe_serialization=True)
    CLIPProcessor.from_pretrained(work / "clip").save_pretrained(out / "clip")
    (out / "world.json").write_text(json.dumps(SETTINGS, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--out", type=Path, default=WORLD_DIR)
    args = ap.parse_args(argv)
    assemble(args.work, args.out)
    print(f"assembled sd/, flux/, clip/ and world.json under {args.out}")


if __name__ == "__main__":
    main()
