"""A content-keyed cache of the per-image work every inverter of a sweep repeats.

What the harness stores (safetensors, one file per entry, under ``<cache_dir>/<kind>/``):

- ``image``: the fitted source pixels, their encoded latent and the VAE round trip's PSNR
  ceiling, keyed by the checkpoint identity, device, dtype, image size and the image file's hash;
- ``prompt``: the prompt embeddings (:class:`~gnri.core.Conditioning`: every tensor of its
  positive and negative branches, its guidance scale and flag), keyed by the checkpoint,
  device, dtype, caption, negative prompt and guidance scale;
- ``inversion`` (the edit task): one source's inversion by one inverter (:func:`result_to_tensors`)
  with its measured seconds and NFE, keyed by the image's key, the inverter and its resolved
  hyperparameters, the schedule, guidance and seed, so every editor of a sweep edits the same
  inversion and the source is inverted once per inverter.

Keys are hashes of those fields (:func:`eval.settings.digest`), never of config names, so jobs of
one sweep, ranks of one data-parallel job and later sweeps pointed at the same ``cache_dir``
share entries. Writes go to a temporary file in the same folder and are renamed into place
(atomic on POSIX), so a reader sees a whole file or none; a file that cannot be read is a miss.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from eval.settings import digest
from gnri.core import Conditioning, InversionResult, StepInfo

log = logging.getLogger(__name__)
Tensor = torch.Tensor


@dataclass
class TensorCache:
    """Get/put dicts of tensors (and a small JSON ``meta``) by content key; ``root=None`` disables it."""

    root: Path | None
    hits: int = 0
    misses: int = 0
    _memory: dict[str, tuple[dict[str, Tensor], dict[str, Any]]] = field(default_factory=dict, repr=False)

    def path(self, kind: str, key_fields: Mapping[str, Any]) -> Path | None:
        if self.root is None:
            return None
        key = digest({"kind": kind, **key_fields})
        return Path(self.root) / kind / key[:2] / f"{key}.safetensors"

    def get(self, kind: str, key_fields: Mapping[str, Any], device: torch.device | str = "cpu"
            ) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """The stored tensors (moved to ``device``) and meta, or None on a miss."""
        path = self.path(kind, key_fields)
        if path is None:
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                tensors = {name: handle.get_tensor(name).to(device) for name in handle.keys()}
                meta = json.loads((handle.metadata() or {}).get("meta", "{}"))
        except Exception as err:  # noqa: BLE001 - any unreadable entry (SafetensorError, torn JSON) is a miss
            if path.exists():
                log.warning("cache: %s is unreadable (%s); recomputing", path, err)
            self.misses += 1
            return None
        self.hits += 1
        return tensors, meta

    def put(self, kind: str, key_fields: Mapping[str, Any], tensors: Mapping[str, Tensor],
            meta: Mapping[str, Any] | None = None) -> None:
        """Store ``tensors`` atomically (never raises: a cache that cannot write is only slower)."""
        path = self.path(kind, key_fields)
        if path is None:
            return
        from safetensors.torch import save_file

        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
            os.close(fd)
            # clones: two names may share one storage (an inversion's z is its trajectory's last), which safetensors refuses
            data = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
            save_file(data, tmp, metadata={"meta": json.dumps(dict(meta or {}), default=str)})
            os.replace(tmp, path)
        except (OSError, RuntimeError, ValueError, TypeError) as err:
            log.warning("cache: cannot write %s (%s)", path, err)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def conditioning_to_tensors(cond: Conditioning) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A Conditioning as flat tensors (``positive.<name>``, ``negative.<name>``) and meta."""
    tensors = {f"positive.{k}": v for k, v in cond.positive.items()}
    if cond.negative is not None:
        tensors.update({f"negative.{k}": v for k, v in cond.negative.items()})
    meta = {"guidance_scale": cond.guidance_scale, "guidance_distilled": cond.guidance_distilled,
            "has_negative": cond.negative is not None}
    return tensors, meta


def conditioning_from_tensors(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Conditioning:
    """Inverse of :func:`conditioning_to_tensors`."""
    positive = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("positive.")}
    negative = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("negative.")}
    return Conditioning(positive, negative if meta.get("has_negative") else None,
                        float(meta.get("guidance_scale", 1.0)), bool(meta.get("guidance_distilled", False)))


def result_to_tensors(result: InversionResult) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """An inversion's state as flat tensors and meta (latent, trajectory, iterations, per-step
    conditioning, a sampler that is a ``functools.partial`` of a module function with tensor or
    plain keywords, tensor extras), or None when some part cannot be stored (then it is not cached)."""
    tensors: dict[str, Tensor] = {"z": result.z, **{f"trajectory.{i}": t for i, t in enumerate(result.trajectory)}}
    meta: dict[str, Any] = {"iterations": [s.iters for s in result.steps], "steps": len(result.trajectory)}
    if any(not isinstance(v, Tensor) for v in result.extras.values()):
        return None
    tensors.update({f"extras.{k}": v for k, v in result.extras.items()})
    if result.cond_per_step is not None:
        meta["cond_per_step"] = []
        for i, cond in enumerate(result.cond_per_step):
            parts, cond_meta = conditioning_to_tensors(cond)
            tensors.update({f"cond_per_step.{i}.{k}": v for k, v in parts.items()})
            meta["cond_per_step"].append(cond_meta)
    if result.sampler is not None:
        sampler = result.sampler
        func = getattr(sampler, "func", None)
        if not isinstance(sampler, functools.partial) or sampler.args or "<" in getattr(func, "__qualname__", "<"):
            return None
        plain = {k: v for k, v in sampler.keywords.items() if not isinstance(v, Tensor)}
        try:
            json.dumps(plain)
        except TypeError:
            return None
        tensors.update({f"sampler.{k}": v for k, v in sampler.keywords.items() if isinstance(v, Tensor)})
        meta["sampler"] = {"module": func.__module__, "name": func.__qualname__, "keywords": plain}
    return tensors, meta


def result_from_tensors(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> InversionResult:
    """Inverse of :func:`result_to_tensors` (per-step diagnostics other than iterations are not kept)."""
    import importlib

    def part(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    per_step = None
    if "cond_per_step" in meta:
        per_step = tuple(conditioning_from_tensors(part(f"cond_per_step.{i}."), m)
                         for i, m in enumerate(meta["cond_per_step"]))
    sampler = None
    if "sampler" in meta:
        spec = meta["sampler"]
        func = importlib.import_module(spec["module"])
        for attr in spec["name"].split("."):
            func = getattr(func, attr)
        sampler = functools.partial(func, **spec["keywords"], **part("sampler."))
    return InversionResult(
        z=tensors["z"], trajectory=tuple(tensors[f"trajectory.{i}"] for i in range(int(meta["steps"]))),
        steps=tuple(StepInfo(iters=int(n)) for n in meta["iterations"]), cond_per_step=per_step, sampler=sampler,
        extras=part("extras."),
    )
