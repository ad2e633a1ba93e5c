"""Train the world's CLIP model (transformers CLIPModel) contrastively, with hard negatives.

Each step renders ``batch`` fresh training scenes; every image is scored against the batch's
captions plus ``hard_negatives`` captions of its own that differ from the true one in exactly one
attribute (the held-out test's kind of distractor). Loss: the symmetric CLIP cross-entropy, the
image->text side over all captions (duplicates of the true caption masked out). Text is padded
to the longest caption during training: CLIP's text tower is causal and pools at the first
end-of-text token, so the pooled features equal those at the pipelines' 77-token padding.

    python -m scripts.world.train_clip --work /tmp/gnri_world --seed 0
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads starve a shared CPU

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from eval.world.generator import IMAGE_SIZE, distractors, heldout_distractors, scenes
from eval.world.grammar import caption
from scripts.world.common import (DEFAULT_WORK, Log, build_clip_tokenizer, images_tensor, record, seed_everything,
                                  threads)
from scripts.world.train_vae import lr_at

WIDTH = 64


def clip_config(vocab_size: int, bos: int, eos: int) -> CLIPConfig:
    """A small CLIP: 3-layer, 64-wide text and vision towers (8x8 patches), 64-d joint space."""
    text = dict(vocab_size=vocab_size, hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=3,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                pad_token_id=eos, projection_dim=WIDTH)
    vision = dict(image_size=IMAGE_SIZE, patch_size=8, hidden_size=WIDTH, intermediate_size=4 * WIDTH,
                  num_hidden_layers=3, num_attention_heads=4, projection_dim=WIDTH)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=WIDTH)


def image_processor() -> CLIPImageProcessor:
    """Preprocessing for world images: no resize/crop change at 64 px, pixels mapped to [-1, 1]."""
    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def features(model: CLIPModel, tok: object, images: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised (image, text) embeddings; ``images`` in [0, 1], (N, 3, H, W)."""
    img = model.get_image_features(pixel_values=images * 2 - 1).pooler_output
    ids = tok(texts, padding="longest", return_tensors="pt")
    txt = model.get_text_features(input_ids=ids.input_ids, attention_mask=ids.attention_mask).pooler_output
    return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


@torch.no_grad()
def heldout_accuracy(model: CLIPModel, tok: object, n: int, seed: int, k: int = 4) -> float:
    """Fraction of held-out scenes 0..n-1 whose true caption outscores its ``k`` distractors."""
    x = images_tensor("heldout", 0, n, seed)
    hits = 0
    for i, sc in enumerate(scenes("heldout", n, seed)):
        texts = [sc.caption] + [caption(a) for a in heldout_distractors(i, k, seed)]
        img, txt = features(model, tok, x[i:i + 1], texts)
        hits += int((img @ txt.T).argmax() == 0)
    return hits / n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--hard-negatives", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=300)
    args = ap.parse_args(argv)
    n_threads = threads()
    seed_everything(args.seed)
    log = Log(args.work, "clip")
    folder = args.work / "clip"
    tok = build_clip_tokenizer(folder)
    model = CLIPModel(clip_config(len(tok), tok.bos_token_id, tok.eos_token_id))
    log(f"CLIPModel {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M params, vocab {len(tok)}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    rng = np.random.default_rng([args.seed, 17])
    t0, c0 = time.time(), time.process_time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup=100)
        scs = scenes("train", args.batch, args.seed, start=step * args.batch)
        x = images_tensor("train", step * args.batch, args.batch, args.seed)
        texts = [s.caption for s in scs]
        texts += [caption(a) for s in scs for a in distractors(s.attrs, args.hard_negatives, rng)]
        img, txt = features(model, tok, x, texts)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T  # (B, B + B*K)
        same = torch.tensor([[t == c for t in texts] for c in texts[:args.batch]])
        same[torch.arange(args.batch), torch.arange(args.batch)] = False
        target = torch.arange(args.batch)
        loss_i = F.cross_entropy(logits.masked_fill(same, float("-inf")), target)
        loss_t = F.cross_entropy(logits[:, :args.batch].T.masked_fill(same[:, :args.batch], float("-inf")), target)
        loss = (loss_i + loss_t) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            log(f"step {step} loss {loss.item():.4f} scale {scale.item():.1f} "
                f"{(time.time() - t0) / (step + 1):.3f} s/step ({(time.process_time() - c0) / (step + 1):.3f} cpu)")
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            log(f"step {step + 1} held-out 1-of-{args.hard_negatives + 2} accuracy "
                f"{heldout_accuracy(model, tok, 200, args.seed):.3f}")
    train_s, cpu_s = time.time() - t0, time.process_time() - c0
    acc = heldout_accuracy(model, tok, 500, args.seed)
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor(), tokenizer=tok).save_pretrained(folder)
    log(f"done: {train_s:.0f} s wall, {cpu_s:.0f} s cpu, held-out accuracy (true vs 4 distractors) {acc:.3f}")
    record(args.work, "clip", train_seconds=round(train_s, 1), cpu_seconds=round(cpu_s, 1), steps=args.steps,
           batch=args.batch, hard_negatives=args.hard_negatives, lr=args.lr, seed=args.seed,
           heldout_accuracy_1of5=round(acc, 4), params=sum(p.numel() for p in model.parameters()),
           threads=n_threads)


if __name__ == "__main__":
    main()
