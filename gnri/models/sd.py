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
from typing import Any, Callable, Sequence

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from gnri.core import Conditioning, Grid, Level, Prediction, Tensor
from gnri.models.base import ScheduleSpec, guidance_error
from gnri.models.common import (
    parameter_dtype,
    repeat_branches,
    PREDICTION_TYPES,
    bare_call,
    branches,
    freeze,
    guided,
    latent_dtype,
    move,
    pixel_size,
    resolve_dtype,
    stack_branches,
    to_prediction,
    truncation_warning,
    vae_decode,
    vae_dtype,
    vae_encode,
    vae_factors,
)
from gnri.models.schedules import build_grid
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
class UNetDenoiser:
    """A (SD or SDXL) UNet as a :class:`~gnri.core.Denoiser`.

    Conditioning keys: ``prompt_embeds`` (encoder hidden states) and, for SDXL,
    ``text_embeds`` and ``time_ids`` (added_cond_kwargs). Under CFG one UNet call evaluates
    the batch ``[negative, positive]`` (two forwards). The network runs in its own dtype;
    predictions come back in the latent's dtype.
    """

    unet: Any
    prediction_type: str

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 2 if cond.uses_cfg else 1

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

    def network_call(self, z: Tensor, level: Level, cond: Conditioning, grad: bool = False) -> Callable[[], Any]:
        """The bare UNet call on inputs prepared once (``grad``: forward + backward to the input),
        for timing the network apart from everything around it (eval.timing.bare_network_times)."""
        return bare_call(self.unet, self.network_inputs(z, level, cond), "sample", grad)

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        n = len(branches(cond))
        out = self.unet(**self.network_inputs(z, level, cond))[0]
        preds = [to_prediction(o.to(z.dtype), z, level, self.prediction_type) for o in out.chunk(n)]
        return preds[0] if len(preds) == 1 else guided(preds[0], preds[1], cond.guidance_scale)


