"""Tiny random-weight SD, SDXL and Flux pipelines built in code: offline tests and smoke runs.

Each pipeline is a real diffusers pipeline (so ``save_pretrained`` writes a diffusers folder
that the adapters' ``from_pretrained`` load back), well under 3 MB, with 32x32-pixel images
and 16x16 latents (two VAE blocks: scale factor 2). Weights are random but deterministic in
``seed``; the text side uses an in-memory byte-level CLIP vocabulary (514 tokens, no merges)
and a tiny in-memory T5 unigram vocabulary. Configurations follow
``shared/reference/env.md`` (sections 2a-2b), shrunk to stay small and fast on a CPU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from diffusers import (
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
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from gnri.models.families import FAMILIES, TABLE

TinyFamily = Literal["sd", "sdxl", "flux"]
TINY_FAMILIES = FAMILIES  # every loader family of gnri.models.families has a tiny builder (FamilyFacts.tiny)

CLIP_MAX_LENGTH = 77  # CLIP's context; the pipelines pad prompts to the tokenizer's length
T5_MAX_LENGTH = 32  # tiny Flux prompts: max_sequence_length the adapter passes
LATENT_SIZE = 16  # latent side; images are 2x that (two VAE blocks)
TEXT_WIDTH = 32  # hidden size of every tiny text encoder
# SD's scaled-linear DDPM schedule, as in the SD 1.x/2.x scheduler configs.
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
T5_WORDS = ("a", "an", "the", "photo", "of", "cat", "dog", "painting", "red", "blue", "tree", "house")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Initialise weights from ``seed`` without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-character table of GPT-2/CLIP byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """Byte-level CLIP tokenizer: 256 bytes, the same with ``</w>``, and the two specials."""
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=CLIP_MAX_LENGTH)


def tiny_t5_tokenizer() -> T5Tokenizer:
    """Unigram T5 tokenizer over a handful of words and single characters."""
    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in T5_WORDS] + [(c, -5.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def _clip_config(vocab_size: int, hidden: int = TEXT_WIDTH) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, projection_dim=hidden,
    )


def tiny_vae(latent_channels: int = 4, flux: bool = False) -> AutoencoderKL:
    """Two-block VAE (scale factor 2); Flux's has no quant convs and a shift factor."""
    extra: dict[str, Any] = {}
    if flux:
        extra = {"use_quant_conv": False, "use_post_quant_conv": False, "shift_factor": 0.0609,
                 "scaling_factor": 1.5035}  # a shift and scale like FLUX.1's VAE (whose own are 0.1159, 0.3611)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=2 * LATENT_SIZE, **extra,
    )


def tiny_sd_pipeline(prediction_type: str = "epsilon", seed: int = 0) -> StableDiffusionPipeline:
    """SD 1.x/2.x-shaped pipeline with SD's DDIM scheduler config (``clip_sample=False``)."""
    with _seeded(seed):
        tok = tiny_clip_tokenizer()
        text_encoder = CLIPTextModel(_clip_config(len(tok)))
        unet = UNet2DConditionModel(
            sample_size=LATENT_SIZE, in_channels=4, out_channels=4, block_out_channels=(16, 32),
            layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_WIDTH,
            attention_head_dim=8, norm_num_groups=8,
        )
        vae = tiny_vae()
    scheduler = DDIMScheduler(
        **SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """SDXL-shaped pipeline: two CLIP encoders, text_time added conditioning, Euler scheduler."""
    time_dim = 8
    with _seeded(seed):
        tok = tiny_clip_tokenizer()
        te1 = CLIPTextModel(_clip_config(len(tok)))
        te2 = CLIPTextModelWithProjection(_clip_config(len(tok)))
        unet = UNet2DConditionModel(
            sample_size=LATENT_SIZE, in_channels=4, out_channels=4, block_out_channels=(16, 32),
            layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
            transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * time_dim + TEXT_WIDTH,
            cross_attention_dim=2 * TEXT_WIDTH, norm_num_groups=8,
        )
        vae = tiny_vae()
    scheduler = EulerDiscreteScheduler(**SD_BETAS, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok, unet=unet,
        scheduler=scheduler, add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux_pipeline(guidance_embeds: bool = True, dynamic_shift: bool = True, seed: int = 0) -> FluxPipeline:
    """Flux-shaped pipeline. Defaults are FLUX.1-dev-like (guidance embedding, dynamic shift);
    ``guidance_embeds=False, dynamic_shift=False`` is FLUX.1-schnell-like."""
    with _seeded(seed):
        tok = tiny_clip_tokenizer()
        te1 = CLIPTextModel(_clip_config(len(tok)))
        tok2 = tiny_t5_tokenizer()
        te2 = T5EncoderModel(T5Config(
            vocab_size=len(tok2), d_model=TEXT_WIDTH, d_kv=8, d_ff=2 * TEXT_WIDTH, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        ))
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=TEXT_WIDTH, pooled_projection_dim=TEXT_WIDTH,
            axes_dims_rope=(4, 4, 8), guidance_embeds=guidance_embeds,
        )
        vae = tiny_vae(flux=True)
    # The FLUX.1 scheduler configs: dev shifts with the image sequence length, schnell does not.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0 if dynamic_shift else 1.0, use_dynamic_shifting=dynamic_shift, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=te1, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok2,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pipeline(family: TinyFamily, seed: int = 0, **options: Any) -> Any:
    """The tiny pipeline of ``family`` (sd | sdxl | flux); ``options`` go to its builder."""
    if family not in TABLE:
        raise ValueError(f"tiny model family must be one of {TINY_FAMILIES}, got {family!r}")
    return TABLE[family].tiny_builder()(seed=seed, **options)


def save_tiny(family: TinyFamily, folder: str | Path, seed: int = 0, **options: Any) -> Path:
    """Write the tiny pipeline of ``family`` as a diffusers folder; returns the folder."""
    folder = Path(folder)
    tiny_pipeline(family, seed=seed, **options).save_pretrained(folder)
    return folder


def tiny_adapter(
    family: TinyFamily,
    pretrained: str | None = None,
    seed: int = 0,
    prediction_type: str = "epsilon",
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    **adapter_options: Any,
) -> Any:
    """An adapter around the tiny ``family`` pipeline built in code (or loaded from ``pretrained``).

    ``prediction_type`` applies to ``sd`` only (``epsilon`` or ``v_prediction``);
    ``adapter_options`` go to the adapter constructor (e.g. ``guidance`` for Flux).
    """
    from gnri.models import load_adapter

    if pretrained is not None:
        return load_adapter(family, pretrained, device=device, dtype=dtype, **adapter_options)
    builder_options: dict[str, Any] = {"prediction_type": prediction_type} if family == "sd" else {}
    pipe = tiny_pipeline(family, seed=seed, **builder_options)
    name = adapter_options.pop("name", f"tiny_{family}" + ("_v" if prediction_type == "v_prediction" else ""))
    return load_adapter(family, pipe, device=device, dtype=dtype, name=name, **adapter_options)
