"""CLIP score (Hessel et al. 2021, torchmetrics' scale): ``100 * max(cos(image, text), 0)`` per image.

Computed on ``pred`` (the reconstruction or edit) against its prompt; ``target`` is unused.
Two backends, both from LOCAL files only (no download is ever attempted; a missing file makes
the metric unavailable with the reason):
- ``open_clip`` (default): ``model_name`` ViT-B-32 with the ``openai`` weights, from ``weights``
  (a state-dict file: .safetensors / .bin / .pt) or else from the Hugging Face hub cache
  (``cache_dir``, default ``$HF_HUB_CACHE`` / ``~/.cache/huggingface/hub``) or open_clip's own
  ``~/.cache/clip``. OpenAI weights use QuickGELU, forced here.
- ``transformers``: a ``CLIPModel`` folder (``weights``) with its tokenizer and, optionally,
  ``preprocessor_config.json``. Features are ``get_*_features(...).pooler_output`` (the
  projected embeddings in transformers 5).
Images are preprocessed in torch as CLIP's processors do: bicubic resize of the shorter side,
centre crop, normalisation with the model's mean/std (OpenAI's by default).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from eval.metrics.base import PairScore, Tensor

BACKENDS = ("open_clip", "transformers")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
SCALE = 100.0
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

# (images in [0, 1], prompts) -> (image features, text features), both (B, D)
FeatureFn = Callable[[Tensor, list[str]], tuple[Tensor, Tensor]]


class CLIPUnavailable(RuntimeError):
    """No local CLIP weights could be loaded; the message is the reason."""


def clip_preprocess(
    images: Tensor, size: int, crop: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> Tensor:
    """[0, 1] images -> CLIP input: shorter side to ``size`` (bicubic), centre crop ``crop``, normalise."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new = (max(crop, round(h * scale)), max(crop, round(w * scale)))
    x = F.interpolate(images.float(), size=new, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (new[0] - crop) // 2, (new[1] - crop) // 2
    x = x[..., top : top + crop, left : left + crop]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def clip_score_from_features(image_features: Tensor, text_features: Tensor) -> Tensor:
    """``100 * max(cos, 0)`` row by row: shape (B,)."""
    cos = F.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
    return SCALE * cos.clamp(min=0)


def _hub_cache_root(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(hf_home) / "hub"


def find_open_clip_weights(model_name: str, pretrained: str, weights: str | None, cache_dir: str | None) -> Path:
    """The local checkpoint for ``model_name``/``pretrained``; else :class:`CLIPUnavailable` saying where it looked."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise CLIPUnavailable(f"clip_score: weights={weights} is not a file")
        return path
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        raise CLIPUnavailable(f"clip_score: open_clip has no pretrained tag {pretrained!r} for {model_name!r}")
    looked: list[str] = []
    if cfg.get("hf_hub"):
        repo_id, fname = os.path.split(cfg["hf_hub"])  # open_clip's convention: "org/name/" or "org/name/file"
        folder = _hub_cache_root(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
        looked.append(str(folder))
        names = (fname,) if fname else OPEN_CLIP_FILES
        for snap in sorted(folder.glob("*")) if folder.is_dir() else []:
            for name in names:
                if (snap / name).is_file():
                    return snap / name
    if cfg.get("url"):
        legacy = Path.home() / ".cache" / "clip" / os.path.basename(cfg["url"])
        looked.append(str(legacy))
        if legacy.is_file():
            return legacy
    raise CLIPUnavailable(
        f"clip_score: no local {model_name}/{pretrained} weights (looked in {', '.join(looked)}); "
        "set metrics.options.clip_score.weights=<file> (no download is attempted)"
    )


def load_open_clip(model_name: str, pretrained: str, weights: str | None, cache_dir: str | None) -> FeatureFn:
    """Feature function of an OpenCLIP model loaded from a local file (strict)."""
    path = find_open_clip_weights(model_name, pretrained, weights, cache_dir)
    import open_clip

    try:
        model = open_clip.create_model(
            model_name, pretrained=str(path), force_quick_gelu=pretrained == "openai", load_weights=True
        ).eval().requires_grad_(False)
    except Exception as err:  # a present but unreadable/mismatched file: report, never fall back to random
        raise CLIPUnavailable(
            f"clip_score: could not load {path} into {model_name}: {type(err).__name__}: {err}"
        ) from err
    tokenizer = open_clip.get_tokenizer(model_name)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = tuple(getattr(model.visual, "image_mean", None) or OPENAI_MEAN)
    std = tuple(getattr(model.visual, "image_std", None) or OPENAI_STD)

    def features(images: Tensor, prompts: list[str]) -> tuple[Tensor, Tensor]:
        model.to(images.device)
        pixels = clip_preprocess(images, size, size, mean, std)
        tokens = tokenizer(prompts).to(images.device)
        return model.encode_image(pixels), model.encode_text(tokens)

    return features


def _hf_preprocess_config(folder: Path, image_size: int) -> tuple[int, int, tuple[float, ...], tuple[float, ...]]:
    """(resize, crop, mean, std) from ``preprocessor_config.json``, or ``processor_config.json``'s
    ``image_processor`` (what ``CLIPProcessor.save_pretrained`` writes, e.g. the world CLIP's, trained
    on mean/std 0.5), else CLIP's defaults."""
    cfg: dict[str, Any] = {}
    if (folder / "preprocessor_config.json").is_file():
        cfg = json.loads((folder / "preprocessor_config.json").read_text())
    elif (folder / "processor_config.json").is_file():
        cfg = json.loads((folder / "processor_config.json").read_text()).get("image_processor", {})
    size = cfg.get("size", image_size)
    size = size.get("shortest_edge", size.get("height", image_size)) if isinstance(size, dict) else int(size)
    crop = cfg.get("crop_size", image_size)
    crop = crop.get("height", image_size) if isinstance(crop, dict) else int(crop)
    return size, crop, tuple(cfg.get("image_mean", OPENAI_MEAN)), tuple(cfg.get("image_std", OPENAI_STD))


def load_transformers_clip(weights: str | None) -> FeatureFn:
    """Feature function of a local ``transformers`` ``CLIPModel`` folder (weights + tokenizer)."""
    if not weights:
        raise CLIPUnavailable(
            "clip_score: backend transformers needs metrics.options.clip_score.weights=<CLIPModel folder>"
        )
    folder = Path(weights).expanduser()
    if not (folder / "config.json").is_file():
        raise CLIPUnavailable(f"clip_score: weights={weights} is not a CLIPModel folder (no config.json)")
    from transformers import AutoTokenizer, CLIPModel

    try:
        model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval().requires_grad_(False)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:
        raise CLIPUnavailable(f"clip_score: could not load {folder}: {type(err).__name__}: {err}") from err
    size, crop, mean, std = _hf_preprocess_config(folder, model.config.vision_config.image_size)
    max_len = model.config.text_config.max_position_embeddings

    def features(images: Tensor, prompts: list[str]) -> tuple[Tensor, Tensor]:
        model.to(images.device)
        pixels = clip_preprocess(images, size, crop, mean, std)
        tok = tokenizer(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        tok = tok.to(images.device)
        image = model.get_image_features(pixel_values=pixels).pooler_output
        text = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        text = text.pooler_output
        return image, text

    return features


@dataclass
class CLIPScore(PairScore):
    """CLIP score of ``pred`` against ``prompts``, higher is better; unavailable without local weights."""

    backend: str = "open_clip"
    weights: str | None = None
    model_name: str = "ViT-B-32"
    pretrained: str = "openai"
    cache_dir: str | None = None
    name: str = "clip_score"
    higher_is_better: bool = True
    _features: FeatureFn | None = field(default=None, init=False, repr=False)
    _reason: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"clip_score: backend must be one of {BACKENDS}, got {self.backend!r}")

    def _load(self) -> None:
        if self._features is not None or self._reason is not None:
            return
        try:
            if self.backend == "open_clip":
                self._features = load_open_clip(self.model_name, self.pretrained, self.weights, self.cache_dir)
            else:
                self._features = load_transformers_clip(self.weights)
        except CLIPUnavailable as err:
            self._reason = str(err)

    def unavailable_reason(self) -> str | None:
        self._load()
        return self._reason

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor, prompts: list[str] | None = None) -> Tensor:
        if prompts is None or len(prompts) != pred.shape[0]:
            got = None if prompts is None else len(prompts)
            raise ValueError(f"clip_score: needs one prompt per image, got {got} for {pred.shape[0]}")
        reason = self.unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"clip_score unavailable: {reason}")
        image, text = self._features(pred, list(prompts))  # type: ignore[misc]
        return clip_score_from_features(image, text)
