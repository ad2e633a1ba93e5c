"""The structure-distance stand-in (issue 25 item 4): without DINO ViT-B/8 weights, PIE-Bench's key
self-similarity distance on a CLIP vision tower's last-layer keys, in its own row
``structure_distance_standin``; checked against a by-hand numpy forward of a tiny CLIP tower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.metrics.base import Sample
from eval.metrics.diagnostics import EDIT_METRIC_ORDER, directions
from eval.metrics.edit import STANDIN_REASON, Structure, StructureStandin, build_edit_metrics
from eval.metrics.scoring import score
from eval.metrics.structure import (
    STANDIN_NAME, StructureDistance, StructureDistanceStandin, clip_image_stats, world_clip_folder,
)
from eval.records import Unavailable

SIZE, PATCH, WIDTH, HEADS, LAYERS = 32, 8, 32, 2, 3
NO_DINO = "/nonexistent/dino_vitbase8_pretrain.pth"


@pytest.fixture(autouse=True)
def _no_local_dino(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No DINO file can be found by the default look-up (torch-hub and hub caches point at tmp)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub_cache"))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random transformers CLIPModel folder, normalised as the world's CLIP (mean = std = 0.5)."""
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=HEADS, max_position_embeddings=16),
        vision_config=dict(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=LAYERS,
                           num_attention_heads=HEADS, image_size=SIZE, patch_size=PATCH),
        projection_dim=16,
    )
    model = CLIPModel(config)
    with torch.no_grad():  # keys with a visible spread: random init puts them near zero
        for p in model.vision_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps(
        {"image_processor": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}}))
    return folder


def _images(n: int, seed: int) -> torch.Tensor:
    """8-bit [0, 1] images at the tower's size (so neither the 8-bit cut nor a resize changes them)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g).double().div(255).float()


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def hand_keys(folder: Path, images: torch.Tensor) -> np.ndarray:
    """The last layer's attention keys of the CLIP vision tower, written out in numpy (float64):
    patches + CLS + positions, pre-LayerNorm, every layer but the last in full (LN, attention, LN,
    quick-GELU MLP), then the last layer's LN1 and k_proj. Images [0, 1] -> (B, 1 + patches, width)."""
    from safetensors.numpy import load_file

    saved = load_file(str(folder / "model.safetensors"))
    s = {k.removeprefix("vision_model."): v.astype(np.float64) for k, v in saved.items() if k.startswith("vision_model.")}
    eps = json.loads((folder / "config.json").read_text())["vision_config"].get("layer_norm_eps", 1e-5)
    x = (images.double().numpy() - 0.5) / 0.5
    b, g = x.shape[0], SIZE // PATCH
    w = s["embeddings.patch_embedding.weight"]  # (width, 3, P, P), no bias
    patches = x.reshape(b, 3, g, PATCH, g, PATCH).transpose(0, 2, 4, 1, 3, 5).reshape(b, g * g, -1)
    tokens = patches @ w.reshape(WIDTH, -1).T
    cls = np.broadcast_to(s["embeddings.class_embedding"], (b, 1, WIDTH))
    h = np.concatenate([cls, tokens], 1) + s["embeddings.position_embedding.weight"][None]
    h = _ln(h, s["pre_layrnorm.weight"], s["pre_layrnorm.bias"], eps)

    def lin(v: np.ndarray, name: str) -> np.ndarray:
        return v @ s[f"{name}.weight"].T + s[f"{name}.bias"]

    d = WIDTH // HEADS
    for i in range(LAYERS):
        p = f"encoder.layers.{i}."
        y = _ln(h, s[p + "layer_norm1.weight"], s[p + "layer_norm1.bias"], eps)
        k = lin(y, p + "self_attn.k_proj")
        if i == LAYERS - 1:
            return k
        q, v = lin(y, p + "self_attn.q_proj"), lin(y, p + "self_attn.v_proj")
        split = lambda t: t.reshape(b, -1, HEADS, d).transpose(0, 2, 1, 3)  # noqa: E731
        logits = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(d)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        h = h + lin((att @ split(v)).transpose(0, 2, 1, 3).reshape(b, -1, WIDTH), p + "self_attn.out_proj")
        y = lin(_ln(h, s[p + "layer_norm2.weight"], s[p + "layer_norm2.bias"], eps), p + "mlp.fc1")
        h = h + lin(y / (1 + np.exp(-1.702 * y)), p + "mlp.fc2")  # quick_gelu
    raise AssertionError("unreachable")


