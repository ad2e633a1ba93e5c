"""Value (V) injection in FLUX's single-stream blocks: RF-Edit's and FireFlow's editing.

References: RF-Edit (Wang et al., ICML 2025, arXiv 2411.04746; ``wangjiangshan0725/RF-Solver-Edit``,
``FLUX_Image_Edit/src/flux/modules/layers.py::SingleStreamBlock``) and FireFlow's default
``--editing_strategy replace_v`` (Deng et al., ICML 2025, arXiv 2412.07517; its
``layers.py::SingleStreamBlock``). In the first ``inject`` denoising steps the attention values
of the chosen single-stream blocks (the whole joint text + image sequence, as the codes do) are
replaced by the source's, at every network call of those steps; all else follows the target
prompt. Keys, queries, the MLP branch and the double-stream blocks are untouched.

:func:`injected_edit` runs two passes of the inversion's own sampler (``gnri.core.reconstruct``):
the source prompt's regeneration, recording V, then the target prompt's, replacing V call by
call. The calls in the window are those at a noise level above ``grid.levels[n - inject]`` (the
``inject`` noisiest steps, midpoint calls included); the passes make the same calls, so the
``k``-th call of one pairs with the ``k``-th of the other. With ``inject=0`` no source pass runs
and the edit is the plain prompt swap; with the target prompt equal to the source prompt the
edit is the reconstruction. The editor works after any inverter on a Flux transformer:
``inverter=rf_solver`` is RF-Edit, ``inverter=fireflow`` FireFlow's editing.

Blocks: ``"auto"`` is the codes' default range, single blocks 20..37 of FLUX.1's 38
(RF-Solver's ``info['id'] > 19``, FireFlow's ``--start_layer_index 20 --end_layer_index 37``),
carried to other depths as the same fraction (``floor(n * 20 / 38)`` .. ``n - 1``: block 1 of a
2-block transformer); ``"all"`` every single block (FireFlow's README setting, 0..37); or a list
of indices.

Differences from the public codes (the first is the one that matters):
- The codes record V during the *inversion* (keyed by the step's noisier timestep and
  first/midpoint call) and replay it while denoising, so the denoising call at the noisier
  level receives V computed at the cleaner latent; here V comes from the source's regeneration
  at the same latent positions and levels as the target's calls. Cost: one extra sampling pass
  (counted in the edit's NFE; the codes' extra cost is memory). For an exact inverter the two
  sources coincide.
- FireFlow skips a replacement when no V was stored for a call (the reused first velocity);
  here every call of both passes is paired, so nothing is skipped.
- The codes keep V on the CPU between passes; here it stays on the latents' device.

Adapter-side code: this module and :mod:`gnri.edit.p2p_processor` are the parts of
:mod:`gnri.edit` that touch diffusers objects. Processors are installed with
``set_attn_processor`` and the previous ones restored on exit; nothing is monkey-patched.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Level, Prediction, Tensor, reconstruct

SINGLE_PREFIX = "single_transformer_blocks."  # FluxTransformer2DModel's single-stream blocks
OFFICIAL_FIRST_BLOCK = 20  # RF-Solver's ``id > 19`` / FireFlow's --start_layer_index default
FLUX_SINGLE_BLOCKS = 38  # FLUX.1's single-stream depth, which that index refers to
Blocks = Literal["auto", "all"] | Sequence[int]


@dataclass
class InjectionState:
    """Shared by the processors of one edit: which pass runs, whether the current call is in the
    injection window, the call counter, and the recorded values ``(call, processor name, visit) -> V``
    (``visit`` counts a layer's runs within one call, should an adapter run the network in chunks)."""

    threshold_s: float
    mode: Literal["off", "record", "inject"] = "off"
    active: bool = False
    call: int = 0
    values: dict[tuple[int, str, int], Tensor] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=dict)

    def start(self, mode: Literal["off", "record", "inject"]) -> None:
        """Begin a pass: calls are counted from 0 again."""
        self.mode, self.call, self.active = mode, 0, False
        self.visits.clear()

    def next_call(self) -> None:
        self.call += 1
        self.visits.clear()

    def key(self, name: str) -> tuple[int, str, int]:
        """This run's key for layer ``name``: (call, name, how many times it ran before in the call)."""
        visit = self.visits.get(name, 0)
        self.visits[name] = visit + 1
        return self.call, name, visit

    def now(self) -> str:
        return self.mode if self.active else "off"


@dataclass
class WindowDenoiser:
    """A denoiser that tells the processors whether each call lies in the injection window
    (noise level above ``state.threshold_s``) and counts the calls of a pass."""

    inner: Denoiser
    state: InjectionState

    def forwards_per_call(self, cond: Conditioning) -> int:
        return self.inner.forwards_per_call(cond)

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        self.state.active = level.s > self.state.threshold_s
        try:
            return self.inner(z, level, cond)
        finally:
            self.state.active = False
            self.state.next_call()


def _heads(attn: Any, x: Tensor) -> Tensor:
    return x.unflatten(-1, (-1, attn.head_dim))


