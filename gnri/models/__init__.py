"""Model adapters (the only code importing diffusers), grids from scheduler tables, tiny models.

``load_adapter(family, pretrained, **options)`` is the one constructor the configs use:
``family`` is ``sd`` (SD 1.x/2.x), ``sdxl`` (SDXL, SDXL-Turbo) or ``flux``; ``pretrained`` a
hub name, a local diffusers folder or an existing pipeline object. Adapter classes are
imported lazily so that ``import gnri.models`` stays cheap. What each family is (adapter class,
pipeline classes, maths family vp/flow, GPU dtype, default schedules, tiny builder) is one table,
:mod:`gnri.models.families`, which also says what *loader* family and *maths* family mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gnri.models.base import SCHEDULE_KINDS, ModelAdapter, ScheduleKind, ScheduleSpec
from gnri.models.families import FAMILIES, GPU_DTYPES, PIPELINE_FAMILIES, TABLE, facts, pipeline_family

_CLASSES = {f.adapter.partition(":")[2]: f.adapter.partition(":")[0] for f in TABLE.values()}


def adapter_class(family: str) -> Any:
    """The adapter class of loader family ``family`` (sd | sdxl | flux)."""
    return facts(family).adapter_class()


def folder_family(path: str | Path) -> str:
    """``sd``, ``sdxl`` or ``flux`` from a local diffusers folder's ``model_index.json``."""
    import json

    index = Path(path).expanduser() / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"model.path: {str(index)!r} not found (a diffusers pipeline folder has one)")
    try:
        name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, ValueError) as err:
        raise ValueError(f"model.path: cannot read {index}: {err}") from None
    family = pipeline_family(name)
    if family is None:
        raise ValueError(f"model.path: {index} names pipeline {name!r}; supported: {', '.join(PIPELINE_FAMILIES)}")
    return family


def auto_dtype(family: str, device: str | Any) -> str:
    """``float32`` on a CPU (half precision there is slow and lossy), else the family's half precision."""
    return "float32" if str(device).split(":")[0] in ("cpu", "mps") else GPU_DTYPES.get(family, "float32")


def load_local(path: str | Path, name: str | None = None, device: str = "cpu", dtype: str = "auto",
               **options: Any) -> ModelAdapter:
    """Any local diffusers folder: the family and pipeline class come from its ``model_index.json``,
    the dtype from the device (``auto``), the image size from the checkpoint's own config."""
    family = folder_family(path)
    resolved = auto_dtype(family, device) if dtype == "auto" else dtype
    return load_adapter(family, str(Path(path).expanduser()), name=name or Path(path).expanduser().resolve().name,
                        device=device, dtype=resolved, **options)


def load_pipeline(pretrained: str | Path, allow_pickle: bool = False, **kwargs: Any) -> Any:
    """A diffusers text-to-image pipeline object (``AutoPipelineForText2Image``) by hub name or local
    folder, safetensors only unless ``allow_pickle`` (:func:`gnri.models.weights.safe_load_kwargs`);
    ``kwargs`` go to ``from_pretrained`` (e.g. ``torch_dtype``). For :func:`gnri.invert` without
    importing diffusers yourself."""
    from diffusers import AutoPipelineForText2Image

    from gnri.models.weights import safe_load_kwargs

    kwargs = {**safe_load_kwargs(pretrained, allow_pickle), **kwargs}
    return AutoPipelineForText2Image.from_pretrained(str(pretrained), **kwargs)


def load_adapter(family: str, pretrained: Any, allow_pickle: bool = False, **options: Any) -> ModelAdapter:
    """Adapter for ``family`` from a hub name / local folder (``from_pretrained``) or a pipeline
    object (``from_pipeline``). ``options``: ``device``, ``dtype``, ``name``, ``image_size``,
    ``guidance_distilled`` and the family's own (``prediction_type``, ``variant``, ``vae`` (SD,
    SDXL: a replacement VAE, e.g. the fp16-fix one); Flux ``guidance``, ``max_sequence_length``),
    and the runtime options of :mod:`gnri.models.runtime` (``compile``, ``compile_mode``,
    ``compile_backend``, ``channels_last``, ``offload``, ``vae_slicing``, ``vae_tiling``), applied
    after the adapter is built. Weights load from safetensors only: a folder with
    only pickle weights is refused before loading, a hub id gets ``use_safetensors=True``,
    unless ``allow_pickle`` (``model.allow_pickle=true``; see :mod:`gnri.models.weights`)."""
    from gnri.models.runtime import apply_runtime, runtime_options

    cls = adapter_class(family)
    if options.get("dtype") == "auto":
        options["dtype"] = auto_dtype(family, options.get("device", "cpu"))
    if pretrained is None:
        raise ValueError(f"model.pretrained must be a hub name, a local folder or a {family} pipeline, got None")
    runtime = runtime_options(options)
    if not facts(family).takes_vae and options.pop("vae", None) is not None:
        takers = " and ".join(f.name for f in TABLE.values() if f.takes_vae)
        raise ValueError(f"model.vae applies to {takers} (e.g. madebyollin/sdxl-vae-fp16-fix), not {family}")
    if options.get("vae") is not None and not isinstance(pretrained, (str, Path)):
        options["allow_pickle"] = allow_pickle  # the replacement VAE's folder is checked like the pipeline's
    device = options.get("device", "cpu")
    if runtime.offload != "none":
        options["device"] = "cpu"  # offload: the pipeline stays in CPU memory, never moved whole to the device
    if isinstance(pretrained, (str, Path)):
        adapter = cls.from_pretrained(pretrained, allow_pickle=allow_pickle, **options)
    else:
        adapter = cls.from_pipeline(pretrained, **options)
    return apply_runtime(adapter, runtime, device)


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        import importlib

        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'gnri.models' has no attribute {name!r}")


__all__ = [
    "FAMILIES", "GPU_DTYPES", "PIPELINE_FAMILIES", "TABLE", "SCHEDULE_KINDS", "FluxAdapter", "ModelAdapter", "SDAdapter", "SDXLAdapter", "ScheduleKind",
    "ScheduleSpec", "adapter_class", "auto_dtype", "folder_family", "load_adapter", "load_local", "load_pipeline",
]
