"""The one table of model-family facts: what every part of the benchmark knows about sd, sdxl and flux.

Two words, two meanings:

- the **loader family** (``sd`` | ``sdxl`` | ``flux``): which adapter class loads a checkpoint and
  how. It is the ``model.family`` config key, the first argument of :func:`gnri.models.load_adapter`,
  :func:`gnri.models.folder_family`'s answer and ``adapter.loader_family``; a row of :data:`TABLE`.
- the **maths family** (``vp`` | ``flow``): which noise levels a model's network is trained on, so
  which schedule kinds and inverters apply. It is ``adapter.family``, the ``families=`` of
  :func:`gnri.catalog.inverter_info`, and :attr:`FamilyFacts.maths` of a loader family.

Everything that used to keep its own copy of these facts reads :data:`TABLE`:
:mod:`gnri.models` (adapter classes, pipeline classes, GPU dtypes), :mod:`gnri.api` (the pipeline
class of a pipeline object, the library's default schedule), :mod:`eval.validate` (maths family of
a model config, the guidance rules' network kind) and :mod:`gnri.models.tiny` (tiny-model builders).
Adding a family is one row here plus its adapter module. Nothing here imports diffusers or torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

Maths = Literal["vp", "flow"]
NetworkKind = Literal["unet", "flux"]


@dataclass(frozen=True)
class FamilyFacts:
    """One loader family's facts (the module docstring says which word means what)."""

    name: str  # loader family: the model.family config key
    adapter: str  # "module:Class" of its adapter, imported lazily (:meth:`adapter_class`)
    pipelines: tuple[str, ...]  # diffusers pipeline class names (model_index.json's _class_name) it runs
    class_prefix: str  # the class-name prefix of a pipeline object it runs (gnri.invert(pipe, ...))
    maths: Maths  # maths family: vp (SD, SDXL) or flow (Flux)
    network: NetworkKind  # the denoising network's kind (the guidance rules: gnri.models.base.guidance_error)
    gpu_dtype: str  # the half precision its published weights run in on a GPU
    schedule: str  # conf/schedule name the library (gnri.invert) uses when none is given
    run_schedule: str | None  # conf/schedule name run.py adds when no schedule= is given (None: the config's)
    tiny: str  # name of its tiny-pipeline builder in gnri.models.tiny
    takes_vae: bool  # whether model.vae (a replacement VAE) applies

    def adapter_class(self) -> Any:
        module, _, cls = self.adapter.partition(":")
        return getattr(importlib.import_module(module), cls)

    def tiny_builder(self) -> Any:
        return getattr(importlib.import_module("gnri.models.tiny"), self.tiny)


TABLE: dict[str, FamilyFacts] = {f.name: f for f in (
    FamilyFacts("sd", "gnri.models.sd:SDAdapter", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
                "StableDiffusion", "vp", "unet", "float16", "ddim50", None, "tiny_sd_pipeline", True),
    FamilyFacts("sdxl", "gnri.models.sdxl:SDXLAdapter",
                ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"), "StableDiffusionXL", "vp", "unet",
                "float16", "euler4_trailing", None, "tiny_sdxl_pipeline", True),
    FamilyFacts("flux", "gnri.models.flux:FluxAdapter", ("FluxPipeline", "FluxImg2ImgPipeline"), "Flux", "flow",
                "flux", "bfloat16", "flow4", "flow4", "tiny_flux_pipeline", False),
)}
FAMILIES: tuple[str, ...] = tuple(TABLE)


def facts(loader_family: str) -> FamilyFacts:
    """The row of ``loader_family`` (sd | sdxl | flux); ValueError naming the valid ones."""
    if loader_family not in TABLE:
        raise ValueError(f"model.family must be one of {FAMILIES}, got {loader_family!r}")
    return TABLE[loader_family]


def maths_family(loader_family: str) -> Maths:
    """``vp`` or ``flow`` of a loader family."""
    return facts(loader_family).maths


def default_schedule_name(loader_family: str) -> str | None:
    """The conf/schedule name ``run.py`` runs a model of ``loader_family`` on when no ``schedule=``
    (and no ``experiment=``) is given: ``flow4`` for flux; None for sd and sdxl (conf/config.yaml's
    own default, ``ddim10``)."""
    return facts(loader_family).run_schedule


def library_schedule_name(loader_family: str) -> str:
    """The conf/schedule name :func:`gnri.invert` uses when no ``schedule`` is given: ``ddim50``
    (sd), ``euler4_trailing`` (sdxl, the SDXL-Turbo setting), ``flow4`` (flux)."""
    return facts(loader_family).schedule


def pipeline_family(class_name: str) -> str | None:
    """The loader family running diffusers pipeline class ``class_name`` (exact name), else None."""
    for f in TABLE.values():
        if class_name in f.pipelines:
            return f.name
    return None


def prefix_family(class_name: str) -> str | None:
    """The loader family whose pipeline-class prefix ``class_name`` starts with (the longest
    prefix wins: StableDiffusionXL* is sdxl, StableDiffusion* sd), else None."""
    for f in sorted(TABLE.values(), key=lambda f: -len(f.class_prefix)):
        if class_name.startswith(f.class_prefix):
            return f.name
    return None


# Derived views, kept under the names the rest of the code imported before the table existed.
PIPELINE_FAMILIES: dict[str, str] = {p: f.name for f in TABLE.values() for p in f.pipelines}
PIPELINE_PREFIXES: dict[str, str] = {f.class_prefix: f.name for f in sorted(TABLE.values(),
                                                                            key=lambda f: -len(f.class_prefix))}
GPU_DTYPES: dict[str, str] = {f.name: f.gpu_dtype for f in TABLE.values()}
MATHS_FAMILIES: dict[str, str] = {f.name: f.maths for f in TABLE.values()}
NETWORK_KINDS: dict[str, str] = {f.name: f.network for f in TABLE.values()}

__all__ = [
    "FAMILIES", "GPU_DTYPES", "MATHS_FAMILIES", "NETWORK_KINDS", "PIPELINE_FAMILIES", "PIPELINE_PREFIXES", "TABLE",
    "FamilyFacts", "default_schedule_name", "facts", "library_schedule_name", "maths_family", "pipeline_family",
    "prefix_family",
]
