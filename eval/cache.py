"""A content-keyed cache of the per-image work every inverter of a sweep repeats.

What the harness stores (safetensors, one file per entry, under ``<cache_dir>/<kind>/``):

- ``image``: the fitted source pixels, their encoded latent and the VAE round trip's PSNR
  ceiling, keyed by the checkpoint identity, device, dtype, image size and the image file's hash;
- ``prompt``: the prompt embeddings (:class:`~gnri.core.Conditioning`: every tensor of its
  positive and negative branches, its guidance scale and flag), keyed by the checkpoint,
  device, dtype, caption, negative prompt and guidance scale.

Keys are hashes of those fields (:func:`eval.settings.digest`), never of config names, so jobs of
one sweep, ranks of one data-parallel job and later sweeps pointed at the same ``cache_dir``
share entries. Writes go to a temporary file in the same folder and are renamed into place
(atomic on POSIX), so a reader sees a whole file or none; a file that cannot be read is a miss.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from eval.settings import digest
from gnri.core import Conditioning

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

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
            os.close(fd)
            data = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
            save_file(data, tmp, metadata={"meta": json.dumps(dict(meta or {}), default=str)})
            os.replace(tmp, path)
        except OSError as err:
            log.warning("cache: cannot write %s (%s)", path, err)
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
