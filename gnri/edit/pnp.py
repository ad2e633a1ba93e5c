"""Plug-and-Play feature and self-attention injection (Tumanyan et al., CVPR 2023, arXiv 2211.12572).

"Plug-and-Play Diffusion Features for Text-Driven Image-to-Image Translation". The official
diffusers code is ``MichalGeyer/plug-and-play`` (``pnp.py``, ``pnp_utils.py``); PIE-Bench runs the
same code as ``cure-lab/PnPInversion`` ``run_editing_pnp.py`` (read for this transcription: its
``PNP.denoise_step``, ``register_conv_control_efficient``, ``register_attention_control_efficient``).

The loop (paper Sec. 4, Eqs. 2-4 and Alg. 1): a *source* branch denoises the source's inverted
latent and a *target* branch denoises the same noisy latent with the target prompt; in every step
both run in one network batch, and

- while the step index ``k`` (0 = noisiest) is below ``int(feature_steps * n)`` (the code's
  ``conv_injection_timesteps = timesteps[:int(n * pnp_f_t)]``, ``pnp_f_t = 0.8``), the target's
  residual-block feature ``f_t^4`` is the source's: the code replaces the residual branch's output
  ``hidden_states`` after ``conv2`` (before the shortcut is added) of ``up_blocks[1].resnets[1]``
  in every target row with the source row (the paper's Eq. 3, ``f_t^4``, the 4th decoder layer);
- while ``k < int(attention_steps * n)`` (``qk_injection_timesteps``, ``pnp_attn_t = 0.5``), the
  target's self-attention queries and keys (``attn1``'s ``to_q``/``to_k`` outputs) of the decoder
  layers are the source's (Eq. 4; the code's ``res_dict = {1: [1, 2], 2: [0, 1, 2], 3: [0, 1, 2]}``
  of ``up_blocks[res].attentions[block].transformer_blocks[0].attn1``: every decoder
  self-attention but the first, "blocks 4 - 11 of the decoder").

Here the injection is two kinds of torch forward hooks installed through the adapter
(:meth:`~gnri.models.base.ModelAdapter.module_hooks`): on ``<resnet>.conv2`` (the same tensor the
code replaces) and on ``<attn1>.to_q`` / ``<attn1>.to_k``; the attention processor itself is the
model's own (no explicit-attention processor, so steps without injection are the plain network).
Steps are made with :func:`gnri.core.reconstruct` on the stacked ``[source; target]`` state
(:func:`gnri.edit.edit.stack_pair`), so whatever an inverter leaves besides the latent (null-text's
per-step negatives, EDICT's coupled sampler, a stored ancestral noise list) is replayed.

Layer choice (``"auto"``), a rule that gives the official layers on SD 1.x/2.x UNets:

- features: ``up_blocks.1.resnets.1`` if the network has it, else the last up block's last resnet;
- attention: the ``transformer_blocks.0.attn1`` of every up-block attention, in network order,
  except the first (on SD: ``up_blocks.1.attentions.1`` .. ``up_blocks.3.attentions.2``, the code's
  eight layers; on the tiny SD UNet: ``up_blocks.0.attentions.1``); if there is only one, that one.

NFE: one denoiser call per step on the stacked pair (``num_steps * forwards_per_call``, as P2P
here); the batch is twice the width.

Deviations from the official code, named:

- the source branch *regenerates* from the inverted latent with ``source`` (as PnPInversion's
  ``ddim+pnp``, whose source latents are the DDIM regeneration with the source prompt; the official
  ``MichalGeyer`` code and ``directinversion+pnp`` feed the stored inversion latents instead);
  PnPInversion's ``ddim+pnp`` also starts from the regeneration's *first* denoised latent and feeds
  the source branch one step behind (``latent_reconstruction.reverse()`` drops ``x_T``): not copied,
  both branches start from the inversion's ``z`` at the same step;
- the source branch is run with the ``source`` conditioning at the edit guidance, and under
  classifier-free guidance each guidance branch of the source donates to the same branch of the
  target (negative -> negative, positive -> positive; so target = source gives the source exactly);
  the code runs one source pass with the empty prompt and no guidance
  (``pnp_guidance_embeds = get_text_embeds("", "")``) and writes it into both target branches
  (with the negative prompt ``""`` our negative branch's donor is that pass; the positive branch's
  donor sees the source prompt instead of ``""``). Without guidance (the oracle test) the rows are
  the code's ``[source, cond]``;
- the target's negative prompt is the run's (PnPInversion: "ugly, blurry, black, low res,
  unrealistic"); the code's ``self.t == 1000`` always-inject case never arises on a 50-step grid and
  is not copied; no ``scheduler.step``: the shared sampler of :mod:`gnri.core` steps both branches;
- batched over B (source, target) pairs; the code edits one image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from gnri.core import Conditioning, Denoiser, Grid, InversionResult, Level, Prediction, Tensor, reconstruct
from gnri.edit.edit import stack_pair
from gnri.models.base import ModelAdapter

FEATURE_STEPS = 0.8  # pnp_f_t of the official config / PnPInversion's run_pnp
ATTENTION_STEPS = 0.5  # pnp_attn_t
OFFICIAL_FEATURE_LAYER = "up_blocks.1.resnets.1"
_RESNET = re.compile(r"^up_blocks\.(\d+)\.resnets\.(\d+)$")
_SELF_ATTENTION = re.compile(r"^up_blocks\.\d+\.attentions\.\d+\.transformer_blocks\.0\.attn1$")


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"pnp: {name} must be a fraction of the steps in [0, 1], got {value}")
    return value


def default_feature_layers(names: Sequence[str]) -> list[str]:
    """``up_blocks.1.resnets.1`` if present, else the last up block's last resnet (module docstring)."""
    if OFFICIAL_FEATURE_LAYER in names:
        return [OFFICIAL_FEATURE_LAYER]
    found = [tuple(int(g) for g in m.groups()) for n in names if (m := _RESNET.match(n))]
    if not found:
        raise ValueError("pnp: the network has no up_blocks.<i>.resnets.<j> to take features from")
    block, res = max(found)
    return [f"up_blocks.{block}.resnets.{res}"]


