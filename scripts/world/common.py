"""Shared pieces of the embedded world's training scripts: paths, seeds, data, tokenizers, configs.

Run the scripts from the repository root as modules (``python -m scripts.world.train_all``).
Intermediate artefacts (trained components, cached latents, logs) go to a work folder
(``--work``, default ``/tmp/gnri_world``); :mod:`scripts.world.assemble` writes the committed
pipeline folders under ``datasets/world/``.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from eval.world.generator import render_many, scenes
from eval.world.grammar import vocabulary
from gnri.models.tiny import bytes_to_unicode

ROOT = Path(__file__).resolve().parents[2]
WORLD_DIR = ROOT / "datasets" / "world"
DEFAULT_WORK = Path("/tmp/gnri_world")
CLIP_MAX_LENGTH = 77  # the CLIP tokenizer pads to this, as Stable Diffusion's does
T5_MAX_LENGTH = 32  # Flux's max_sequence_length for the world (the longest caption is 14 tokens)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU training is then repeatable at a fixed thread count)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def images_tensor(split: str, start: int, n: int, seed: int) -> torch.Tensor:
    """Scenes ``start .. start + n - 1`` of ``split`` as a float (N, 3, H, W) tensor in [0, 1]."""
    imgs, _ = render_many(scenes(split, n, seed, start))
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0


def images_and_masks(split: str, start: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`images_tensor`, plus the object masks as float (N, 1, H, W)."""
    imgs, masks = render_many(scenes(split, n, seed, start))
    return (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0,
            torch.from_numpy(masks)[:, None].float())


def object_weights(masks: torch.Tensor, weight: float, size: int | None = None) -> torch.Tensor:
    """Per-pixel loss weights ``1 + weight`` on the object grown by one pixel (or latent cell,
    after resizing to ``size`` by area), 1 elsewhere, normalised to mean 1 per image.

    The background is a flat colour that every model learns first; these weights spend the
    remaining gradient on the object's outline. A per-element positive weight leaves each
    element's optimum (reconstruction, or the conditional mean a denoiser predicts) unchanged.
    """
    m = masks if size is None else torch.nn.functional.adaptive_avg_pool2d(masks, size)
    m = torch.nn.functional.max_pool2d((m > 0).float(), 3, stride=1, padding=1)
    w = 1.0 + weight * m
    return w / w.mean(dim=(1, 2, 3), keepdim=True)


def captions(split: str, start: int, n: int, seed: int) -> list[str]:
    """Captions of the same scenes as :func:`images_tensor`."""
    return [s.caption for s in scenes(split, n, seed, start)]


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of [0, 1] images, shape (N,)."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse)


class Log:
    """Appends timestamped lines to ``<work>/<name>.log`` and echoes them."""

    def __init__(self, work: Path, name: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.path = work / f"{name}.log"
        self.t0 = time.time()

    def __call__(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def record(work: Path, stage: str, **values: object) -> None:
    """Write ``values`` (times, settings, metrics) to ``<work>/record-<stage>.json`` (one file per stage,
    so stages running side by side never race)."""
    (work / f"record-{stage}.json").write_text(json.dumps(values, indent=2, sort_keys=True))


def records(work: Path) -> dict[str, dict]:
    """Every stage's record, by stage name."""
    return {p.stem.removeprefix("record-"): json.loads(p.read_text()) for p in sorted(work.glob("record-*.json"))}


class Checkpoint:
    """Resumable training state in ``<work>/<name>.ckpt``: model, EMA, optimiser, data generator,
    steps done and the wall/CPU seconds spent so far (a killed run resumes exactly where the
    last save left it, with the same random stream)."""

    def __init__(self, work: Path, name: str, every: int) -> None:
        self.path, self.every = work / f"{name}.ckpt", every

    def load(self, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
             gen: torch.Generator) -> tuple[int, float, float]:
        """Restore the state if a checkpoint exists: (steps done, wall seconds, CPU seconds)."""
        if not self.path.is_file():
            return 0, 0.0, 0.0
        st = torch.load(self.path, weights_only=True)  # tensors and plain values only: no code runs
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        return st["step"], st["wall"], st["cpu"]

    def maybe_save(self, step: int, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
                   gen: torch.Generator, wall: float, cpu: float) -> None:
        """Save after ``step`` steps if it is a multiple of ``every`` (atomically)."""
        if step % self.every:
            return
        tmp = self.path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "gen": gen.get_state(), "step": step, "wall": wall, "cpu": cpu}, tmp)
        os.replace(tmp, self.path)


def threads() -> int:
    """Torch threads: OMP_NUM_THREADS if set, else 2 (the machines this was made on)."""
    n = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------- tokenizers

def _bpe_merges_used(word: str, ranks: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    """The merges CLIP's BPE applies to one lower-case word, in order."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    used = []
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        used.append((parts[i], parts[i + 1]))
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    return used


def build_clip_tokenizer(folder: Path) -> "object":
    """A CLIPTokenizer with CLIP's own BPE restricted to the world's words; saved to ``folder``.

    The vocabulary is the 512 byte symbols (with and without ``</w>``), the symbols produced by
    the subset of OpenAI CLIP's merge list (bundled with open_clip) that the grammar's words
    need, and the two specials: every grammar word is one token exactly as in CLIP, any other
    text falls back to smaller pieces, and the embedding table stays small.
    """
    import open_clip.tokenizer as oct
    from transformers import CLIPTokenizer

    lines = gzip.open(oct.default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    ranks = {tuple(m.split()): i for i, m in enumerate(lines)}
    used: set[tuple[str, str]] = set()
    for w in vocabulary():
        used.update(_bpe_merges_used(w, ranks))
    merges = sorted(used, key=ranks.__getitem__)
    base = list(bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=[tuple(m) for m in merges],
                        model_max_length=CLIP_MAX_LENGTH)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)


def build_t5_tokenizer(folder: Path) -> "object":
    """A word-level Unigram T5Tokenizer: one piece per grammar word, characters as fallback."""
    from transformers import T5Tokenizer

    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()"))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -1.0) for w in vocabulary()] + [(c, -5.0) for c in chars]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=T5_MAX_LENGTH)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return T5Tokenizer.from_pretrained(folder)


@torch.no_grad()
def sd_text_embeddings(tokenizer: "object", text_encoder: torch.nn.Module, prompts: list[str]) -> torch.Tensor:
    """What StableDiffusionPipeline.encode_prompt feeds the UNet: last hidden states at 77 tokens."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


@torch.no_grad()
def flux_text_embeddings(tokenizer: "object", text_encoder: torch.nn.Module, tokenizer_2: "object",
                         text_encoder_2: torch.nn.Module, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """What FluxPipeline.encode_prompt gives the transformer: (T5 states, CLIP pooled output)."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    pooled = text_encoder(ids).pooler_output
    ids2 = tokenizer_2(prompts, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True,
                       return_tensors="pt").input_ids
    return text_encoder_2(ids2)[0], pooled