def _qkv(attn: Any, hidden_states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Query, key, value of a single-stream attention layer (fused or not), split into heads."""
    if getattr(attn, "fused_projections", False):
        q, k, v = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    return _heads(attn, q), _heads(attn, k), _heads(attn, v)


class ValueInjectionProcessor:
    """diffusers' ``FluxAttnProcessor`` on a single-stream block, with the value recorded or replaced.

    Outside the window (and outside an edit) it calls the processor it replaced unchanged;
    recording computes V once more and then calls it too; injecting runs the same single-stream
    computation as ``FluxAttnProcessor`` (same projections, norms, rotary embedding and
    ``dispatch_attention_fn``) with the recorded V.
    """

    def __init__(self, original: Any, state: InjectionState, name: str) -> None:
        self.original = original
        self.state = state
        self.name = name

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Tensor:
        mode = self.state.now()
        if mode == "off":
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if encoder_hidden_states is not None or getattr(attn, "added_kv_proj_dim", None) is not None:
            raise ValueError(f"v_inject: {self.name} is not a single-stream attention layer")
        key = self.state.key(self.name)
        if mode == "record":
            self.state.values[key] = _qkv(attn, hidden_states)[2]
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if key not in self.state.values:
            raise RuntimeError(f"v_inject: no source value for call {key[0]} of {self.name}; the passes differ")
        query, key_, _ = _qkv(attn, hidden_states)
        value = self.state.values[key]
        query, key_ = attn.norm_q(query), attn.norm_k(key_)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key_ = apply_rotary_emb(key_, image_rotary_emb, sequence_dim=1)
        out = dispatch_attention_fn(
            query, key_, value, attn_mask=attention_mask,
            backend=getattr(self.original, "_attention_backend", None),
            parallel_config=getattr(self.original, "_parallel_config", None),
        )
        return out.flatten(2, 3).to(query.dtype)


def flux_transformer(adapter: Any) -> Any:
    """The FluxTransformer2DModel behind an adapter (``adapter.pipe.transformer``), or ValueError."""
    transformer = getattr(getattr(adapter, "pipe", None), "transformer", None)
    names = [] if transformer is None else [n for n in transformer.attn_processors if n.startswith(SINGLE_PREFIX)]
    if not names:
        raise ValueError(
            f"v_inject: needs a Flux transformer with single-stream blocks; model "
            f"{getattr(adapter, 'name', type(adapter).__name__)!r} has none"
        )
    return transformer


def single_block_names(transformer: Any, blocks: Blocks = "auto") -> list[str]:
    """Processor names of the chosen single-stream blocks (see the module docstring for ``blocks``)."""
    names = sorted((n for n in transformer.attn_processors if n.startswith(SINGLE_PREFIX)),
                   key=lambda n: int(n[len(SINGLE_PREFIX):].split(".", 1)[0]))
    count = len(names)
    if isinstance(blocks, str):
        if blocks not in ("auto", "all"):
            raise ValueError(f"v_inject: blocks must be 'auto', 'all' or a list of indices, got {blocks!r}")
        first = 0 if blocks == "all" else math.floor(count * OFFICIAL_FIRST_BLOCK / FLUX_SINGLE_BLOCKS)
        return names[first:]
    picked = list(blocks)
    if not picked or any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < count for i in picked):
        raise ValueError(f"v_inject: blocks must be indices in [0, {count - 1}] (single-stream blocks), got {picked!r}")
    return [names[i] for i in sorted(set(picked))]


@contextlib.contextmanager
def value_injection(transformer: Any, names: Sequence[str], state: InjectionState) -> Iterator[None]:
    """Install :class:`ValueInjectionProcessor` on the named layers; restore every processor on exit."""
    saved = transformer.attn_processors
    mine = {name: ValueInjectionProcessor(saved[name], state, name) for name in names}
    transformer.set_attn_processor({name: mine.get(name, proc) for name, proc in saved.items()})
    try:
        yield
    finally:
        transformer.set_attn_processor(dict(saved))


def injected_edit(
    adapter: Any,
    result: InversionResult,
    grid: Grid,
    source_cond: Conditioning,
    target_cond: Conditioning,
    *,
    inject: int = 1,
    blocks: Blocks = "auto",
    denoiser: Denoiser | None = None,
) -> Tensor:
    """The edited latent at ``grid.levels[0]``: the target prompt's sampling of ``result`` with the
    source's single-block values injected in the first ``inject`` denoising steps.

    ``denoiser`` (default ``adapter.denoiser()``) makes every call, e.g. a counting wrapper: the
    edit costs two sampling passes when ``inject > 0``, one when ``inject == 0``.
    """
    transformer = flux_transformer(adapter)
    if not isinstance(inject, int) or isinstance(inject, bool) or not 0 <= inject <= grid.num_steps:
        raise ValueError(f"v_inject: inject must be an integer in [0, {grid.num_steps}] (the schedule's steps), "
                         f"got {inject!r}")
    if (source_cond.negative is None) != (target_cond.negative is None):
        raise ValueError("v_inject: source and target conditionings must both use guidance or both not")
    names = single_block_names(transformer, blocks)
    state = InjectionState(threshold_s=grid.levels[grid.num_steps - inject].s)
    window = WindowDenoiser(denoiser if denoiser is not None else adapter.denoiser(), state)
    with value_injection(transformer, names, state):
        if inject > 0:
            state.start("record")
            reconstruct(window, result, grid, source_cond)
        state.start("inject" if inject > 0 else "off")
        edited = reconstruct(window, result, grid, target_cond)
    state.values.clear()
    return edited