def default_attention_layers(names: Sequence[str]) -> list[str]:
    """Every up-block ``transformer_blocks.0.attn1`` in network order but the first (module docstring)."""
    found = [n for n in names if _SELF_ATTENTION.match(n)]
    if not found:
        raise ValueError("pnp: the network has no up-block self-attention (transformer_blocks.0.attn1)")
    return found[1:] if len(found) > 1 else found


@dataclass
class PnPState:
    """Which step the current denoiser call makes and how its batch is laid out.

    The network batch of one call is ``branches x [source_1..B; target_1..B]`` (guidance branches
    ``[negative, positive]``); :meth:`inject` writes each guidance branch's source rows into the
    same branch's target rows of a hooked module's output, while the matching schedule is active.
    """

    num_pairs: int
    num_steps: int
    feature_steps: float
    attention_steps: float
    step: int | None = field(default=None, init=False)
    branches: int = field(default=1, init=False)
    injections: int = field(default=0, init=False)  # tensors replaced so far (a diagnostic)

    def active(self, kind: str) -> bool:
        if self.step is None:
            return False
        frac = self.feature_steps if kind == "feature" else self.attention_steps
        return self.step < int(self.num_steps * frac)

    def inject(self, output: Tensor) -> Tensor:
        rows = output.shape[0]
        if rows != self.branches * 2 * self.num_pairs:
            raise ValueError(f"pnp: hooked batch {rows} is not {self.branches} branches x 2 x {self.num_pairs} pairs")
        view = output.reshape(self.branches, 2, self.num_pairs, *output.shape[1:])
        self.injections += 1
        return torch.stack([view[:, 0], view[:, 0]], dim=1).reshape(output.shape)

    def hook(self, kind: str) -> Any:
        def forward_hook(module: Any, args: Any, output: Tensor) -> Tensor | None:
            return self.inject(output) if self.active(kind) else None

        return forward_hook


