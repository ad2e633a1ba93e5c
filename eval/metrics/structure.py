"""PIE-Bench's structure distance: DINO ViT-B/8 key self-similarity, as PnPInversion computes it.

Source: ``cure-lab/PnPInversion`` ``evaluation/matrics_calculator.py`` at f480116
(``MetricsCalculator.calculate_structure_distance`` -> ``LossG.calculate_global_ssim_loss``,
after Tumanyan et al. 2022, "Splicing ViT Features", arXiv 2201.00424). Per image pair:

1. both images as 8-bit values in [0, 255] (NOT divided by 255: PnPInversion feeds ``np.array``
   of the PIL image as float);
2. ``Resize(224, max_size=480)`` (shorter side to 224, bilinear; antialias off, torchvision's
   tensor default before 0.17) then ImageNet ``Normalize`` applied to those 0-255 values
   (a quirk of the original kept here, so the network sees values around +-1000);
3. the keys of the last block's attention (``dino_vitb8``, block 11: ``attn.qkv`` output, its
   middle third, all heads concatenated per token, CLS token included);
4. the token-by-token cosine self-similarity of the keys (norm product clamped at 1e-8);
5. the mean squared difference of the two self-similarity matrices (PIE-Bench tables: x 10^3).

The whole image is used (PIE-Bench's ``structure_distance`` metric, not an ``_unedit_part``).

Weights are read from LOCAL files only, never downloaded, and never random: without them the
metric is unavailable with the reason. Where they come from, first hit wins:
``weights`` (a DINO state-dict file ``.pth``/``.pt``/``.bin``/``.safetensors``, a Hugging Face
folder, or a hub id looked up in the local hub cache), else torch-hub's cached
``dino_vitbase8_pretrain.pth`` (``$TORCH_HOME/hub/checkpoints``, where
``torch.hub.load('facebookresearch/dino:main', 'dino_vitb8')`` leaves it), else the hub cache's
``facebook/dino-vitb8``. Hugging Face ``ViTModel`` names are mapped to DINO's (q, k, v
concatenated into ``qkv``). The network is DINO's ``VisionTransformer`` forward written out
(pre-norm blocks, LayerNorm eps 1e-6, exact GELU, DINO's bicubic position-embedding
interpolation with its +0.1 offset when the patch grid differs from the trained one).

Without DINO weights, :class:`StructureDistanceStandin` computes the same distance (steps 4-5 on
the keys of the last layer's attention, CLS token included) on a stand-in ViT that ships with the
world, the world CLIP's vision tower (``datasets/world/clip``). Its row is named
``structure_distance_standin`` so that no table mixes its numbers with DINO's: the stand-in ranks
methods against each other, it does not reproduce PIE-Bench's values. With DINO weights present
the stand-in is unavailable and ``structure_distance`` is the real one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F

from eval.metrics.base import Tensor
from eval.metrics.masked import to_8bit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 224  # LossG cfg "dino_global_patch_size"
MAX_SIZE = 480  # Resize(..., max_size=480)
COS_EPS = 1e-8  # VitExtractor.attn_cosine_sim
LN_EPS = 1e-6  # DINO's LayerNorm
HEAD_DIM = 64  # DINO ViT-S and ViT-B: 6 x 64 and 12 x 64
PIXEL_MAX = 255.0
TORCH_HUB_FILE = "dino_vitbase8_pretrain.pth"
HUB_ID = "facebook/dino-vitb8"
HF_FILES = ("model.safetensors", "pytorch_model.bin")


class DinoUnavailable(RuntimeError):
    """No local DINO weights could be loaded; the message is the reason."""


def resize_size(h: int, w: int, size: int = RESIZE, max_size: int = MAX_SIZE) -> tuple[int, int]:
    """torchvision ``Resize(size, max_size)``'s output (H, W): shorter side ``size``, longer side
    scaled and truncated, both shrunk if the longer would exceed ``max_size``."""
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)
    if new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if h <= w else (new_long, new_short)


def dino_input(images: Tensor, antialias: bool = False) -> Tensor:
    """[0, 1] images (B, 3, H, W) -> PnPInversion's DINO input: x 255, resized, ImageNet-normalised."""
    x = images.float() * PIXEL_MAX
    x = F.interpolate(x, size=resize_size(*x.shape[-2:]), mode="bilinear", align_corners=False, antialias=antialias)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def cosine_self_similarity(x: Tensor, eps: float = COS_EPS) -> Tensor:
    """(B, T, D) -> (B, T, T): ``x_i . x_j / max(|x_i| |x_j|, eps)`` (``attn_cosine_sim``)."""
    norm = x.norm(dim=-1, keepdim=True)
    return (x @ x.transpose(-1, -2)) / torch.clamp(norm @ norm.transpose(-1, -2), min=eps)


