"""gnri.models.attention: restricting torch's SDPA backend changes the kernel, not the answer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gnri.models.attention import ATTENTION_BACKENDS, attention_backend
from gnri.core import sample
from gnri.models.base import ScheduleSpec
from gnri.models.tiny import tiny_adapter


def test_unknown_backend_names_the_option() -> None:
    with pytest.raises(ValueError, match="attention must be one of"):
        with attention_backend("fastest"):
            pass
    assert ATTENTION_BACKENDS[0] == "default"


def test_restriction_applies() -> None:
    """cuDNN attention has no CPU kernel, so restricting a CPU call to it must fail; math must agree."""
    q = torch.randn(1, 2, 8, 16)
    mask = torch.zeros(8, 8)
    with attention_backend("cudnn"), pytest.raises(RuntimeError):
        F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    with attention_backend("math"):
        out = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q, attn_mask=mask))


def test_tiny_sd_sampling_agrees_across_backends() -> None:
    adapter = tiny_adapter("sd")
    z = torch.randn(adapter.latent_shape(1), generator=torch.Generator().manual_seed(0))
    grid = adapter.grid(ScheduleSpec(kind="ddim", num_steps=3), z.shape)
    cond = adapter.encode_prompts(["a red circle"])
    den = adapter.denoiser()
    with torch.no_grad():
        ref = sample(den, z, grid, cond)
        with attention_backend("math"):
            got = sample(den, z, grid, cond)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