@dataclass
class PnPDenoiser:
    """Sets the state's step (from the call's level on ``grid``) and guidance branches per call."""

    denoiser: Denoiser
    state: PnPState
    grid: Grid

    def forwards_per_call(self, cond: Conditioning) -> int:
        return self.denoiser.forwards_per_call(cond)

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        noisy = [lv.t for lv in self.grid.levels[1:]]
        if level.t not in noisy:
            raise ValueError(f"pnp: the denoiser was called at t={level.t}, not a noisy level of the grid")
        self.state.step = self.grid.num_steps - 1 - noisy.index(level.t)
        self.state.branches = 2 if cond.uses_cfg else 1
        try:
            return self.denoiser(z, level, cond)
        finally:
            self.state.step = None


def pnp_sample(
    adapter: ModelAdapter,
    result: InversionResult,
    grid: Grid,
    source: Conditioning,
    target: Conditioning,
    *,
    denoiser: Denoiser,
    feature_steps: float = FEATURE_STEPS,
    attention_steps: float = ATTENTION_STEPS,
    feature_layers: Sequence[str] | str = "auto",
    attention_layers: Sequence[str] | str = "auto",
) -> tuple[Tensor, Tensor]:
    """(source regeneration, PnP edit) latents at ``grid.levels[0]``; see :func:`edit`."""
    if adapter.network_kind != "unet":
        raise ValueError(f"pnp: needs a UNet model; {adapter.name!r} has none (its network: {adapter.network_kind})")
    state = PnPState(result.z.shape[0], grid.num_steps, _fraction("feature_steps", feature_steps),
                     _fraction("attention_steps", attention_steps))
    names = adapter.module_names()
    feats = default_feature_layers(names) if feature_layers == "auto" else list(feature_layers)
    attns = default_attention_layers(names) if attention_layers == "auto" else list(attention_layers)
    hooks = {f"{name}.conv2": state.hook("feature") for name in feats}
    hooks.update({f"{name}.{proj}": state.hook("attention") for name in attns for proj in ("to_q", "to_k")})
    pair_result, pair_cond = stack_pair(result, source, target)
    with adapter.module_hooks(hooks):
        out = reconstruct(PnPDenoiser(denoiser, state, grid), pair_result, grid, pair_cond)
    batch = result.z.shape[0]
    return out[:batch], out[batch:]


def edit(
    adapter: ModelAdapter,
    result: InversionResult,
    grid: Grid,
    source: Conditioning,
    target: Conditioning,
    *,
    denoiser: Denoiser,
    x0: Tensor | None = None,
    feature_steps: float = FEATURE_STEPS,
    attention_steps: float = ATTENTION_STEPS,
    feature_layers: Sequence[str] | str = "auto",
    attention_layers: Sequence[str] | str = "auto",
) -> Tensor:
    """The Plug-and-Play edit at ``grid.levels[0]`` (the editor contract; ``x0`` is not used).

    ``feature_steps`` / ``attention_steps``: the fraction of sampling steps, noisiest first, with
    feature / query-key injection (official 0.8 / 0.5). ``feature_layers``: resnet module names
    (their ``conv2`` output is injected); ``attention_layers``: ``attn1`` module names (their
    ``to_q``/``to_k`` outputs are injected); ``"auto"``: the rule of the module docstring.
    A ValueError (one line) on a network that is not a UNet.
    """
    return pnp_sample(
        adapter, result, grid, source, target, denoiser=denoiser, feature_steps=feature_steps,
        attention_steps=attention_steps, feature_layers=feature_layers, attention_layers=attention_layers,
    )[1]