# DINO name <- Hugging Face ViT names: transformers 4 files (the hub's) | transformers 5 modules.
_HF_BLOCK = {
    "norm1": ("layernorm_before", "layernorm_before"),
    "attn.proj": ("attention.output.dense", "attention.o_proj"),
    "norm2": ("layernorm_after", "layernorm_after"),
    "mlp.fc1": ("intermediate.dense", "mlp.fc1"),
    "mlp.fc2": ("output.dense", "mlp.fc2"),
}
_HF_QKV = (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
           ("attention.q_proj", "attention.k_proj", "attention.v_proj"))


def hf_to_dino(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A Hugging Face ``ViTModel`` state dict (``encoder.layer.i.*`` of transformers 4 files or
    ``layers.i.*`` of transformers 5) renamed to DINO's (``qkv`` = cat(query, key, value))."""
    s = {k.removeprefix("vit."): v for k, v in state.items()}
    out = {"cls_token": s["embeddings.cls_token"], "pos_embed": s["embeddings.position_embeddings"],
           "patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"]}
    style = 0 if any(k.startswith("encoder.layer.") for k in s) else 1
    prefix = ("encoder.layer.", "layers.")[style]
    depth = 1 + max((int(k[len(prefix):].split(".")[0]) for k in s if k.startswith(prefix)), default=-1)
    for i in range(depth):
        hf, dn = f"{prefix}{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            out[f"{dn}attn.qkv.{p}"] = torch.cat([s[f"{hf}{n}.{p}"] for n in _HF_QKV[style]])
            for dino_name, names in _HF_BLOCK.items():
                out[f"{dn}{dino_name}.{p}"] = s[f"{hf}{names[style]}.{p}"]
    return out


def _read_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DinoUnavailable(f"structure_distance: {path} holds no state dict")
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    if any(k.startswith(("embeddings.", "vit.embeddings.")) for k in state):
        try:
            return hf_to_dino(state)
        except KeyError as err:
            raise DinoUnavailable(f"structure_distance: {path} is not a ViT state dict (no {err.args[0]})") from None
    return state


def _hub_snapshot_file(hub_id: str) -> Path | None:
    hf_home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    root = Path(os.environ.get("HF_HUB_CACHE") or Path(hf_home) / "hub")
    folder = root / ("models--" + hub_id.replace("/", "--")) / "snapshots"
    for snap in sorted(folder.glob("*")) if folder.is_dir() else []:
        for name in HF_FILES:
            if (snap / name).is_file():
                return snap / name
    return None


def _config_heads(path: Path) -> int | None:
    """``num_attention_heads`` of a Hugging Face ``config.json`` beside the weights, if any."""
    import json

    cfg = path.parent / "config.json"
    try:
        heads = json.loads(cfg.read_text(encoding="utf-8")).get("num_attention_heads") if cfg.is_file() else None
    except (OSError, ValueError):
        return None
    return int(heads) if isinstance(heads, int) and heads > 0 else None


def find_dino_weights(weights: str | None) -> Path:
    """The local DINO ViT-B/8 weight file (see the module docstring), else :class:`DinoUnavailable`."""
    if weights:
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            for name in HF_FILES:
                if (path / name).is_file():
                    return path / name
            raise DinoUnavailable(f"structure_distance: weights={weights} holds none of {', '.join(HF_FILES)}")
        found = _hub_snapshot_file(weights) if weights.count("/") == 1 and not path.is_absolute() else None
        if found is None:
            raise DinoUnavailable(f"structure_distance: weights={weights} is neither a file, a folder nor a "
                                  "hub id in the local hub cache (no download is attempted)")
        return found
    hub = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch") / "hub" / "checkpoints" / TORCH_HUB_FILE
    if hub.is_file():
        return hub
    found = _hub_snapshot_file(HUB_ID)
    if found is not None:
        return found
    raise DinoUnavailable(
        f"structure_distance needs DINO ViT-B/8 weights (looked for {hub} and the hub cache's {HUB_ID}); "
        "set task.structure.weights=<dino_vitbase8_pretrain.pth or a ViTModel folder> (no download is attempted)"
    )


