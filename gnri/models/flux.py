"""Flux adapter (FluxPipeline): packed latents, rotary ids, CLIP pooled + T5 text, guidance embedding.

Latents are the VAE's ``(mode - shift_factor) * scaling_factor``, packed by FluxPipeline's
2x2 patching into ``(B, L, 4C)`` tokens; the image ids follow the token grid, which is the
adapter's ``image_size`` (a square grid is assumed for other token counts). ``Level.t`` is
sigma in [0, 1], passed to the transformer exactly as FluxPipeline passes ``timestep / 1000``.
The transformer predicts the velocity ``v = eps - x0``; with ``a = 1 - sigma``, ``s = sigma``:
``x0 = z - sigma v``, ``eps = z + (1 - sigma) v``.

Guidance as FluxPipeline means it (:func:`gnri.models.base.guidance_error`): ``guidance_scale``
feeds the transformer's guidance embedding when it has one (``guidance_embeds``, FLUX.1-dev;
one forward per call), carried as the positive branch's ``guidance`` tensor; a transformer
without one (FLUX.1-schnell) takes only ``guidance_scale=1``. True classifier-free guidance is
the explicit ``true_cfg_scale > 1`` (two forwards per call), with the negative prompt ``""``
unless one is given (FluxPipeline runs true CFG only when a negative prompt is passed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from diffusers import FluxPipeline

from gnri.core import Conditioning, Level, Tensor
from gnri.models.common import (
    batched,
    branches,
    parameter_dtype,
    pixel_size,
    repeat_branches,
    stack_branches,
    vae_dtype,
)
from gnri.models.diffusers_adapter import DiffusersAdapter, NetworkDenoiser
from gnri.models.families import TABLE

MAX_SEQUENCE_LENGTH = 512  # FluxPipeline's default T5 length (FLUX.1-schnell takes 256)


def token_grid(seq_len: int, native: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the packed token grid: the native one if it has ``seq_len`` tokens, else square."""
    if native[0] * native[1] == seq_len:
        return native
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise ValueError(
            f"flux: cannot infer the token grid of {seq_len} tokens (native grid {native}); use image_size"
        )
    return (side, side)


@dataclass
class FluxDenoiser(NetworkDenoiser):
    """FluxTransformer2DModel as a :class:`~gnri.core.Denoiser` on packed latents.

    Conditioning keys: ``prompt_embeds`` (T5), ``pooled_prompt_embeds`` (CLIP), ``txt_ids``, and
    ``guidance`` (``(B,)``, positive branch) fed to the guidance embedding when the transformer
    has one (both CFG branches get it, as in FluxPipeline).
    """

    transformer: Any
    native_grid: tuple[int, int]

    latent_key = "hidden_states"
    prediction = "flow"

    @property
    def network(self) -> Any:
        return self.transformer

    def network_inputs(self, z: Tensor, level: Level, cond: Conditioning) -> dict[str, Any]:
        """The transformer's keyword arguments for one call (CFG branches stacked into one batch)."""
        parts = branches(cond)
        batch, dtype = z.shape[0], parameter_dtype(self.transformer)
        n = batch * len(parts)
        rows, cols = token_grid(z.shape[1], self.native_grid)
        guidance = None
        if self.transformer.config.guidance_embeds:
            if "guidance" not in cond.positive:
                raise ValueError("flux: this transformer has a guidance embedding and the conditioning carries no "
                                 "'guidance' value (build it with FluxAdapter.encode_prompts)")
            value = batched(cond.positive["guidance"], batch, "guidance").to(device=z.device, dtype=torch.float32)
            guidance = value if len(parts) == 1 else value.repeat(len(parts))
        return {
            "hidden_states": repeat_branches(z, len(parts), dtype),
            "timestep": torch.full((n,), level.t, device=z.device, dtype=torch.float32).to(dtype),
            "guidance": guidance,
            "pooled_projections": stack_branches(parts, "pooled_prompt_embeds", batch, dtype),
            "encoder_hidden_states": stack_branches(parts, "prompt_embeds", batch, dtype),
            "txt_ids": parts[-1]["txt_ids"].to(dtype),
            "img_ids": FluxPipeline._prepare_latent_image_ids(n, rows, cols, z.device, dtype),
            "return_dict": False,
        }


