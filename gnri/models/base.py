"""The model-adapter contract (:class:`ModelAdapter`). Adapters are the only code that imports diffusers.

An adapter owns everything model-specific: latent scaling/shift/packing, the prediction type
(eps, v or flow velocity) and its conversion to :class:`~gnri.core.Prediction`,
classifier-free guidance, extra conditioning (SDXL time ids, Flux ids/pooled/guidance
embedding), and grids read from the scheduler's own tables. Inverters see none of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Literal, Mapping, Protocol

import torch

from gnri.core import Conditioning, Denoiser, Grid, Tensor

ScheduleKind = Literal["ddim", "euler", "euler_ancestral", "flow_euler"]
SCHEDULE_KINDS = ("ddim", "euler", "euler_ancestral", "flow_euler")
VP_KINDS = ("ddim", "euler", "euler_ancestral")  # the kinds a VP model (SD, SDXL) can use
FLOW_KINDS = ("flow_euler",)  # the kinds a rectified-flow model (Flux) can use


@dataclass(frozen=True)
class ScheduleSpec:
    """Where the levels sit (a grid constructor), not a stepping algorithm.

    ``kind``: ``ddim`` (DDIMScheduler tables), ``euler`` (EulerDiscreteScheduler sigmas, the
    SDXL-Turbo setting), ``euler_ancestral`` (the same levels with a stored noise list drawn
    from ``noise_seed``, as GNRI's and ReNoise's SDXL-Turbo code), ``flow_euler``
    (FlowMatchEulerDiscreteScheduler with the model's shift). ``spacing``: the scheduler's
    ``timestep_spacing`` (None keeps the checkpoint's own). ``strength < 1`` inverts only the
    cleanest ``round(strength * num_steps)`` steps (partial inversion, as GNRI's demo at 0.6).
    """

    kind: ScheduleKind = "ddim"
    num_steps: int = 50
    spacing: Literal["leading", "trailing", "linspace"] | None = None
    strength: float = 1.0
    noise_seed: int = 7865

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule.kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")
        if self.num_steps < 1:
            raise ValueError(f"schedule.num_steps must be >= 1, got {self.num_steps}")
        if self.spacing not in (None, "leading", "trailing", "linspace"):
            raise ValueError(f"schedule.spacing must be leading, trailing or linspace, got {self.spacing!r}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"schedule.strength must be in (0, 1], got {self.strength}")


ProcessorFactory = Callable[[str, Any], Any]  # (layer name, its processor now) -> the processor to run there
ModuleHook = Callable[..., Any]  # a torch forward hook (module, args, output) or pre-hook (module, args)
ProbabilityCallback = Callable[[Tensor, bool, str], Tensor]  # (probabilities, is_cross, place) -> probabilities
ValueHook = Callable[[str, Callable[[], Tensor]], "Tensor | None"]  # (layer, its own V, lazily) -> V to use or None


class ModelAdapter(Protocol):
    """What the harness, the library entry point, the editors and every inverter's caller need of a model.

    Images are float tensors (B, 3, H, W) in [0, 1]; latents are whatever layout the
    adapter's denoiser takes ((B, C, h, w) for UNets, packed (B, L, D) for Flux).
    ``family`` is the *maths* family (vp | flow), ``loader_family`` the *loader* family
    (sd | sdxl | flux; :mod:`gnri.models.families`). :class:`AdapterDefaults` gives every member a
    default, so a test double inherits it and implements only what it uses.

    Editing hooks (attention and features of the denoising network, restored on exit):
    :meth:`attention_layers`, :meth:`attention_processors`, :meth:`module_names`,
    :meth:`module_hooks`, :meth:`prompt_tokenizer` and the two processor factories
    :meth:`probability_processor` (UNet attention with its probabilities exposed: Prompt-to-Prompt)
    and :meth:`value_processor` (Flux single-stream attention with its values replaceable: RF-Edit,
    FireFlow).
    """

    name: str
    family: Literal["vp", "flow"]  # maths family
    loader_family: str | None  # sd | sdxl | flux (None: not a diffusers family, e.g. a test double)
    network_kind: Literal["unet", "flux"] | None  # the denoising network (guidance_error's kind)
    guidance_distilled: bool  # SDXL-Turbo, Flux schnell/dev: CFG-based methods do not apply
    device: torch.device
    dtype: torch.dtype  # the network's dtype
    compile_clock: Any  # gnri.models.runtime.CompileClock when the network is compiled, else None

    def image_size(self) -> tuple[int, int]:
        """Native (H, W) in pixels that images are resized to."""
        ...

    def latent_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape of the latents of ``batch`` images at :meth:`image_size`."""
        ...

    def encode_images(self, images: Tensor) -> Tensor:
        """[0, 1] images -> latents: VAE posterior mode (deterministic), scaled/shifted/packed."""
        ...

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Inverse of :meth:`encode_images`, back to [0, 1] images (clamped)."""
        ...

    def encode_prompts(
        self, prompts: list[str], guidance_scale: float = 1.0, negative_prompts: list[str] | None = None,
        true_cfg_scale: float = 1.0,
    ) -> Conditioning:
        """Text conditioning at the run's guidance, as the model's diffusers pipeline means it
        (:func:`guidance_error`); the negative branch is built only when classifier-free guidance is on."""
        ...

    def prompt_warning(self, prompt: str) -> str | None:
        """One line if :meth:`encode_prompts` would truncate ``prompt``, else None."""
        ...

    def guidance_problem(self, guidance_scale: float, true_cfg_scale: float = 1.0) -> str | None:
        """One line if this model cannot use these scales (:func:`guidance_error`), else None."""
        ...

    def denoiser(self) -> Denoiser:
        """The network as a :class:`~gnri.core.Denoiser` returning ``Prediction(x0, eps)``."""
        ...

    def grid(self, schedule: ScheduleSpec, latent_shape: tuple[int, ...]) -> Grid:
        """Levels from the scheduler's own tables (and the stored noise list, if ancestral)."""
        ...

    def attention_layers(self, prefix: str = "") -> list[str]:
        """Names of the network's attention layers (processor names) starting with ``prefix``."""
        ...

    def attention_processors(self, make: ProcessorFactory) -> ContextManager[None]:
        """Inside the block each attention layer runs ``make(name, processor now)`` (return the
        processor given to leave a layer as it is); every processor is restored on exit."""
        ...

    def module_names(self, type_name: str | None = None) -> list[str]:
        """Names of the network's submodules (``named_modules``), those of class ``type_name`` only if given."""
        ...

    def module_hooks(self, hooks: Mapping[str, ModuleHook], *, pre: bool = False) -> ContextManager[None]:
        """Torch forward hooks (``pre``: forward pre-hooks) on the named network submodules for the block."""
        ...

    def prompt_tokenizer(self) -> Any:
        """The tokenizer whose tokens the cross-attention keys are (the first CLIP one), or None."""
        ...

    def probability_processor(self, callback: ProbabilityCallback, name: str) -> Any:
        """An attention processor for UNet layer ``name`` computing attention explicitly, with
        ``callback(probabilities, is_cross, place)`` between softmax and the value product."""
        ...

    def value_processor(self, original: Any, hook: ValueHook, name: str) -> Any:
        """A processor for Flux single-stream layer ``name``: ``original`` where ``hook(name, own_v)``
        returns None, else the same attention with the returned values."""
        ...


class AdapterDefaults:
    """Defaults of every :class:`ModelAdapter` member a model may lack (test doubles subclass it):
    not compiled, no prompt warnings, guidance checked without a network kind, no editing hooks."""

    name: str = "model"
    family: Literal["vp", "flow"] = "vp"
    loader_family: str | None = None
    network_kind: Literal["unet", "flux"] | None = None
    guidance_distilled: bool = False
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    compile_clock: Any = None

    def prompt_warning(self, prompt: str) -> str | None:
        return None

    def guidance_problem(self, guidance_scale: float, true_cfg_scale: float = 1.0) -> str | None:
        return guidance_error(self.network_kind, None, guidance_scale, true_cfg_scale)

    def _no_hooks(self, what: str) -> ValueError:
        return ValueError(f"model {self.name!r} offers no {what} (a {type(self).__name__})")

    def attention_layers(self, prefix: str = "") -> list[str]:
        return []

    def attention_processors(self, make: ProcessorFactory) -> ContextManager[None]:
        raise self._no_hooks("attention layers")

    def module_names(self, type_name: str | None = None) -> list[str]:
        return []

    def module_hooks(self, hooks: Mapping[str, ModuleHook], *, pre: bool = False) -> ContextManager[None]:
        raise self._no_hooks("network modules")

    def prompt_tokenizer(self) -> Any:
        return None

    def probability_processor(self, callback: ProbabilityCallback, name: str) -> Any:
        raise self._no_hooks("UNet attention")

    def value_processor(self, original: Any, hook: ValueHook, name: str) -> Any:
        raise self._no_hooks("Flux single-stream attention")


def guidance_error(
    kind: Literal["unet", "flux"] | None, guidance_embeds: bool | None, guidance_scale: Any, true_cfg_scale: Any
) -> str | None:
    """What is wrong with a run's guidance for a model, in one line (None: nothing), as diffusers means it.

    UNet models (StableDiffusion(XL)Pipeline, SDXL-Turbo included): ``guidance_scale > 1`` is
    classifier-free guidance (two forwards per call; <= 1: off, SDXL-Turbo's card uses 0), and
    ``true_cfg_scale`` does not exist. FLUX (FluxPipeline): ``guidance_scale`` feeds the
    transformer's guidance embedding (``guidance_embeds``: FLUX.1-dev; one forward per call), so a
    transformer without one (FLUX.1-schnell) takes only 1; ``true_cfg_scale > 1`` is true
    classifier-free guidance with a negative prompt (two forwards per call). ``kind`` or
    ``guidance_embeds`` None: not known yet, that part is not checked.
    """
    for name, value in (("guidance_scale", guidance_scale), ("true_cfg_scale", true_cfg_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name}={value!r} must be a finite number"
    if true_cfg_scale < 1:
        return (f"true_cfg_scale={true_cfg_scale:g} must be >= 1 (1: off; > 1: true classifier-free guidance "
                "with a negative prompt, FluxPipeline's true_cfg_scale)")
    if kind == "unet" and true_cfg_scale != 1:
        return (f"true_cfg_scale={true_cfg_scale:g} applies to FLUX models (FluxPipeline's true CFG); on a UNet "
                f"model (SD, SDXL) guidance_scale is classifier-free guidance: use guidance_scale={true_cfg_scale:g}")
    if kind == "flux" and guidance_embeds is False and guidance_scale != 1:
        return (f"guidance_scale={guidance_scale:g} has nothing to feed: this FLUX transformer has no guidance "
                "embedding (guidance_embeds=false, as FLUX.1-schnell); use guidance_scale=1, or "
                f"true_cfg_scale={guidance_scale:g} for true classifier-free guidance (two forwards per call)")
    return None
