"""The shell every diffusers adapter shares (SD, SDXL, Flux): construction, saving, VAE, network call, hooks.

:class:`DiffusersAdapter` holds a diffusers pipeline (``self.pipe``) and does what does not depend
on the family: ``from_pipeline`` / ``from_pretrained`` (safetensors only unless ``allow_pickle``),
``save_pretrained``, moving and freezing the pipeline, the VAE encode/decode shell (the family only
says how latents are laid out for its network: :meth:`DiffusersAdapter._pack`), grids, the
prompt-truncation warning, the guidance check, and the editing hooks of
:class:`~gnri.models.base.ModelAdapter` on its denoising network. :class:`NetworkDenoiser` is the
network-call shell of the denoisers (guidance branches, bare network call for timing, conversion
to ``Prediction``). A family adapter adds its pipeline class, its network inputs, its
conditioning and its VAE precision rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

import torch

from gnri.core import Conditioning, Grid, Level, Prediction, Tensor
from gnri.models import processors
from gnri.models.base import (
    AdapterDefaults, ModuleHook, ProbabilityCallback, ProcessorFactory, ScheduleSpec, ValueHook, guidance_error,
)
from gnri.models.common import (
    bare_call, branches, freeze, guided, latent_dtype, move, resolve_dtype, to_prediction, truncation_warning,
    vae_decode, vae_encode, vae_factors,
)
from gnri.models.schedules import build_grid
from gnri.models.weights import safe_load_kwargs


class NetworkDenoiser:
    """The network-call shell of a denoiser: subclasses give ``network`` (the module),
    ``latent_key`` (its latent argument), ``prediction`` (what it predicts) and
    :meth:`network_inputs`. Under CFG one call evaluates the batch ``[negative, positive]``."""

    latent_key: str = "sample"

    @property
    def network(self) -> Any:
        raise NotImplementedError

    @property
    def prediction(self) -> str:
        raise NotImplementedError

    def network_inputs(self, z: Tensor, level: Level, cond: Conditioning) -> dict[str, Any]:
        raise NotImplementedError

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 2 if cond.uses_cfg else 1

    def network_call(self, z: Tensor, level: Level, cond: Conditioning, grad: bool = False) -> Callable[[], Any]:
        """The bare network call on inputs prepared once (``grad``: forward + backward to the input),
        for timing the network apart from everything around it (eval.timing.bare_network_times)."""
        return bare_call(self.network, self.network_inputs(z, level, cond), self.latent_key, grad)

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        n = len(branches(cond))
        out = self.network(**self.network_inputs(z, level, cond))[0]
        preds = [to_prediction(o.to(z.dtype), z, level, self.prediction) for o in out.chunk(n)]
        return preds[0] if len(preds) == 1 else guided(preds[0], preds[1], cond.guidance_scale)


class DiffusersAdapter(AdapterDefaults):
    """A :class:`~gnri.models.base.ModelAdapter` around a diffusers pipeline (module docstring).

    Subclasses set ``pipeline_class``, ``family``, ``loader_family``, ``network_kind`` and
    ``network_attr``, call :meth:`_start` then :meth:`_adopt` in ``__init__``, set
    ``self._image_size`` and ``self._denoiser``, and implement ``encode_prompts``.
    """

    pipeline_class: Any = None
    network_attr: str = "unet"  # the pipeline attribute holding the denoising network
    pipe: Any
    _image_size: tuple[int, int]
    _denoiser: Any

    def _start(self, name: str, device: str | torch.device, dtype: str | torch.dtype, guidance_distilled: bool) -> None:
        self.name = name
        self.guidance_distilled = guidance_distilled
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)

    def _adopt(self, pipe: Any) -> None:
        """Move ``pipe`` to the adapter's device and dtype, fix its VAE's precision
        (:meth:`_fit_vae`), silence its progress bar, freeze it, read the VAE's factors."""
        self.pipe = move(pipe, self.device, self.dtype)
        self._fit_vae()
        self.pipe.set_progress_bar_config(disable=True)
        freeze(list(self.pipe.components.values()))
        self._scaling, self._shift = vae_factors(self.pipe.vae)

    def _fit_vae(self) -> None:
        """The family's VAE precision rule (after the pipeline was moved)."""

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_pipeline(cls, pipe: Any, **options: Any) -> Any:
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
    ) -> Any:
        """Load by hub name or local diffusers folder (``variant``: e.g. ``"fp16"`` weight files).

        Safetensors only unless ``allow_pickle`` (:func:`gnri.models.weights.safe_load_kwargs`:
        a folder with only pickle weights is refused before anything is loaded).
        """
        torch_dtype = resolve_dtype(dtype)
        safe = safe_load_kwargs(pretrained, allow_pickle)
        components = cls._pretrained_components(options, torch_dtype, allow_pickle)
        pipe = cls.pipeline_class.from_pretrained(
            str(pretrained), dtype=torch_dtype, variant=variant, **safe, **cls._load_kwargs(), **components
        )
        options.setdefault("name", Path(str(pretrained)).name)
        return cls(pipe, device=device, dtype=torch_dtype, **options)

    @classmethod
    def _pretrained_components(cls, options: dict[str, Any], dtype: torch.dtype, allow_pickle: bool) -> dict[str, Any]:
        """Components loaded apart and passed to the pipeline's ``from_pretrained`` (popped from ``options``)."""
        return {}

    @staticmethod
    def _load_kwargs() -> dict[str, Any]:
        return {}

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the wrapped pipeline as a diffusers folder."""
        self.pipe.save_pretrained(str(folder))

    # --- ModelAdapter -------------------------------------------------------------------------
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    def _pack(self, latents: Tensor) -> Tensor:
        """VAE latents (B, C, h, w) -> the network's layout (identity for UNets)."""
        return latents

    def _unpack(self, latents: Tensor) -> Tensor:
        """Inverse of :meth:`_pack`."""
        return latents

    def encode_images(self, images: Tensor) -> Tensor:
        return self._pack(vae_encode(self.pipe.vae, images.to(self.device), self._scaling, self._shift))

    def decode_latents(self, latents: Tensor) -> Tensor:
        return vae_decode(self.pipe.vae, self._unpack(latents), self._scaling, self._shift)

    def _guidance_embeds(self) -> bool | None:
        return None

    def guidance_problem(self, guidance_scale: float, true_cfg_scale: float = 1.0) -> str | None:
        """One line if this model cannot use these scales (:func:`~gnri.models.base.guidance_error`)."""
        return guidance_error(self.network_kind, self._guidance_embeds(), guidance_scale, true_cfg_scale)

    def _check_guidance(self, guidance_scale: float, true_cfg_scale: float) -> None:
        problem = self.guidance_problem(guidance_scale, true_cfg_scale)
        if problem:
            raise ValueError(f"model {self.name}: {problem}")

    def _text_encoders(self) -> list[tuple[str, Any, int]]:
        """(encoder name, tokenizer, tokens kept) per text encoder."""
        return []

    def prompt_warning(self, prompt: str) -> str | None:
        """One line if ``encode_prompts`` would truncate ``prompt`` (diffusers cuts prompts at each
        encoder's length and only logs it), else None."""
        return truncation_warning(prompt, self._text_encoders())

    def denoiser(self) -> Any:
        return self._denoiser

    def grid(self, schedule: ScheduleSpec, latent_shape: tuple[int, ...]) -> Grid:
        return build_grid(
            schedule, self.family, self.pipe.scheduler.config, tuple(latent_shape), self.name, self.device,
            latent_dtype(self.dtype),
        )

    # --- editing hooks ------------------------------------------------------------------------
    @property
    def network(self) -> torch.nn.Module:
        """The denoising network (the UNet or the Flux transformer)."""
        return getattr(self.pipe, self.network_attr)

    def attention_layers(self, prefix: str = "") -> list[str]:
        return processors.attention_layers(self.network, prefix)

    def attention_processors(self, make: ProcessorFactory) -> ContextManager[None]:
        return processors.install_processors(self.network, make)

    def module_names(self, type_name: str | None = None) -> list[str]:
        return processors.module_names(self.network, type_name)

    def module_hooks(self, hooks: Mapping[str, ModuleHook], *, pre: bool = False) -> ContextManager[None]:
        return processors.install_module_hooks(self.network, hooks, pre)

    def prompt_tokenizer(self) -> Any:
        return getattr(self.pipe, "tokenizer", None)

    def probability_processor(self, callback: ProbabilityCallback, name: str) -> Any:
        if self.network_kind != "unet":
            raise self._no_hooks("UNet attention")
        return processors.P2PAttnProcessor(callback, processors.place_in_unet(name))

    def value_processor(self, original: Any, hook: ValueHook, name: str) -> Any:
        if self.network_kind != "flux":
            raise self._no_hooks("Flux single-stream attention")
        from gnri.models.flux_attention import ValueHookProcessor

        return ValueHookProcessor(original, hook, name)
