"""The embedded world's held-out scenes as a reconstruction dataset (``dataset=world``).

Scenes come from ``datasets/world/manifests/heldout.jsonl`` and are re-rendered by the seeded
generator (:mod:`eval.world`); each render must match its manifest digest, and is cached as a
PNG (``$GNRI_BENCH_CACHE/world`` or ``~/.cache/gnri-bench/world``) so the harness reads files
like any other dataset. A render that does not match its digest is recorded as a problem.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from eval.data import Entry

WORLD_MODELS = ("sd", "flux")
WORLD_VARIANTS = ("world", "world_longtail")  # folders under datasets/: the world's models, the long-tailed world's


def world_dir() -> Path:
    """``<repo>/datasets/world``: the embedded world's manifests and models."""
    return Path(__file__).resolve().parents[1] / "datasets" / "world"


def default_world_cache() -> Path:
    """Where rendered world images are cached: ``<GNRI_BENCH_CACHE or ~/.cache/gnri-bench>/world``."""
    from eval.metrics.lpips_metric import default_cache_dir

    return default_cache_dir() / "world"


def save_png(image: object, path: Path) -> None:
    """Write a uint8 (H, W, 3) array as PNG once (atomic rename; an existing file is kept)."""
    from PIL import Image

    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.png")  # own name per writer:
    Image.fromarray(image).save(tmp)  # type: ignore[arg-type]  # jobs of a sweep render the same scene at once
    tmp.replace(path)  # atomic; a concurrent writer's identical file is simply replaced


def world_dataset(
    manifest: str | Path | None = None, cache_dir: str | Path | None = None, max_images: int | None = None
) -> list[Entry]:
    """Held-out world scenes with their captions, in manifest order (``max_images`` first)."""
    from eval.world.generator import digest, render, scene_from_record

    path = Path(manifest) if manifest is not None else world_dir() / "manifests" / "heldout.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"dataset.manifest: {str(path)!r} not found")
    cache = Path(cache_dir) if cache_dir is not None else default_world_cache()
    entries = []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for line in lines[:max_images]:
        record = json.loads(line)
        image_id = f"heldout_{int(record['index']):04d}"
        image, _ = render(scene_from_record(record))
        sha = digest(image)
        if sha != record["sha256"]:
            entries.append(Entry(image_id, None, record["caption"], f"render of {image_id} does not match its digest"))
            continue
        file = cache / f"{sha}.png"
        save_png(image, file)
        entries.append(Entry(image_id, file, record["caption"]))
    return entries


def world_model_folder(model: str = "sd", folder: str | Path | None = None, variant: str = "world") -> Path:
    """``folder`` if given, else ``datasets/<variant>/<model>`` (one-line errors for bad values)."""
    if model not in WORLD_MODELS:
        raise ValueError(f"model.model must be one of {WORLD_MODELS}, got {model!r}")
    if variant not in WORLD_VARIANTS:
        raise ValueError(f"model.variant must be one of {WORLD_VARIANTS}, got {variant!r}")
    return Path(folder) if folder is not None else world_dir().parent / variant / model


def world_adapter(model: str = "sd", folder: str | Path | None = None, variant: str = "world",
                  **options: object) -> object:
    """An adapter for one of the embedded world's trained pipelines (``sd`` or ``flux``).

    ``folder`` defaults to ``datasets/<variant>/<model>`` (``variant`` ``world``, or
    ``world_longtail``: the models trained on the long-tailed world, :mod:`eval.world.longtail`);
    ``options`` go to :func:`gnri.models.load_adapter` (device, dtype, name, ...).
    """
    from gnri.models import load_adapter

    path = world_model_folder(model, folder, variant)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"model.folder: {str(path)!r} holds no diffusers pipeline (train it: python -m scripts.world.train_all)"
        )
    return load_adapter(model, str(path), **options)


def world_weights(model: str = "sd", folder: str | Path | None = None, variant: str = "world", **_: object) -> Path:
    """The folder :func:`world_adapter` loads for these arguments (for the checkpoint's identity)."""
    return world_model_folder(model, folder, variant)


world_adapter.weights_location = world_weights  # type: ignore[attr-defined]  # read by eval.identity
