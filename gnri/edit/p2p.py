"""Prompt-to-Prompt attention control (Hertz et al. 2022, arXiv 2208.01626; ``google/prompt-to-prompt``).

The source and target prompts are sampled as one stacked batch ``[source_1..B; target_1..B]``
from the same inverted state, through the core's own loop (:func:`gnri.core.reconstruct`: the
shared sampler, null-text's per-step conditioning, EDICT's coupled sampler). The adapter's
attention hooks (:meth:`~gnri.models.base.ModelAdapter.attention_processors` with its
:meth:`~gnri.models.base.ModelAdapter.probability_processor`, :mod:`gnri.models.processors`) hand
every attention probability map of the UNet to the :class:`P2PController`, which rewrites the
target half of the conditional branch from the source half, as the public code's ``AttentionControlEdit``:

- cross-attention, while ``cross_replace_steps`` is active: word swap (``replace``,
  ``AttentionReplace``) maps the source maps through a token-to-token matrix
  (``seq_aligner.get_replacement_mapper``); refinement (``refine``, ``AttentionRefine``) takes
  the source map of every target token aligned to a source token (global alignment of the token
  ids, ``get_refinement_mapper``) and keeps the target's own map for new tokens;
- self-attention, while ``self_replace_steps`` is active and the map has at most
  ``self_max_tokens`` queries: the target's map is replaced by the source's.

Schedules are the public code's: with ``n`` sampling steps counted from the noisiest (0),
cross-attention is replaced for ``int(a (n+1)) <= k < int(b (n+1))`` (its ``alpha_time_words``
has ``n + 1`` rows) and self-attention for ``int(a n) <= k < int(b n)``, for ``(a, b)`` or ``b``
(meaning ``(0, b)``). Under classifier-free guidance only the conditional branch is edited (the
code's ``attn[h // 2:]``); without guidance the single branch is.

Differences from the public code, named:
- batched over B independent (source, target) pairs, each with its own token mapper; the
  code edits one source against several targets;
- the step index comes from the level each denoiser call is made at (:class:`P2PDenoiser`), not
  by counting attention layers, so samplers that call the network more than once per step
  (EDICT) keep the schedule;
- ``mode="auto"`` picks word swap when the prompts have the same number of words, else
  refinement (the code makes the caller choose); local blending and attention re-weighting
  are not implemented;
- ``self_max_tokens`` defaults to 16 x 16 (the original P2P code); PnPInversion uses 32 x 32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

import numpy as np
import torch

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Level, Prediction, Tensor, reconstruct
from gnri.edit.edit import stack_pair
from gnri.models.base import ModelAdapter

Mode = Literal["auto", "replace", "refine"]
MODES = ("auto", "replace", "refine")
SELF_MAX_TOKENS = 16**2  # google/prompt-to-prompt: self-attention maps up to 16x16 queries are replaced
# Global alignment scores of seq_aligner.get_mapper: ScoreParams(gap=0, match=1, mismatch=-1).
ALIGN_GAP, ALIGN_MATCH, ALIGN_MISMATCH = 0, 1, -1


class Tokenizer(Protocol):
    """What the mappers need of a tokenizer (a transformers CLIPTokenizer satisfies it)."""

    model_max_length: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def word_token_indices(text: str, word_place: int, tokenizer: Tokenizer) -> list[int]:
    """Token positions (1-based: after the start token) of word ``word_place`` of ``text`` split on spaces.

    ``seq_aligner.get_word_inds`` for an integer place: decoded token pieces are accumulated
    until they cover the word.
    """
    words = text.split(" ")
    pieces = [tokenizer.decode([t]).strip("#") for t in tokenizer.encode(text)][1:-1]
    out, length, ptr = [], 0, 0
    for i, piece in enumerate(pieces):
        length += len(piece)
        if ptr == word_place:
            out.append(i + 1)
        if ptr < len(words) and length >= len(words[ptr]):
            ptr, length = ptr + 1, 0
    return out


def replacement_mapper(source: str, target: str, tokenizer: Tokenizer, max_len: int) -> Tensor:
    """(max_len, max_len) map from source tokens to target tokens for a word swap.

    ``seq_aligner.get_replacement_mapper_``: swapped words map onto each other (spread evenly
    when their token counts differ), every other position onto itself.
    """
    words_x, words_y = source.split(" "), target.split(" ")
    if len(words_x) != len(words_y):
        raise ValueError(
            f"p2p word swap needs prompts with the same number of words, got {len(words_x)} and {len(words_y)}: "
            f"{source!r} -> {target!r} (use mode=refine)"
        )
    swapped = [i for i in range(len(words_y)) if words_y[i] != words_x[i]]
    inds_source = [word_token_indices(source, i, tokenizer) for i in swapped]
    inds_target = [word_token_indices(target, i, tokenizer) for i in swapped]
    mapper = np.zeros((max_len, max_len))
    i = j = cur = 0
    while i < max_len and j < max_len:
        if cur < len(inds_source) and inds_source[cur] and inds_source[cur][0] == i:
            src, tgt = inds_source[cur], inds_target[cur]
            if len(src) == len(tgt):
                mapper[src, tgt] = 1
            else:
                for t in tgt:
                    mapper[src, t] = 1 / len(tgt)
            cur, i, j = cur + 1, i + len(src), j + len(tgt)
        elif cur < len(inds_source):
            mapper[i, j] = 1
            i, j = i + 1, j + 1
        else:
            mapper[j, j] = 1
            i, j = i + 1, j + 1
    return torch.from_numpy(mapper).float()


def _global_align(x: list[int], y: list[int]) -> list[tuple[int, int]]:
    """Needleman-Wunsch alignment of token ids; ``(target index, source index or -1)`` per target token."""
    score = np.zeros((len(x) + 1, len(y) + 1), dtype=np.int64)
    score[0, 1:] = np.arange(1, len(y) + 1) * ALIGN_GAP
    score[1:, 0] = np.arange(1, len(x) + 1) * ALIGN_GAP
    trace = np.zeros((len(x) + 1, len(y) + 1), dtype=np.int64)
    trace[0, 1:], trace[1:, 0], trace[0, 0] = 1, 2, 4
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            left, up = score[i, j - 1] + ALIGN_GAP, score[i - 1, j] + ALIGN_GAP
            diag = score[i - 1, j - 1] + (ALIGN_MATCH if x[i - 1] == y[j - 1] else ALIGN_MISMATCH)
            score[i, j] = max(left, up, diag)
            trace[i, j] = 1 if score[i, j] == left else 2 if score[i, j] == up else 3
    i, j, pairs = len(x), len(y), []
    while i > 0 or j > 0:
        if trace[i, j] == 3:
            i, j = i - 1, j - 1
            pairs.append((j, i))
        elif trace[i, j] == 1:
            j -= 1
            pairs.append((j, -1))
        elif trace[i, j] == 2:
            i -= 1
        else:
            break
    return pairs[::-1]


def refinement_mapper(source: str, target: str, tokenizer: Tokenizer, max_len: int) -> tuple[Tensor, Tensor]:
    """(mapper (max_len,) long, alphas (max_len,)) for refinement: ``seq_aligner.get_mapper``.

    ``mapper[j]`` is the source token whose map target token ``j`` takes; ``alphas[j]`` is 0 for
    target tokens with no source counterpart (they keep their own map), else 1.
    """
    x, y = tokenizer.encode(source), tokenizer.encode(target)
    if len(y) > max_len or len(x) > max_len:
        raise ValueError(f"p2p: prompts longer than {max_len} tokens: {source!r} -> {target!r}")
    pairs = torch.tensor(_global_align(x, y), dtype=torch.int64).reshape(-1, 2)
    alphas = torch.ones(max_len)
    alphas[: pairs.shape[0]] = pairs[:, 1].ne(-1).float()
    mapper = torch.zeros(max_len, dtype=torch.int64)
    mapper[: pairs.shape[0]] = pairs[:, 1]
    mapper[pairs.shape[0]:] = len(y) + torch.arange(max_len - len(y))
    return mapper, alphas


def _bounds(steps: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(steps, (int, float)):
        start, end = 0.0, float(steps)
    else:
        start, end = (float(v) for v in steps)
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"p2p replace steps must satisfy 0 <= start <= end <= 1, got {steps!r}")
    return start, end


@dataclass
class P2PController:
    """Rewrites attention maps of a stacked ``[source; target]`` batch of ``num_pairs`` pairs.

    ``mapper``: (B, L, L) for ``replace``, (B, L) long for ``refine`` (with ``alphas`` (B, L)).
    :meth:`begin` / :meth:`end` bracket one denoiser call (its sampling step and how many
    guidance branches it runs); outside a call maps pass through unchanged.
    """

    num_pairs: int
    num_steps: int
    mode: Literal["replace", "refine"]
    mapper: Tensor
    alphas: Tensor | None = None
    cross_replace_steps: tuple[float, float] = (0.0, 0.4)
    self_replace_steps: tuple[float, float] = (0.0, 0.6)
    self_max_tokens: int = SELF_MAX_TOKENS
    step: int | None = field(default=None, init=False)
    branches: int = field(default=1, init=False)
    edits: int = field(default=0, init=False)  # maps rewritten so far (a diagnostic)

    def begin(self, step: int, branches: int) -> None:
        self.step, self.branches = step, branches

    def end(self) -> None:
        self.step = None

    def cross_active(self, step: int) -> bool:
        rows = self.num_steps + 1
        start, end = self.cross_replace_steps
        return int(start * rows) <= step < int(end * rows)

    def self_active(self, step: int) -> bool:
        start, end = self.self_replace_steps
        return int(start * self.num_steps) <= step < int(end * self.num_steps)

    def __call__(self, probs: Tensor, is_cross: bool, place: str = "") -> Tensor:
        """Attention probabilities (batch * heads, queries, keys) -> the same, edited."""
        if self.step is None:
            return probs
        if is_cross and not self.cross_active(self.step):
            return probs
        if not is_cross and not (self.self_active(self.step) and probs.shape[1] <= self.self_max_tokens):
            return probs
        total = probs.shape[0]
        per_branch = total // self.branches
        if per_branch * self.branches != total or per_branch % (2 * self.num_pairs):
            raise ValueError(
                f"p2p: attention batch {total} is not {self.branches} branches x 2 x {self.num_pairs} pairs x heads"
            )
        heads = per_branch // (2 * self.num_pairs)
        cond = probs[total - per_branch:].reshape(2, self.num_pairs, heads, *probs.shape[1:])
        base, target = cond[0], cond[1]
        new = self._cross(base, target) if is_cross else base
        self.edits += 1
        edited = torch.stack([base, new.to(target.dtype)]).reshape(per_branch, *probs.shape[1:])
        return torch.cat([probs[: total - per_branch], edited])

    def _cross(self, base: Tensor, target: Tensor) -> Tensor:
        """Word swap or refinement of the target's cross-attention (B, heads, queries, tokens)."""
        if base.shape[-1] != self.mapper.shape[-1]:
            raise ValueError(
                f"p2p: cross-attention has {base.shape[-1]} keys, the mapper {self.mapper.shape[-1]} tokens"
            )
        mapper = self.mapper.to(device=base.device)
        if self.mode == "replace":
            return torch.einsum("bhqw,bwn->bhqn", base, mapper.to(base.dtype))
        # -1 (a target token with no source token; its alpha is 0) indexes the last key, as the
        # public code's attn_base[:, :, mapper] does with Python's negative indexing.
        index = mapper.remainder(base.shape[-1])[:, None, None, :].expand(*base.shape[:-1], mapper.shape[-1])
        alphas = self.alphas.to(device=base.device, dtype=base.dtype)[:, None, None, :]  # type: ignore[union-attr]
        return torch.gather(base, -1, index) * alphas + target * (1 - alphas)