class FluxAdapter(DiffusersAdapter):
    """Flux as a :class:`~gnri.models.base.ModelAdapter`.

    Options: ``max_sequence_length`` (T5 tokens, default 512 capped at the tokenizer's length),
    ``image_size`` (default: the VAE config's ``sample_size``), ``guidance_distilled`` (True:
    CFG-based methods do not apply). The distilled guidance value is no adapter option: it is
    the ``guidance_scale`` of :meth:`encode_prompts` (the run's), as FluxPipeline's.
    """

    family = TABLE["flux"].maths
    loader_family = "flux"
    network_kind = TABLE["flux"].network
    network_attr = "transformer"
    pipeline_class: Any = FluxPipeline

    def __init__(
        self,
        pipe: Any,
        *,
        name: str = "flux",
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        guidance: float | None = None,
        max_sequence_length: int | None = None,
        image_size: int | Sequence[int] | None = None,
        guidance_distilled: bool = True,
    ) -> None:
        if guidance is not None:
            raise ValueError(f"model {name}: model.guidance is gone; the run's guidance_scale feeds the guidance "
                             "embedding (FluxPipeline's guidance_scale), true_cfg_scale runs true CFG")
        self._start(name, device, dtype, guidance_distilled)
        self._adopt(pipe)
        side = int(self.pipe.vae.config.sample_size)
        self._image_size = pixel_size(image_size, (side, side))
        factor = int(self.pipe.vae_scale_factor) * 2  # VAE downsampling x 2x2 packing
        if self._image_size[0] % factor or self._image_size[1] % factor:
            raise ValueError(f"model {name}: image_size {self._image_size} must be divisible by {factor}")
        self._grid = (self._image_size[0] // factor, self._image_size[1] // factor)
        limit = int(self.pipe.tokenizer_2.model_max_length)
        self.max_sequence_length = min(max_sequence_length or MAX_SEQUENCE_LENGTH, limit)
        self._denoiser = FluxDenoiser(self.pipe.transformer, self._grid)

    def _fit_vae(self) -> None:
        if self.dtype == torch.float16:  # FLUX's VAE runs in bfloat16 or float32, never float16
            self.pipe.vae.to(vae_dtype(self.dtype, False, never_half=True))

    # --- ModelAdapter -------------------------------------------------------------------------
    def latent_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Packed latent shape ``(B, L, 4C)`` of ``batch`` images at the native size."""
        channels = int(self.pipe.transformer.config.in_channels)
        return (batch, self._grid[0] * self._grid[1], channels)

    def pack(self, latents: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, h/2 * w/2, 4C), FluxPipeline's patching."""
        b, c, h, w = latents.shape
        return FluxPipeline._pack_latents(latents, b, c, h, w)

    def unpack(self, packed: Tensor) -> Tensor:
        """Inverse of :meth:`pack` (token grid from the native size, else square)."""
        b, seq_len, d = packed.shape
        rows, cols = token_grid(seq_len, self._grid)
        x = packed.view(b, rows, cols, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, d // 4, rows * 2, cols * 2)

    def _pack(self, latents: Tensor) -> Tensor:
        return self.pack(latents)

    def _unpack(self, latents: Tensor) -> Tensor:
        return self.unpack(latents)

    def _encode(self, prompts: list[str]) -> dict[str, Tensor]:
        embeds, pooled, txt_ids = self.pipe.encode_prompt(
            prompt=list(prompts), prompt_2=None, device=self.device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled, "txt_ids": txt_ids}

    @property
    def guidance_embeds(self) -> bool:
        """Whether the transformer has a guidance embedding (FLUX.1-dev: yes; FLUX.1-schnell: no)."""
        return bool(self.pipe.transformer.config.guidance_embeds)

    def _guidance_embeds(self) -> bool | None:
        return self.guidance_embeds

    def encode_prompts(
        self, prompts: list[str], guidance_scale: float = 1.0, negative_prompts: list[str] | None = None,
        true_cfg_scale: float = 1.0,
    ) -> Conditioning:
        """T5 hidden states, CLIP pooled output, text ids, and ``guidance_scale`` as the guidance
        embedding's input (when the transformer has one); a negative branch (true CFG at
        ``true_cfg_scale``, the Conditioning's guidance scale) only if ``true_cfg_scale > 1``
        (``""`` unless given). A scale the model cannot use is a ValueError."""
        self._check_guidance(guidance_scale, true_cfg_scale)
        positive = self._encode(prompts)
        if self.guidance_embeds:
            positive["guidance"] = torch.full((len(prompts),), float(guidance_scale), device=self.device)
        negative = None
        if true_cfg_scale > 1.0:
            negative = self._encode(negative_prompts or [""] * len(prompts))
        return Conditioning(positive, negative, float(true_cfg_scale), self.guidance_distilled)

    def _text_encoders(self) -> list[tuple[str, Any, int]]:
        """CLIP at its ``model_max_length``, T5 at ``max_sequence_length``."""
        clip = self.pipe.tokenizer
        return [("text_encoder", clip, int(clip.model_max_length)),
                ("text_encoder_2", self.pipe.tokenizer_2, self.max_sequence_length)]

    def denoiser(self) -> FluxDenoiser:
        return self._denoiser
