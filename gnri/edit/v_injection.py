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

The model side is the adapter's (:class:`gnri.models.base.ModelAdapter`): it names its attention
layers (:meth:`attention_layers`), makes the single-stream processor whose values a hook can replace
(:meth:`value_processor`, :mod:`gnri.models.flux_attention`) and installs processors for a block,
restoring the previous ones on exit (:meth:`attention_processors`). This module keeps the editor's
bookkeeping (:class:`InjectionState`) and touches no diffusers object.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Level, Prediction, Tensor, reconstruct
from gnri.models.base import ModelAdapter

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

    def value_hook(self, name: str, own_value: Callable[[], Tensor]) -> Tensor | None:
        """The hook of layer ``name``'s processor: None runs the layer as it is (outside the window,
        or while recording: then ``own_value()`` is stored first); else the recorded value to use."""
        mode = self.now()
        if mode == "off":
            return None
        key = self.key(name)
        if mode == "record":
            self.values[key] = own_value()
            return None
        if key not in self.values:
            raise RuntimeError(f"v_inject: no source value for call {key[0]} of {name}; the passes differ")
        return self.values[key]


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


def single_stream_layers(adapter: ModelAdapter) -> list[str]:
    """The adapter's single-stream attention layers (a Flux transformer's), or ValueError."""
    names = adapter.attention_layers(SINGLE_PREFIX)
    if not names:
        raise ValueError(
            f"v_inject: needs a Flux transformer with single-stream blocks; model {adapter.name!r} has none"
        )
    return names


def single_block_names(layers: Iterable[str], blocks: Blocks = "auto") -> list[str]:
    """Processor names of the chosen single-stream blocks among attention layer names ``layers``
    (see the module docstring for ``blocks``)."""
    names = sorted((n for n in layers if n.startswith(SINGLE_PREFIX)),
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
def value_injection(adapter: ModelAdapter, names: Sequence[str], state: InjectionState) -> Iterator[None]:
    """The named layers run the adapter's value processor hooked to ``state``; every processor is
    restored on exit."""
    chosen = set(names)

    def make(name: str, processor: Any) -> Any:
        return adapter.value_processor(processor, state.value_hook, name) if name in chosen else processor

    with adapter.attention_processors(make):
        yield


def injected_edit(
    adapter: ModelAdapter,
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
    layers = single_stream_layers(adapter)
    if not isinstance(inject, int) or isinstance(inject, bool) or not 0 <= inject <= grid.num_steps:
        raise ValueError(f"v_inject: inject must be an integer in [0, {grid.num_steps}] (the schedule's steps), "
                         f"got {inject!r}")
    if (source_cond.negative is None) != (target_cond.negative is None):
        raise ValueError("v_inject: source and target conditionings must both use guidance or both not")
    names = single_block_names(layers, blocks)
    state = InjectionState(threshold_s=grid.levels[grid.num_steps - inject].s)
    window = WindowDenoiser(denoiser if denoiser is not None else adapter.denoiser(), state)
    with value_injection(adapter, names, state):
        if inject > 0:
            state.start("record")
            reconstruct(window, result, grid, source_cond)
        state.start("inject" if inject > 0 else "off")
        edited = reconstruct(window, result, grid, target_cond)
    state.values.clear()
    return edited


def __getattr__(name: str) -> Any:
    if name == "ValueInjectionProcessor":  # the processor class, on the model side (imports diffusers)
        from gnri.models.flux_attention import ValueHookProcessor

        return ValueHookProcessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
