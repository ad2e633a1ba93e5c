"""What a model config loads, named without loading it: the checkpoint's identity and row label.

A sweep's resume keys and its rows must name the weights, not the config that pointed at them
(two folders run as ``model=sd15`` are two checkpoints). :func:`checkpoint_identity` reads a
model config (a plain dict, Hydra's ``_target_`` included) and returns:

- a hub id (a string that is not an existing path in ``pretrained``/``folder``/``path``): the id
  and ``revision`` (``main`` when the config names none); label ``<id>@<revision>``;
- a local folder or file: a fingerprint (not its path, so a moved copy keeps its key) of its small config files (``*.json``, ``*.txt``,
  ``*.yaml``: read whole) and of every weight file's name and size; label ``<folder>@<8 hex>``;
- neither (a config whose ``folder`` is null and whose factory knows its default folder through a
  ``weights_location(**config)`` attribute, as the embedded world's): that folder, as above;
- a model built in code (the tiny random-weight models): the config itself; label the ``name``
  or the factory's name with ``(code)``.

:func:`model_label` is the rows' ``model`` column: the config's ``name`` when set
(``model.name=``), else a local ``path``'s folder name (``model=local``: each folder its own label),
else the config group's choice.

Hashing reads no weight bytes, so a 20 GB checkpoint is fingerprinted in milliseconds.

Model options that are not the checkpoint but change what it computes (a replacement ``vae``, a
weight ``variant``) or its clock (the runtime fast paths: ``compile``, ``channels_last``,
``offload``, VAE slicing and tiling) join a hub or local identity, and its label as ``+key=value``,
whenever they differ from their defaults (:data:`OPTION_DEFAULTS`): a run with the fp16-fix VAE or
with ``compile=true`` never shares cached latents, resume keys or a table row with one without.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

PATH_KEYS = ("pretrained", "folder", "path")
CONFIG_SUFFIXES = (".json", ".txt", ".yaml", ".yml", ".model")
# Config keys that do not change which weights are loaded (device and dtype enter keys separately).
NOT_IDENTITY = ("device", "dtype", "name", "attention")
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# Model-config options beside the checkpoint, with the default that leaves a run as the checkpoint alone.
OPTION_DEFAULTS: dict[str, Any] = {
    "vae": None, "variant": None, "compile": False, "compile_mode": "default", "compile_backend": "inductor",
    "channels_last": False, "offload": "none", "vae_slicing": False, "vae_tiling": False,
}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's identity (JSON-able, enters resume keys) and its short label for rows."""

    label: str
    identity: dict[str, Any] = field(default_factory=dict)


def folder_fingerprint(path: str | Path) -> str:
    """sha1 over a folder's (or file's) small config files' bytes and every file's name and size."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha1()
    for file in files:
        rel = file.name if file == root else file.relative_to(root).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        size = file.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        if file.suffix.lower() in CONFIG_SUFFIXES and size <= MAX_CONFIG_BYTES:
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _local(path: Path) -> Checkpoint:
    fingerprint = folder_fingerprint(path)
    return Checkpoint(f"{path.resolve().name}@{fingerprint[:8]}", {"fingerprint": fingerprint})


def _factory(target: str | None) -> Any:
    if not target:
        return None
    from gnri.catalog import resolve

    try:
        return resolve(target)
    except (ImportError, AttributeError, ValueError):
        return None


def checkpoint_identity(model_cfg: Mapping[str, Any]) -> Checkpoint:
    """The identity and label of what ``model_cfg`` loads (see the module docstring)."""
    base = _checkpoint(model_cfg)
    if "code" in base.identity:  # the whole config is the identity already
        return base
    options = {k: model_cfg[k] for k, default in OPTION_DEFAULTS.items()
               if k in model_cfg and model_cfg[k] != default}
    if not options:
        return base
    label = base.label + "".join(f"+{k}={v}" for k, v in sorted(options.items()))
    return Checkpoint(label, {**base.identity, "options": options})


def _checkpoint(model_cfg: Mapping[str, Any]) -> Checkpoint:
    cfg = {k: v for k, v in model_cfg.items() if k not in NOT_IDENTITY}
    name = model_cfg.get("name")
    for key in PATH_KEYS:
        value = cfg.get(key)
        if isinstance(value, (str, Path)) and str(value):
            path = Path(value).expanduser()
            if path.exists():
                return _local(path)
            revision = cfg.get("revision") or "main"
            return Checkpoint(f"{value}@{revision}", {"hub": str(value), "revision": revision})
    factory = _factory(cfg.get("_target_"))
    locate = getattr(factory, "weights_location", None)
    if callable(locate):
        options = {k: v for k, v in cfg.items() if not k.startswith("_")}
        path = Path(locate(**options))
        if path.exists():
            return _local(path)
    target = str(cfg.get("_target_", "model")).rpartition(".")[2]
    return Checkpoint(f"{name or target} (code)", {"code": cfg})


def model_label(choice: str | None, model_cfg: Mapping[str, Any]) -> str | None:
    """The rows' ``model`` label: ``name`` when the config sets one, else the folder name of a local
    ``path`` (``model=local``), else ``choice`` (the ``model=`` config's name)."""
    name = model_cfg.get("name")
    if name not in (None, ""):
        return str(name)
    path = model_cfg.get("path")
    if isinstance(path, (str, Path)) and str(path) and str(path) != "???":
        return Path(path).expanduser().resolve().name or choice
    return choice
