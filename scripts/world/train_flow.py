"""Train the world's flow-matching transformer (Flux family) on cached VAE latents.

FluxTransformer2DModel (2 double-stream + 2 single-stream blocks, width 64, no guidance
embedding, as FLUX.1-schnell) on the 16x16x4 latents shifted and scaled as FluxPipeline does
(``(z - shift_factor) * scaling_factor``) and packed into 8x8 tokens of 2x2 patches. Text:
the CLIP text tower's pooled output (``pooled_projections``) and the states of a tiny frozen,
randomly initialised T5 encoder at ``T5_MAX_LENGTH`` tokens (``encoder_hidden_states``), both
computed exactly as FluxPipeline.encode_prompt does. Rectified flow: ``z_t = (1 - t) x0 + t eps``,
the network predicts ``eps - x0`` at ``timestep = t``, ``t`` logit-normal(0, 1) (as SD3); the
squared error is weighted ``1 + object_weight`` on the object's latent cells, as for the UNet;
the caption is dropped to "" with probability ``uncond_prob``; the EMA of the weights is saved.

    python -m scripts.world.train_flow --work /tmp/gnri_world --seed 0
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads starve a shared CPU

import argparse
import copy
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from scripts.world.common import (DEFAULT_WORK, Checkpoint, T5_MAX_LENGTH, Log, build_t5_tokenizer, flux_text_embeddings,
                                  object_weights, record, seed_everything, threads)
from scripts.world.latents import load_latents
from scripts.world.train_unet import caption_table, ema_update, text_tower
from scripts.world.train_vae import lr_at

T5_WIDTH = 32
FLUX_CONFIG = dict(
    patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=4,
    joint_attention_dim=T5_WIDTH, pooled_projection_dim=64, guidance_embeds=False, axes_dims_rope=(4, 6, 6),
)


def build_t5(work: Path, seed: int) -> tuple[T5Tokenizer, T5EncoderModel]:
    """The tiny frozen T5 encoder (random weights from ``seed``) and its tokenizer, saved to the work folder."""
    tok = build_t5_tokenizer(work / "tokenizer_2")
    torch.manual_seed(seed + 5)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=T5_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0)).eval()
    t5.save_pretrained(work / "text_encoder_2")
    return tok, t5


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--uncond-prob", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--object-weight", type=float, default=4.0)
    args = ap.parse_args(argv)
    n_threads = threads()
    seed_everything(args.seed)
    log = Log(args.work, "flow")
    cache = load_latents(args.work)
    vcfg = AutoencoderKL.load_config(args.work / "vae")
    tok, te = text_tower(args.work)
    tok2, t5 = build_t5(args.work, args.seed)

    def embed(prompts: list[str]) -> torch.Tensor:
        seq, pooled = flux_text_embeddings(tok, te, tok2, t5, prompts)
        return torch.cat([seq.flatten(1), pooled], dim=1)

    table, distinct = caption_table(cache["captions"], embed)
    seq_table = table[:, :-FLUX_CONFIG["pooled_projection_dim"]].reshape(len(distinct), T5_MAX_LENGTH, T5_WIDTH)
    pooled_table = table[:, -FLUX_CONFIG["pooled_projection_dim"]:]
    index = {c: i for i, c in enumerate(distinct)}
    cap_ids = torch.tensor([index[c] for c in cache["captions"]])
    uncond_id = len(distinct) - 1
    _, c, h, w = cache["mean"].shape
    img_ids = FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", torch.float32)
    txt_ids = torch.zeros(T5_MAX_LENGTH, 3)
    model = FluxTransformer2DModel(**FLUX_CONFIG)
    ema = copy.deepcopy(model).requires_grad_(False)
    log(f"FluxTransformer2DModel {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M params, "
        f"{len(cap_ids)} latents, threads={n_threads}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    n = len(cap_ids)
    ckpt = Checkpoint(args.work, "flow", every=250)
    start, wall0, cpu0 = ckpt.load(model, ema, opt, gen)
    if start:
        log(f"resumed after step {start}")
    t0, c0 = time.time() - wall0, time.process_time() - cpu0
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup=200)
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        mean, std = cache["mean"][idx], cache["std"][idx]
        z = mean + std * torch.randn(mean.shape, generator=gen)
        x0 = FluxPipeline._pack_latents((z - vcfg["shift_factor"]) * vcfg["scaling_factor"], args.batch, c, h, w)
        ids = torch.where(torch.rand(args.batch, generator=gen) < args.uncond_prob, uncond_id, cap_ids[idx])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.sigmoid(torch.randn(args.batch, generator=gen))
        zt = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        pred = model(hidden_states=zt, timestep=t, pooled_projections=pooled_table[ids],
                     encoder_hidden_states=seq_table[ids], txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        weights = object_weights(cache["masks"][idx], args.object_weight).expand(-1, c, -1, -1)
        loss = (FluxPipeline._pack_latents(weights, args.batch, c, h, w) * (pred - (noise - x0)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, min(args.ema, (step + 1) / (step + 10)))
        ckpt.maybe_save(step + 1, model, ema, opt, gen, time.time() - t0, time.process_time() - c0)
        if step % 100 == 0 or step == args.steps - 1:
            log(f"step {step} loss {loss.item():.4f} {(time.time() - t0) / (step + 1):.3f} s/step "
                f"({(time.process_time() - c0) / (step + 1):.3f} cpu)")
    train_s, cpu_s = time.time() - t0, time.process_time() - c0
    ema.save_pretrained(args.work / "transformer")
    log(f"done: {train_s:.0f} s wall, {cpu_s:.0f} s cpu")
    record(args.work, "flow", train_seconds=round(train_s, 1), cpu_seconds=round(cpu_s, 1), steps=args.steps,
           batch=args.batch, lr=args.lr, uncond_prob=args.uncond_prob, ema=args.ema, seed=args.seed,
           object_weight=args.object_weight, params=sum(p.numel() for p in model.parameters()), threads=n_threads)


if __name__ == "__main__":
    main()