def make_controller(
    tokenizer: Tokenizer,
    source_prompts: Sequence[str],
    target_prompts: Sequence[str],
    num_steps: int,
    *,
    mode: Mode = "auto",
    cross_replace_steps: float | Sequence[float] = 0.4,
    self_replace_steps: float | Sequence[float] = 0.6,
    self_max_tokens: int = SELF_MAX_TOKENS,
) -> P2PController:
    """A controller for ``len(source_prompts)`` pairs over ``num_steps`` sampling steps.

    Defaults are PIE-Bench's P2P settings (``cure-lab/PnPInversion``: cross 0.4, self 0.6).
    ``mode="auto"``: word swap where every pair has the same number of words, else refinement.
    """
    if mode not in MODES:
        raise ValueError(f"p2p: mode must be one of {MODES}, got {mode!r}")
    if len(source_prompts) != len(target_prompts) or not source_prompts:
        raise ValueError(f"p2p: need one target per source prompt, got {len(source_prompts)} and {len(target_prompts)}")
    if mode == "auto":
        same = all(len(s.split(" ")) == len(t.split(" ")) for s, t in zip(source_prompts, target_prompts))
        mode = "replace" if same else "refine"
    max_len = int(tokenizer.model_max_length)
    alphas = None
    if mode == "replace":
        pairs = zip(source_prompts, target_prompts)
        mapper = torch.stack([replacement_mapper(s, t, tokenizer, max_len) for s, t in pairs])
    else:
        maps = [refinement_mapper(s, t, tokenizer, max_len) for s, t in zip(source_prompts, target_prompts)]
        mapper, alphas = torch.stack([m for m, _ in maps]), torch.stack([a for _, a in maps])
    return P2PController(
        len(source_prompts), num_steps, mode, mapper, alphas, _bounds(cross_replace_steps),
        _bounds(self_replace_steps), self_max_tokens,
    )


