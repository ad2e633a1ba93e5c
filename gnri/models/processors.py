"""Attention processors and hooks of the denoising networks, installed and restored by the adapters.

The adapter-side half of editing (:mod:`gnri.edit` holds the other, diffusers-free half):

- :func:`install_processors`: run a chosen processor on each attention layer of a UNet or Flux
  transformer for a block (``set_attn_processor``), every previous processor restored on exit;
  nothing is monkey-patched;
- :func:`install_module_hooks`: torch forward (pre-)hooks on named submodules for a block (feature
  recording and injection, e.g. PnP's resnet and attention features);
- :class:`P2PAttnProcessor`: diffusers' ``AttnProcessor`` (``diffusers/models/attention_processor.py``,
  0.42) with one line added, ``probs = controller(probs, is_cross, place)`` between
  ``attn.get_attention_scores`` and ``torch.bmm(probs, value)``. It computes attention explicitly
  (no fused scaled-dot-product kernel), so results differ from the default processor by round-off
  only (Prompt-to-Prompt);
- the Flux single-stream value processor lives in :mod:`gnri.models.flux_attention` (it calls
  diffusers' attention dispatch and rotary embedding).

Nothing here imports diffusers; processors receive diffusers ``Attention`` modules as ``attn``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import torch

# (probabilities (batch * heads, queries, keys), is_cross, place in the UNet) -> probabilities
Controller = Callable[[torch.Tensor, bool, str], torch.Tensor]
PLACES = ("down", "mid", "up")


def place_in_unet(name: str) -> str:
    """``down``, ``mid`` or ``up`` from a processor name such as ``down_blocks.1.attentions.0...``."""
    head = name.split(".", 1)[0]
    for place in PLACES:
        if head.startswith(place):
            return place
    return head


class P2PAttnProcessor:
    """diffusers' ``AttnProcessor`` with the attention probabilities passed through ``controller``."""

    def __init__(self, controller: Controller, place: str) -> None:
        self.controller = controller
        self.place = place

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        is_cross = encoder_hidden_states is not None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        query = attn.head_to_batch_dim(query)
        probs = attn.get_attention_scores(query, key, attention_mask)
        probs = self.controller(probs, is_cross, self.place)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attention_layers(network: Any, prefix: str = "") -> list[str]:
    """Processor names of ``network``'s attention layers that start with ``prefix``, in its order."""
    return [name for name in network.attn_processors if name.startswith(prefix)]


@contextlib.contextmanager
def install_processors(network: Any, make: Callable[[str, Any], Any]) -> Iterator[None]:
    """Inside the block layer ``name`` of ``network`` runs ``make(name, its processor now)``;
    every previous processor is restored on exit (also on an exception)."""
    saved = network.attn_processors
    network.set_attn_processor({name: make(name, proc) for name, proc in saved.items()})
    try:
        yield
    finally:
        network.set_attn_processor(dict(saved))


def module_names(network: Any, type_name: str | None = None) -> list[str]:
    """Names of ``network``'s submodules (``named_modules``; of class ``type_name`` only if given)."""
    return [n for n, m in network.named_modules() if n and (type_name is None or type(m).__name__ == type_name)]


@contextlib.contextmanager
def install_module_hooks(network: Any, hooks: Mapping[str, Callable[..., Any]], pre: bool = False) -> Iterator[None]:
    """Torch forward hooks (``pre``: forward pre-hooks) on the named submodules of ``network`` for
    the block, removed on exit; an unknown name is a ValueError before anything is installed."""
    modules = dict(network.named_modules())
    unknown = [name for name in hooks if name not in modules]
    if unknown:
        raise ValueError(f"module_hooks: {type(network).__name__} has no module {unknown[0]!r}")
    handles = [modules[name].register_forward_pre_hook(fn) if pre else modules[name].register_forward_hook(fn)
               for name, fn in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