class SDAdapter:
    """Stable Diffusion 1.x/2.x as a :class:`~gnri.models.base.ModelAdapter`.

    ``prediction_type`` (None: the scheduler config's), ``image_size`` (None: UNet
    sample size x VAE factor, e.g. 512 for SD 1.5, 768 for SD 2.1), ``guidance_distilled``
    (False for SD), ``vae`` (None, or a replacement VAE: a hub id or folder of an AutoencoderKL,
    e.g. ``madebyollin/sdxl-vae-fp16-fix``, or the module itself; ``allow_pickle`` as for the
    pipeline). The pipeline is moved to ``device``/``dtype``; a VAE whose config asks for
    ``force_upcast`` (SD's and SDXL's do, the fp16-fix VAE does not) stays in float32 under
    float16 (as in diffusers: :func:`gnri.models.common.vae_dtype`).
    """

    family = "vp"
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
        self.name = name
        self.guidance_distilled = guidance_distilled
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        if vae is not None:
            pipe.vae = load_vae(vae, self.dtype, allow_pickle)
        self.pipe = move(pipe, self.device, self.dtype)
        keep = vae_dtype(self.dtype, bool(getattr(self.pipe.vae.config, "force_upcast", False)))
        if self.pipe.vae.dtype != keep:
            self.pipe.vae.to(keep)
        self.pipe.set_progress_bar_config(disable=True)
        freeze(list(self.pipe.components.values()))
        self.prediction_type = prediction_type or self.pipe.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in PREDICTION_TYPES[:3]:
            raise ValueError(
                f"model {name}: prediction_type must be one of {PREDICTION_TYPES[:3]}, got {self.prediction_type!r}"
            )
        self._image_size = pixel_size(image_size, self._default_image_size())
        self._scaling, self._shift = vae_factors(self.pipe.vae)
        self._denoiser = UNetDenoiser(self.pipe.unet, self.prediction_type)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_pipeline(cls, pipe: Any, **options: Any) -> SDAdapter:
        """Wrap an existing pipeline object (its modules are shared, not copied)."""
        return cls(pipe, **options)

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        variant: str | None = None,
        allow_pickle: bool = False,
        **options: Any,
    ) -> SDAdapter:
        """Load by hub name or local diffusers folder (``variant``: e.g. ``"fp16"`` weight files).

        Safetensors only unless ``allow_pickle`` (:func:`gnri.models.weights.safe_load_kwargs`:
        a folder with only pickle weights is refused before anything is loaded).
        """
        torch_dtype = resolve_dtype(dtype)
        safe = safe_load_kwargs(pretrained, allow_pickle)
        vae = options.pop("vae", None)
        components = {"vae": load_vae(vae, torch_dtype, allow_pickle)} if vae is not None else {}
        pipe = cls.pipeline_class.from_pretrained(
            str(pretrained), dtype=torch_dtype, variant=variant, **safe, **cls._load_kwargs(), **components
        )
        options.setdefault("name", Path(str(pretrained)).name)
        return cls(pipe, device=device, dtype=torch_dtype, **options)

    @staticmethod
    def _load_kwargs() -> dict[str, Any]:
        return {"safety_checker": None, "requires_safety_checker": False}

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the wrapped pipeline as a diffusers folder."""
        self.pipe.save_pretrained(str(folder))

    def _default_image_size(self) -> tuple[int, int]:
        side = int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)
        return (side, side)

    # --- ModelAdapter -------------------------------------------------------------------------
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    def latent_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Latent shape of ``batch`` images at the native size."""
        f = int(self.pipe.vae_scale_factor)
        return (batch, int(self.pipe.unet.config.in_channels), self._image_size[0] // f, self._image_size[1] // f)

    def encode_images(self, images: Tensor) -> Tensor:
        return vae_encode(self.pipe.vae, images.to(self.device), self._scaling, self._shift)

    def decode_latents(self, latents: Tensor) -> Tensor:
        return vae_decode(self.pipe.vae, latents, self._scaling, self._shift)

    def guidance_problem(self, guidance_scale: float, true_cfg_scale: float = 1.0) -> str | None:
        """One line if this model cannot use these scales (:func:`~gnri.models.base.guidance_error`:
        on a UNet ``guidance_scale`` is classifier-free guidance and ``true_cfg_scale`` stays 1)."""
        return guidance_error("unet", None, guidance_scale, true_cfg_scale)

    def encode_prompts(
        self, prompts: list[str], guidance_scale: float = 1.0, negative_prompts: list[str] | None = None,
        true_cfg_scale: float = 1.0,
    ) -> Conditioning:
        """CLIP hidden states; the negative branch (``""`` unless given) only when guidance > 1
        (classifier-free guidance, as StableDiffusionPipeline); ``true_cfg_scale`` != 1 is a ValueError."""
        problem = self.guidance_problem(guidance_scale, true_cfg_scale)
        if problem:
            raise ValueError(f"model {self.name}: {problem}")
        use_cfg = guidance_scale > 1.0
        pos, neg = self.pipe.encode_prompt(
            list(prompts), self.device, 1, use_cfg, negative_prompt=negative_prompts
        )
        negative = {"prompt_embeds": neg} if use_cfg else None
        return Conditioning({"prompt_embeds": pos}, negative, guidance_scale, self.guidance_distilled)

    def prompt_warning(self, prompt: str) -> str | None:
        """One line if ``encode_prompts`` would truncate ``prompt`` (diffusers cuts CLIP prompts
        at the tokenizer's ``model_max_length`` and only logs it), else None."""
        return truncation_warning(prompt, self._text_encoders())

    def _text_encoders(self) -> list[tuple[str, Any, int]]:
        tok = self.pipe.tokenizer
        return [("text_encoder", tok, int(tok.model_max_length))] if tok is not None else []

    def denoiser(self) -> UNetDenoiser:
        return self._denoiser

    def grid(self, schedule: ScheduleSpec, latent_shape: tuple[int, ...]) -> Grid:
        return build_grid(
            schedule, "vp", self.pipe.scheduler.config, tuple(latent_shape), self.name, self.device,
            latent_dtype(self.dtype),
        )