@dataclass
class P2PDenoiser:
    """A denoiser that tells the controller which sampling step (0 = noisiest) each call makes.

    The step is found from the call's level on ``grid`` (a call at ``levels[i + 1]`` is sampling
    step ``num_steps - 1 - i``); the number of guidance branches from the conditioning.
    """

    denoiser: Denoiser
    controller: P2PController
    grid: Grid

    def forwards_per_call(self, cond: Conditioning) -> int:
        return self.denoiser.forwards_per_call(cond)

    def _step(self, level: Level) -> int:
        for i, lv in enumerate(self.grid.levels[1:]):
            if lv.t == level.t:
                return self.grid.num_steps - 1 - i
        raise ValueError(f"p2p: the denoiser was called at t={level.t}, which is not a noisy level of the grid")

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        self.controller.begin(self._step(level), 2 if cond.uses_cfg else 1)
        try:
            return self.denoiser(z, level, cond)
        finally:
            self.controller.end()


def p2p_sample(
    denoiser: Denoiser,
    adapter: ModelAdapter,
    result: InversionResult,
    grid: Grid,
    source_cond: Conditioning,
    target_cond: Conditioning,
    controller: P2PController,
) -> tuple[Tensor, Tensor]:
    """Sample the stacked pair under attention control: (source latents, target latents) at ``levels[0]``.

    Every attention layer of ``adapter``'s UNet runs its probability processor for the duration
    (the previous processors restored afterwards). The source half regenerates the source, so with
    the inversion's conditioning it equals the plain reconstruction up to batch round-off.
    """
    pair_result, pair_cond = stack_pair(result, source_cond, target_cond)
    with adapter.attention_processors(lambda name, _: adapter.probability_processor(controller, name)):
        out = reconstruct(P2PDenoiser(denoiser, controller, grid), pair_result, grid, pair_cond)
    batch = result.z.shape[0]
    return out[:batch], out[batch:]


