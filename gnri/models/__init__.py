"""Model adapters (the only code importing diffusers), grids from scheduler tables, tiny models.

``load_adapter(family, pretrained, **options)`` is the one constructor the configs use:
``family`` is ``sd`` (SD 1.x/2.x), ``sdxl`` (SDXL, SDXL-Turbo) or ``flux``; ``pretrained`` a
hub name, a local diffusers folder or an existing pipeline object. Adapter classes are
imported lazily so that ``import gnri.models`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gnri.models.base import SCHEDULE_KINDS, ModelAdapter, ScheduleKind, ScheduleSpec

FAMILIES = ("sd", "sdxl", "flux")
_CLASSES = {"SDAdapter": "gnri.models.sd", "SDXLAdapter": "gnri.models.sdxl", "FluxAdapter": "gnri.models.flux"}
_FAMILY_CLASS = {"sd": "SDAdapter", "sdxl": "SDXLAdapter", "flux": "FluxAdapter"}


def adapter_class(family: str) -> Any:
    """The adapter class of ``family`` (sd | sdxl | flux)."""
    if family not in _FAMILY_CLASS:
        raise ValueError(f"model.family must be one of {FAMILIES}, got {family!r}")
    return __getattr__(_FAMILY_CLASS[family])


def load_adapter(family: str, pretrained: Any, allow_pickle: bool = False, **options: Any) -> ModelAdapter:
    """Adapter for ``family`` from a hub name / local folder (``from_pretrained``) or a pipeline
    object (``from_pipeline``). ``options``: ``device``, ``dtype``, ``name``, ``image_size``,
    ``guidance_distilled`` and the family's own (``prediction_type``, ``variant``; Flux
    ``guidance``, ``max_sequence_length``). Weights load from safetensors only: a folder with
    only pickle weights is refused before loading, a hub id gets ``use_safetensors=True``,
    unless ``allow_pickle`` (``model.allow_pickle=true``; see :mod:`gnri.models.weights`)."""
    cls = adapter_class(family)
    if pretrained is None:
        raise ValueError(f"model.pretrained must be a hub name, a local folder or a {family} pipeline, got None")
    if isinstance(pretrained, (str, Path)):
        return cls.from_pretrained(pretrained, allow_pickle=allow_pickle, **options)
    return cls.from_pipeline(pretrained, **options)


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        import importlib

        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'gnri.models' has no attribute {name!r}")


__all__ = [
    "FAMILIES", "SCHEDULE_KINDS", "FluxAdapter", "ModelAdapter", "SDAdapter", "SDXLAdapter", "ScheduleKind",
    "ScheduleSpec", "adapter_class", "load_adapter",
]