def hand_distance(keys_a: np.ndarray, keys_b: np.ndarray) -> np.ndarray:
    """Per image: mean over token pairs of the squared difference of the keys' cosine similarities."""
    def self_sim(k: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(k, axis=-1, keepdims=True)
        return (k @ k.transpose(0, 2, 1)) / np.maximum(n @ n.transpose(0, 2, 1), 1e-8)

    return ((self_sim(keys_a) - self_sim(keys_b)) ** 2).reshape(len(keys_a), -1).mean(1)


def tiny_dino_file(path: Path) -> Path:
    """A random one-block DINO-named state dict (only its presence matters here)."""
    torch.manual_seed(1)
    dim, n = 16, 1 + 4
    state = {"cls_token": torch.randn(1, 1, dim), "pos_embed": torch.randn(1, n, dim),
             "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16), "patch_embed.proj.bias": torch.randn(dim)}
    for name, shape in {"norm1": (dim,), "attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "norm2": (dim,),
                        "mlp.fc1": (4 * dim, dim), "mlp.fc2": (dim, 4 * dim)}.items():
        state[f"blocks.0.{name}.weight"] = torch.randn(*shape)
        state[f"blocks.0.{name}.bias"] = torch.randn(shape[0])
    torch.save(state, path)
    return path


def test_standin_distance_by_hand(clip_folder: Path) -> None:
    source, edit = _images(2, 0), _images(2, 1)
    metric = StructureDistanceStandin(str(clip_folder), StructureDistance(weights=NO_DINO))
    assert metric.unavailable_reason() is None and "stand-in" in (metric.source or "")
    assert clip_image_stats(clip_folder) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    keys_edit, keys_source = hand_keys(clip_folder, edit), hand_keys(clip_folder, source)
    assert keys_edit.shape == (2, 1 + (SIZE // PATCH) ** 2, WIDTH)  # CLS kept, as DINO's keys
    want = hand_distance(keys_edit, keys_source)
    assert (want > 1e-3).all()  # a distance a wrong key or normalisation would move
    got = metric(edit, source).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    # identical images: exactly 0; the distance is symmetric
    assert metric(source, source).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(metric(source, edit).numpy(), got, rtol=1e-12)
    # through the edit metric rows (Sample: candidate = the edit, reference = the source)
    rows = {m.name: m for m in build_edit_metrics(structure={"weights": NO_DINO, "standin": str(clip_folder)})}
    sample = Sample(edit[:1], source[:1], "a target caption")
    out = score([rows["structure_distance"], rows[STANDIN_NAME]], sample)
    assert out[STANDIN_NAME] == pytest.approx(float(want[0]), rel=1e-4)
    reason = out["structure_distance"]
    assert isinstance(reason, Unavailable) and NO_DINO in reason.reason and STANDIN_NAME in reason.reason


def test_standin_only_without_dino(clip_folder: Path, tmp_path: Path) -> None:
    dino = tiny_dino_file(tmp_path / "dino.pth")
    rows = {m.name: m for m in build_edit_metrics(structure={"weights": str(dino), "standin": str(clip_folder)})}
    assert rows["structure_distance"].unavailable_reason() is None
    reason = rows[STANDIN_NAME].unavailable_reason()
    assert reason is not None and "DINO ViT-B/8 weights are present" in reason and str(dino) in reason
    sample = Sample(_images(1, 0), _images(1, 1), "c")
    assert score([rows[STANDIN_NAME]], sample) == {STANDIN_NAME: Unavailable(reason)}
    # without DINO: the default (no weights, empty caches) finds none, and auto is the world's CLIP
    default = {m.name: m for m in build_edit_metrics()}
    assert default["structure_distance"].unavailable_reason() is not None
    assert default[STANDIN_NAME].standin.folder() == world_clip_folder()  # type: ignore[attr-defined]
    if (world_clip_folder() / "config.json").is_file():
        assert default[STANDIN_NAME].unavailable_reason() is None
        value = score([default[STANDIN_NAME]], sample)[STANDIN_NAME]
        assert isinstance(value, float) and value > 0
    off = StructureStandin(StructureDistanceStandin("off", StructureDistance(weights=NO_DINO)))
    assert "standin=off" in (off.unavailable_reason() or "")
    assert StructureStandin().unavailable_reason() == STANDIN_REASON
    missing = StructureDistanceStandin(str(tmp_path / "no_clip"), StructureDistance(weights=NO_DINO))
    assert "not a CLIPModel folder" in (missing.unavailable_reason() or "")
    assert Structure().name == "structure_distance" and StructureStandin().name == STANDIN_NAME


def test_rows_and_direction() -> None:
    order = list(EDIT_METRIC_ORDER)
    assert order.index(STANDIN_NAME) == order.index("structure_distance") + 1
    assert directions([STANDIN_NAME]) == {STANDIN_NAME: False}
    assert [m.name for m in build_edit_metrics()].count(STANDIN_NAME) == 1
