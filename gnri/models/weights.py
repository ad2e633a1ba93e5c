"""Which weight files a model folder may be loaded from: safetensors, never pickle by default.

A pickle checkpoint (``.bin``, ``.ckpt``, ``.pt``, ``.pth``, ``.pkl``) can run arbitrary code
when it is unpickled. :func:`safe_load_kwargs` inspects a local folder before anything is
loaded and refuses one in which some component has only pickle weights, with one line naming
the file and the override (``model.allow_pickle=true``). A hub id cannot be inspected offline:
it is loaded with ``use_safetensors=True`` (diffusers and transformers then refuse a repository
without safetensors) unless pickle is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
SAFE_SUFFIX = ".safetensors"
OVERRIDE = "model.allow_pickle=true"


class PickleWeightsError(ValueError):
    """A model whose weights exist only as pickle files, refused before loading (one line)."""


def pickle_only_files(folder: Path) -> list[Path]:
    """Pickle weight files in ``folder`` or its component folders (one level down, the diffusers
    layout) whose own directory holds no ``.safetensors`` file, sorted."""
    out = []
    for directory in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        files = sorted(p for p in directory.iterdir() if p.is_file())
        if not any(f.name.endswith(SAFE_SUFFIX) for f in files):
            out.extend(f for f in files if f.suffix.lower() in PICKLE_SUFFIXES)
    return out


def safe_load_kwargs(pretrained: str | Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Extra ``from_pretrained`` keywords for ``pretrained`` (a local folder or a hub id).

    Without ``allow_pickle``: a local file with a pickle suffix, or a folder in which some
    directory holds pickle weights and no safetensors, raises :class:`PickleWeightsError`
    naming the first such file; anything else gets ``use_safetensors=True``. With it: ``{}``
    (diffusers' default: safetensors where present, else pickle, read with ``weights_only``).
    """
    if allow_pickle:
        return {}
    path = Path(str(pretrained)).expanduser()
    bad: list[Path] = []
    if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
        bad = [path]
    elif path.is_dir():
        bad = pickle_only_files(path)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PickleWeightsError(
            f"model.pretrained: {bad[0]}{more} is a pickle checkpoint with no .safetensors beside it, "
            f"refused because loading pickle can run code; convert it to safetensors or set {OVERRIDE}"
        )
    return {"use_safetensors": True}
