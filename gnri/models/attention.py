"""Choose torch's scaled-dot-product-attention backend for a block of work.

``attention_backend("efficient")`` restricts ``F.scaled_dot_product_attention`` (which diffusers'
and transformers' attention layers call) to one kernel family; ``"default"`` leaves torch's own
choice. Why it matters here: on an H100 with torch 2.11 (cu130, cuDNN 9.19) the default cuDNN
backend's *backward* fails on FLUX.1-sized attention (``mha_graph.execute(...).is_good()``, then an
illegal memory access), so every inverter that differentiates through the network (``gnri`` with
its vector-Jacobian products, gradient descent, null-text) crashes there; ``efficient`` runs it
(measured with ``scripts/bench_scale.py``, see ``results/gpu_check``). ``flash`` refuses attention
with a bias or mask (T5's relative position bias), so it suits only networks without one.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

ATTENTION_BACKENDS = ("default", "efficient", "flash", "cudnn", "math")


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Run the block with SDPA restricted to backend ``name`` (one of ``ATTENTION_BACKENDS``)."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {name!r}")
    if name == "default":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    with sdpa_kernel(backend):
        yield