def p2p_edit(
    adapter: ModelAdapter,
    result: InversionResult,
    grid: Grid,
    source_prompts: Sequence[str],
    target_prompts: Sequence[str],
    guidance_scale: float = 1.0,
    negative_prompt: str = "",
    *,
    mode: Mode = "auto",
    cross_replace_steps: float | Sequence[float] = 0.4,
    self_replace_steps: float | Sequence[float] = 0.6,
    self_max_tokens: int = SELF_MAX_TOKENS,
    denoiser: Denoiser | None = None,
) -> tuple[Tensor, Tensor]:
    """Prompt-to-Prompt editing for a UNet model adapter (its attention hooks and prompt tokenizer).

    Both branches use ``guidance_scale`` with ``negative_prompt`` (null-text's and NPI's per-step
    negatives replace it where the result carries them). ``denoiser`` defaults to the adapter's
    (pass a counting wrapper to count passes). Returns (source, target) latents at ``levels[0]``.
    """
    if adapter.network_kind != "unet":
        raise ValueError(f"p2p: needs a UNet model; {adapter.name!r} has none (its network: {adapter.network_kind})")
    controller = make_controller(
        adapter.prompt_tokenizer(), source_prompts, target_prompts, grid.num_steps, mode=mode,
        cross_replace_steps=cross_replace_steps, self_replace_steps=self_replace_steps, self_max_tokens=self_max_tokens,
    )
    negatives = [negative_prompt] * len(source_prompts)
    source_cond = adapter.encode_prompts(list(source_prompts), guidance_scale, negatives)
    target_cond = adapter.encode_prompts(list(target_prompts), guidance_scale, negatives)
    return p2p_sample(denoiser or adapter.denoiser(), adapter, result, grid, source_cond, target_cond, controller)