@dataclass
class DinoKeys:
    """DINO ViT keys of one block from a state dict (DINO names), no grad; the network of
    ``vision_transformer.VisionTransformer`` up to ``blocks[layer].attn.qkv``."""

    state: Mapping[str, Tensor]
    layer: int = -1  # -1: the last block (11 for ViT-B/8)
    num_heads: int | None = None  # None: embed dim / 64 (DINO's)

    def __post_init__(self) -> None:
        need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias")
        missing = [k for k in need if k not in self.state]
        if missing:
            raise DinoUnavailable(f"structure_distance: not a DINO ViT state dict (missing {', '.join(missing)})")
        self.depth = 1 + max(int(k.split(".")[1]) for k in self.state if k.startswith("blocks."))
        self.layer = self.layer % self.depth
        self.dim = int(self.state["pos_embed"].shape[-1])
        self.patch = int(self.state["patch_embed.proj.weight"].shape[-1])
        self.heads = self.num_heads or max(1, self.dim // HEAD_DIM)
        for i in range(self.layer + 1):
            for k in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                if f"blocks.{i}.{k}.weight" not in self.state:
                    raise DinoUnavailable(f"structure_distance: DINO state dict lacks blocks.{i}.{k}")

    def _w(self, name: str, like: Tensor) -> Tensor:
        return self.state[name].to(device=like.device, dtype=like.dtype)

    def _pos_embed(self, x: Tensor, h: int, w: int) -> Tensor:
        pos = self._w("pos_embed", x)
        n = pos.shape[1] - 1
        if x.shape[1] - 1 == n and h == w:
            return pos
        side = int(math.sqrt(n))
        h0, w0 = h // self.patch + 0.1, w // self.patch + 0.1  # DINO's offset against rounding down
        grid = pos[:, 1:].reshape(1, side, side, self.dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(h0 / side, w0 / side), mode="bicubic")
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, self.dim)], dim=1)

    def _ln(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, (self.dim,), self._w(f"{name}.weight", x), self._w(f"{name}.bias", x), LN_EPS)

    def _lin(self, x: Tensor, name: str) -> Tensor:
        return F.linear(x, self._w(f"{name}.weight", x), self._w(f"{name}.bias", x))

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """Normalised images (B, 3, H, W) -> keys (B, 1 + patches, dim), heads concatenated per token."""
        b, _, h, w = x.shape
        tokens = F.conv2d(x, self._w("patch_embed.proj.weight", x), self._w("patch_embed.proj.bias", x),
                          stride=self.patch).flatten(2).transpose(1, 2)
        tokens = torch.cat([self._w("cls_token", x).expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + self._pos_embed(tokens, h, w)
        for i in range(self.layer + 1):
            qkv = self._lin(self._ln(tokens, f"blocks.{i}.norm1"), f"blocks.{i}.attn.qkv")
            if i == self.layer:
                return qkv[..., self.dim: 2 * self.dim]
            n = tokens.shape[1]
            q, k, v = qkv.reshape(b, n, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
            attn = ((q @ k.transpose(-2, -1)) * (self.dim // self.heads) ** -0.5).softmax(dim=-1)
            tokens = tokens + self._lin((attn @ v).transpose(1, 2).reshape(b, n, self.dim), f"blocks.{i}.attn.proj")
            hidden = F.gelu(self._lin(self._ln(tokens, f"blocks.{i}.norm2"), f"blocks.{i}.mlp.fc1"))
            tokens = tokens + self._lin(hidden, f"blocks.{i}.mlp.fc2")
        raise AssertionError("unreachable")


def structure_distance_from_keys(keys_pred: Tensor, keys_target: Tensor) -> Tensor:
    """Per image: mean squared difference of the two keys' cosine self-similarity matrices, (B,)."""
    diff = cosine_self_similarity(keys_pred.double()) - cosine_self_similarity(keys_target.double())
    return diff.pow(2).flatten(1).mean(1)


@dataclass
class StructureDistance:
    """PIE-Bench structure distance of ``pred`` to ``target`` ([0, 1] images), lower is better;
    unavailable without local DINO weights (never computed with random ones)."""

    weights: str | None = None
    antialias: bool = False
    name: str = "structure_distance"
    higher_is_better: bool = False
    _keys: DinoKeys | None = field(default=None, init=False, repr=False)
    _reason: str | None = field(default=None, init=False, repr=False)
    source: str | None = field(default=None, init=False)

    def unavailable_reason(self) -> str | None:
        if self._keys is None and self._reason is None:
            try:
                path = find_dino_weights(self.weights)
                try:
                    state = _read_state(path)
                except DinoUnavailable:
                    raise
                except Exception as err:  # noqa: BLE001 - a present but unreadable file: report, never go random
                    raise DinoUnavailable(f"structure_distance: cannot read {path}: {type(err).__name__}: {err}") from err
                self._keys, self.source = DinoKeys(state, num_heads=_config_heads(path)), str(path)
            except DinoUnavailable as err:
                self._reason = str(err)
        return self._reason

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor, prompts: list[str] | None = None) -> Tensor:
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(f"structure_distance: pred and target must both be (B, 3, H, W), got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        reason = self.unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"structure_distance unavailable: {reason}")
        images = to_8bit(torch.cat([pred, target]))  # PnPInversion reads 8-bit files
        keys = self._keys(dino_input(images, self.antialias))  # type: ignore[misc]
        return structure_distance_from_keys(keys[: pred.shape[0]], keys[pred.shape[0]:])


# ---------------------------------------------------------------- the stand-in: a CLIP ViT's keys, without DINO

STANDIN_NAME = "structure_distance_standin"
STANDIN_MODES = ("auto", "off")  # or a CLIPModel folder path
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's processors' default (OpenAI's)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def world_clip_folder() -> Path:
    """The embedded world's CLIP (``datasets/world/clip``, a transformers ``CLIPModel`` folder)."""
    from eval.world_data import world_dir

    return world_dir() / "clip"


def clip_image_stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) a CLIP folder's processor normalises with: ``preprocessor_config.json`` or
    ``processor_config.json``'s ``image_processor`` (the world CLIP's: 0.5, 0.5), else OpenAI's."""
    import json

    for name in ("preprocessor_config.json", "processor_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cfg = cfg.get("image_processor", cfg) if isinstance(cfg, dict) else {}
        if "image_mean" in cfg and "image_std" in cfg:
            return tuple(map(float, cfg["image_mean"])), tuple(map(float, cfg["image_std"]))
    return CLIP_MEAN, CLIP_STD


def standin_input(images: Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """[0, 1] images (B, 3, H, W) -> the CLIP tower's input: shorter side to ``size`` (bicubic,
    antialiased, as CLIP's processors; the aspect kept and nothing cropped, the whole image as
    DINO's ``Resize``), then the processor's normalisation of [0, 1] values."""
    x = images.float()
    h, w = x.shape[-2:]
    new = (size, max(1, int(size * w / h))) if h <= w else (max(1, int(size * h / w)), size)
    if new != (h, w):
        x = F.interpolate(x, size=new, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


@dataclass
class ClipKeys:
    """The keys of the last encoder layer's self-attention of a transformers CLIP vision tower
    (``vision_model.encoder.layers[-1].self_attn.k_proj``'s output, read by a forward hook): (B, 1 +
    patches, hidden), all heads concatenated per token and the CLS token first, as DINO's keys."""

    vision: torch.nn.Module  # a CLIPVisionTransformer (CLIPModel.vision_model)

    @torch.no_grad()
    def __call__(self, pixels: Tensor) -> Tensor:
        size = int(self.vision.config.image_size)
        self.vision.to(pixels.device)
        caught: list[Tensor] = []
        hook = self.vision.encoder.layers[-1].self_attn.k_proj.register_forward_hook(
            lambda _m, _i, out: caught.append(out))
        try:
            self.vision(pixel_values=pixels, interpolate_pos_encoding=tuple(pixels.shape[-2:]) != (size, size))
        finally:
            hook.remove()
        return caught[-1]


def load_clip_vision(folder: Path) -> torch.nn.Module:
    """A local ``CLIPModel`` folder's vision tower (eval mode, no grad), else :class:`DinoUnavailable`."""
    if not (folder / "config.json").is_file():
        raise DinoUnavailable(f"{STANDIN_NAME}: {folder} is not a CLIPModel folder (no config.json)")
    from transformers import CLIPModel

    try:
        model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - a present but unreadable folder: report, never go random
        raise DinoUnavailable(f"{STANDIN_NAME}: cannot load {folder}: {type(err).__name__}: {err}") from err
    return model.vision_model.eval().requires_grad_(False)


@dataclass
class StructureDistanceStandin:
    """PIE-Bench's structure distance computed on a STAND-IN ViT when no DINO ViT-B/8 file is here:
    the same key self-similarity distance (:func:`structure_distance_from_keys`: cosine
    self-similarity of the last layer's attention keys, CLS token included, norm product clamped at
    1e-8, mean squared difference), the keys from a CLIP vision tower (:class:`ClipKeys`) instead of
    DINO's. Its row is ``structure_distance_standin``, never ``structure_distance``: the numbers are
    not DINO's (another network, 8x8 patches of a 64 px tower for the world's CLIP: 65 tokens, not
    785), so they compare methods with each other, never with published PIE-Bench tables.

    Inputs: both images cut to 8 bits (PnPInversion reads 8-bit files), then :func:`standin_input`
    (the CLIP processor's own normalisation of [0, 1] values; DINO's 0-255 ImageNet quirk is not
    copied, it belongs to DINO's pipeline and would put the CLIP tower far outside what it saw).

    ``standin``: ``auto`` (the world's CLIP, ``datasets/world/clip``), ``off`` (no stand-in) or a
    ``CLIPModel`` folder. ``dino``: the real metric (its weights decide): with DINO weights present the
    stand-in is unavailable and the real ``structure_distance`` row carries the number.
    """

    standin: str | None = "auto"
    dino: StructureDistance | None = None  # None: StructureDistance() (today's DINO look-up)
    name: str = STANDIN_NAME
    higher_is_better: bool = False
    _keys: ClipKeys | None = field(default=None, init=False, repr=False)
    _stats: tuple[tuple[float, ...], tuple[float, ...]] = field(default=(CLIP_MEAN, CLIP_STD), init=False, repr=False)
    _reason: str | None = field(default=None, init=False, repr=False)
    source: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.dino is None:
            self.dino = StructureDistance()

    def folder(self) -> Path | None:
        """The CLIP folder ``standin`` names (None: ``off``)."""
        mode = "auto" if self.standin is None else str(self.standin)
        if mode == "off":
            return None
        return world_clip_folder() if mode == "auto" else Path(mode).expanduser()

    def unavailable_reason(self) -> str | None:
        if self._keys is not None or self._reason is not None:
            return self._reason
        folder = self.folder()
        if folder is None:
            self._reason = f"{STANDIN_NAME}: task.structure.standin=off (no stand-in for structure_distance)"
        elif self.dino.unavailable_reason() is None:  # type: ignore[union-attr]
            found = getattr(self.dino, "source", None) or "configured"
            self._reason = (f"{STANDIN_NAME}: DINO ViT-B/8 weights are present ({found}); "
                            "the real structure_distance row carries the number")
        else:
            try:
                vision = load_clip_vision(folder)
                self._keys, self._stats = ClipKeys(vision), clip_image_stats(folder)
                self.source = f"stand-in: CLIP ViT keys of {folder} (last layer's k_proj, CLS included)"
            except DinoUnavailable as err:
                self._reason = str(err)
        return self._reason

    def describe(self) -> str:
        """One line for notes: which network produced the number, or why none did."""
        return self.source or self.unavailable_reason() or ""

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor, prompts: list[str] | None = None) -> Tensor:
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(f"{STANDIN_NAME}: pred and target must both be (B, 3, H, W), got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        reason = self.unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"{STANDIN_NAME} unavailable: {reason}")
        keys_fn = self._keys
        assert keys_fn is not None
        images = to_8bit(torch.cat([pred, target]))
        size = int(keys_fn.vision.config.image_size)
        keys = keys_fn(standin_input(images, size, *self._stats))
        return structure_distance_from_keys(keys[: pred.shape[0]], keys[pred.shape[0]:])
