"""Stable Diffusion 1.x/2.x adapter (StableDiffusionPipeline): eps or v prediction, batched CFG.

``Level.t`` is the DDPM timestep the UNet is conditioned on; the UNet always sees the VP
latent (for Euler grids that is the VE latent after ``scale_model_input``). The prediction
type comes from the scheduler config (``epsilon`` or ``v_prediction``) unless overridden.
Latents are ``vae_mode * scaling_factor`` (posterior mode, no sampling), in float32 (float64 for a
float64 model) whatever precision the network runs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from gnri.core import Conditioning, Level, Tensor
from gnri.models.common import (
    PREDICTION_TYPES,
    branches,
    parameter_dtype,
    pixel_size,
    repeat_branches,
    stack_branches,
    vae_dtype,
)
from gnri.models.diffusers_adapter import DiffusersAdapter, NetworkDenoiser
from gnri.models.families import TABLE
from gnri.models.weights import safe_load_kwargs

ADDED_COND_KEYS = ("text_embeds", "time_ids")  # SDXL's added_cond_kwargs


def load_vae(source: Any, dtype: torch.dtype, allow_pickle: bool = False) -> Any:
    """A replacement VAE: an AutoencoderKL module as is, or loaded from a hub id or a folder (a
    VAE folder, or a pipeline folder's ``vae/``), safetensors only unless ``allow_pickle``."""
    if isinstance(source, torch.nn.Module):
        return source
    if not isinstance(source, (str, Path)) or not str(source):
        raise ValueError(f"model.vae must be a hub id, a folder or null, got {source!r}")
    path = Path(str(source)).expanduser()
    subfolder = {"subfolder": "vae"} if (path / "vae" / "config.json").is_file() else {}
    where = path / "vae" if subfolder else path
    safe = safe_load_kwargs(where if where.exists() else source, allow_pickle)
    return AutoencoderKL.from_pretrained(str(path) if path.exists() else str(source), dtype=dtype, **subfolder, **safe)


@dataclass
class UNetDenoiser(NetworkDenoiser):
    """A (SD or SDXL) UNet as a :class:`~gnri.core.Denoiser`.

    Conditioning keys: ``prompt_embeds`` (encoder hidden states) and, for SDXL,
    ``text_embeds`` and ``time_ids`` (added_cond_kwargs). Under CFG one UNet call evaluates
    the batch ``[negative, positive]`` (two forwards). The network runs in its own dtype;
    predictions come back in the latent's dtype.
    """

    unet: Any
    prediction_type: str

    latent_key = "sample"

    @property
    def network(self) -> Any:
        return self.unet

    @property
    def prediction(self) -> str:
        return self.prediction_type

    def network_inputs(self, z: Tensor, level: Level, cond: Conditioning) -> dict[str, Any]:
        """The UNet's keyword arguments for one call (CFG branches stacked into one batch)."""
        parts = branches(cond)
        batch, dtype = z.shape[0], parameter_dtype(self.unet)
        added = None
        if ADDED_COND_KEYS[0] in parts[0]:
            added = {k: stack_branches(parts, k, batch, dtype) for k in ADDED_COND_KEYS}
        return {
            "sample": repeat_branches(z, len(parts), dtype),
            "timestep": torch.tensor(level.t, dtype=torch.float32, device=z.device),
            "encoder_hidden_states": stack_branches(parts, "prompt_embeds", batch, dtype),
            "added_cond_kwargs": added, "return_dict": False,
        }


class SDAdapter(DiffusersAdapter):
    """Stable Diffusion 1.x/2.x as a :class:`~gnri.models.base.ModelAdapter`.

    ``prediction_type`` (None: the scheduler config's), ``image_size`` (None: UNet
    sample size x VAE factor, e.g. 512 for SD 1.5, 768 for SD 2.1), ``guidance_distilled``
    (False for SD), ``vae`` (None, or a replacement VAE: a hub id or folder of an AutoencoderKL,
    e.g. ``madebyollin/sdxl-vae-fp16-fix``, or the module itself; ``allow_pickle`` as for the
    pipeline). The pipeline is moved to ``device``/``dtype``; a VAE whose config asks for
    ``force_upcast`` (SD's and SDXL's do, the fp16-fix VAE does not) stays in float32 under
    float16 (as in diffusers: :func:`gnri.models.common.vae_dtype`).
    """

    family = TABLE["sd"].maths
    loader_family = "sd"
    network_kind = TABLE["sd"].network
    network_attr = "unet"
    pipeline_class: Any = StableDiffusionPipeline

    def __init__(
        self,
        pipe: Any,
        *,
        name: str = "sd",
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        prediction_type: str | None = None,
        image_size: int | Sequence[int] | None = None,
        guidance_distilled: bool = False,
        vae: Any = None,
        allow_pickle: bool = False,
    ) -> None:
        self._start(name, device, dtype, guidance_distilled)
        if vae is not None:
            pipe.vae = load_vae(vae, self.dtype, allow_pickle)
        self._adopt(pipe)
        self.prediction_type = prediction_type or self.pipe.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in PREDICTION_TYPES[:3]:
            raise ValueError(
                f"model {name}: prediction_type must be one of {PREDICTION_TYPES[:3]}, got {self.prediction_type!r}"
            )
        self._image_size = pixel_size(image_size, self._default_image_size())
        self._denoiser = UNetDenoiser(self.pipe.unet, self.prediction_type)

    def _fit_vae(self) -> None:
        """A VAE whose config sets ``force_upcast`` stays in float32 under float16."""
        keep = vae_dtype(self.dtype, bool(getattr(self.pipe.vae.config, "force_upcast", False)))
        if self.pipe.vae.dtype != keep:
            self.pipe.vae.to(keep)

    @classmethod
    def _pretrained_components(cls, options: dict[str, Any], dtype: torch.dtype, allow_pickle: bool) -> dict[str, Any]:
        vae = options.pop("vae", None)
        return {"vae": load_vae(vae, dtype, allow_pickle)} if vae is not None else {}

    @staticmethod
    def _load_kwargs() -> dict[str, Any]:
        return {"safety_checker": None, "requires_safety_checker": False}

    def _default_image_size(self) -> tuple[int, int]:
        side = int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)
        return (side, side)

    # --- ModelAdapter -------------------------------------------------------------------------
    def latent_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Latent shape of ``batch`` images at the native size."""
        f = int(self.pipe.vae_scale_factor)
        return (batch, int(self.pipe.unet.config.in_channels), self._image_size[0] // f, self._image_size[1] // f)

    def encode_prompts(
        self, prompts: list[str], guidance_scale: float = 1.0, negative_prompts: list[str] | None = None,
        true_cfg_scale: float = 1.0,
    ) -> Conditioning:
        """CLIP hidden states; the negative branch (``""`` unless given) only when guidance > 1
        (classifier-free guidance, as StableDiffusionPipeline); ``true_cfg_scale`` != 1 is a ValueError
        (on a UNet ``guidance_scale`` is classifier-free guidance: :func:`~gnri.models.base.guidance_error`)."""
        self._check_guidance(guidance_scale, true_cfg_scale)
        use_cfg = guidance_scale > 1.0
        pos, neg = self.pipe.encode_prompt(
            list(prompts), self.device, 1, use_cfg, negative_prompt=negative_prompts
        )
        negative = {"prompt_embeds": neg} if use_cfg else None
        return Conditioning({"prompt_embeds": pos}, negative, guidance_scale, self.guidance_distilled)

    def _text_encoders(self) -> list[tuple[str, Any, int]]:
        tok = self.pipe.tokenizer
        return [("text_encoder", tok, int(tok.model_max_length))] if tok is not None else []

    def denoiser(self) -> UNetDenoiser:
        return self._denoiser
