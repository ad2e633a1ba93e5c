"""The diffusers side of Prompt-to-Prompt: an attention processor that exposes the probabilities.

Adapter-side code (the only module of :mod:`gnri.edit` that touches diffusers objects): the
processor is diffusers' ``AttnProcessor`` (``diffusers/models/attention_processor.py``, 0.42)
with one line added, ``probs = controller(probs, is_cross, place)`` between
``attn.get_attention_scores`` and ``torch.bmm(probs, value)``. It computes attention
explicitly (no fused scaled-dot-product kernel), so results differ from the default processor
by round-off only. :func:`attention_control` installs it on every attention layer of a UNet
with ``set_attn_processor`` and restores the previous processors on exit.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

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


@contextlib.contextmanager
def attention_control(unet: Any, controller: Controller) -> Iterator[None]:
    """Route every attention layer of ``unet`` through ``controller`` inside the block."""
    saved = unet.attn_processors
    unet.set_attn_processor({name: P2PAttnProcessor(controller, place_in_unet(name)) for name in saved})
    try:
        yield
    finally:
        unet.set_attn_processor(saved)
