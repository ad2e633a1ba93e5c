"""FLUX's single-stream attention with replaceable values (value injection: RF-Edit, FireFlow).

:class:`ValueHookProcessor` stands in for diffusers' ``FluxAttnProcessor`` on a single-stream
block of ``FluxTransformer2DModel``. Each run asks ``hook(name, own_value)`` (``own_value()``
computes this layer's V, split into heads, only when called): None runs the processor it replaced
unchanged; a tensor runs the same single-stream computation as ``FluxAttnProcessor`` (same
projections, norms, rotary embedding and ``dispatch_attention_fn``) with that tensor as V. The
editor's bookkeeping (which pass, which call, the recorded values) is the hook's
(:mod:`gnri.edit.v_injection`).
"""

from __future__ import annotations

from typing import Any, Callable

from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb

from gnri.core import Tensor

ValueHook = Callable[[str, Callable[[], Tensor]], "Tensor | None"]


def _heads(attn: Any, x: Tensor) -> Tensor:
    return x.unflatten(-1, (-1, attn.head_dim))


def single_stream_qkv(attn: Any, hidden_states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Query, key, value of a single-stream attention layer (fused or not), split into heads."""
    if getattr(attn, "fused_projections", False):
        q, k, v = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    return _heads(attn, q), _heads(attn, k), _heads(attn, v)


class ValueHookProcessor:
    """``FluxAttnProcessor`` on a single-stream block with its value taken from ``hook`` (module docstring)."""

    def __init__(self, original: Any, hook: ValueHook, name: str) -> None:
        self.original = original
        self.hook = hook
        self.name = name

    def _single_stream(self, attn: Any, encoder_hidden_states: Tensor | None) -> None:
        if encoder_hidden_states is not None or getattr(attn, "added_kv_proj_dim", None) is not None:
            raise ValueError(f"v_inject: {self.name} is not a single-stream attention layer")

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Tensor:
        def own_value() -> Tensor:
            self._single_stream(attn, encoder_hidden_states)
            return single_stream_qkv(attn, hidden_states)[2]

        value = self.hook(self.name, own_value)
        if value is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        self._single_stream(attn, encoder_hidden_states)
        query, key, _ = single_stream_qkv(attn, hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        out = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask,
            backend=getattr(self.original, "_attention_backend", None),
            parallel_config=getattr(self.original, "_parallel_config", None),
        )
        return out.flatten(2, 3).to(query.dtype)
