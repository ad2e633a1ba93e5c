"""Pieces every adapter shares: prediction conversion, guidance, dtypes, VAE and batch plumbing.

Nothing here imports diffusers; the network output is a plain tensor by the time it arrives.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch

from gnri.core import Conditioning, Level, Prediction, Tensor

PredictionType = Literal["epsilon", "v_prediction", "sample", "flow"]
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float16"``/``"fp16"``-style names or a torch dtype -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp64": "float64"}
    name = aliases.get(dtype, dtype)
    if name not in DTYPES:
        raise ValueError(f"model dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    return DTYPES[name]


def pixel_size(image_size: int | Sequence[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    """The ``image_size`` option (an int, an (H, W) pair or None) as an (H, W) pair."""
    if image_size is None:
        return default
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = (int(v) for v in image_size)
    return (h, w)


def to_prediction(out: Tensor, z: Tensor, level: Level, prediction_type: PredictionType) -> Prediction:
    """Convert raw network output at ``level`` to ``Prediction(x0, eps)``, no clipping.

    ``epsilon``: eps = out. ``v_prediction`` (``v = a eps - s x0``, needs ``a^2 + s^2 = 1``):
    x0 = a z - s v, eps = a v + s z. ``sample``: x0 = out. ``flow`` (velocity ``v = eps - x0``,
    needs ``a + s = 1``): x0 = z - s v, eps = z + a v. Each satisfies ``a x0 + s eps = z``.
    """
    a, s = level.a, level.s
    if prediction_type == "epsilon":
        return Prediction((z - s * out) / a, out)
    if prediction_type == "v_prediction":
        return Prediction(a * z - s * out, a * out + s * z)
    if prediction_type == "sample":
        return Prediction(out, (z - a * out) / s)
    if prediction_type == "flow":
        return Prediction(z - s * out, z + a * out)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def guided(uncond: Prediction, cond: Prediction, scale: float) -> Prediction:
    """Classifier-free guidance on predictions: ``uncond + scale * (cond - uncond)``.

    The weights sum to one, so the invariant ``a x0 + s eps = z`` carries over; the conversion
    is affine in the network output, so this equals guiding the raw output.
    """
    return Prediction(
        uncond.x0 + scale * (cond.x0 - uncond.x0), uncond.eps + scale * (cond.eps - uncond.eps)
    )


def branches(cond: Conditioning) -> list[dict[str, Tensor]]:
    """The conditioning branches one call evaluates: ``[negative, positive]`` under CFG."""
    if cond.uses_cfg:
        return [cond.negative, cond.positive]  # type: ignore[list-item]
    return [cond.positive]


def batched(tensor: Tensor, batch: int, key: str) -> Tensor:
    """``tensor`` with leading dim ``batch`` (a batch-1 conditioning is broadcast)."""
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(f"conditioning {key!r} has batch {tensor.shape[0]}, latents have batch {batch}")


def stack_branches(parts: list[dict[str, Tensor]], key: str, batch: int, dtype: torch.dtype) -> Tensor:
    """Concatenate ``key`` over the branches (each broadcast to ``batch``) in ``dtype`` (one branch:
    no copy unless the dtype differs)."""
    if len(parts) == 1:
        return batched(parts[0][key], batch, key).to(dtype)
    return torch.cat([batched(p[key], batch, key) for p in parts]).to(dtype)


def repeat_branches(z: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """``z`` once per guidance branch, in the network's dtype (one branch: no copy)."""
    return (z if n == 1 else torch.cat([z] * n)).to(dtype)


def bare_call(network: Any, inputs: dict[str, Any], latent_key: str, grad: bool = False) -> Any:
    """A closure calling ``network(**inputs)`` as is; with ``grad``, a forward pass with a graph
    and one backward pass to ``inputs[latent_key]`` (what a vector-Jacobian product costs)."""
    if not grad:
        def forward() -> Any:
            with torch.no_grad():
                return network(**inputs)[0]

        return forward
    base = inputs[latent_key].detach()

    def forward_backward() -> Any:
        with torch.enable_grad():
            latent = base.clone().requires_grad_(True)
            out = network(**{**inputs, latent_key: latent})[0]
            return torch.autograd.grad(out, latent, torch.ones_like(out))[0]

    return forward_backward


def parameter_dtype(module: Any) -> torch.dtype:
    """The dtype of a network's first parameter: what its inputs are cast to. O(1), where diffusers'
    ``module.dtype`` walks every parameter on each call (about 10% of a small UNet's call on a CPU)."""
    return next(module.parameters()).dtype


def execution_device(module: Any) -> torch.device:
    """Where ``module`` runs: its offload hook's execution device (diffusers'
    ``enable_model_cpu_offload`` keeps it on the CPU until called), else its own device."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    return torch.device(device) if device is not None else module.device


def vae_encode(vae: Any, images: Tensor, scaling: float, shift: float) -> Tensor:
    """[0, 1] images -> ``(posterior mode - shift) * scaling``, float32 (float64 for a float64 VAE).
    An overflowing VAE gives non-finite latents, returned as they are (the caller checks)."""
    x = (2.0 * images - 1.0).to(device=execution_device(vae), dtype=vae.dtype)
    mode = vae.encode(x).latent_dist.mode()
    return ((mode - shift) * scaling).to(latent_dtype(vae.dtype))


def vae_decode(vae: Any, latents: Tensor, scaling: float, shift: float) -> Tensor:
    """Inverse of :func:`vae_encode`: latents -> [0, 1] images (clamped), float32 or float64.

    Non-finite values become NaN before the clamp: an overflowing VAE (inf, e.g. SDXL's VAE in
    float16) gives a NaN image that the caller's finiteness check refuses, never a white one."""
    x = (latents / scaling + shift).to(device=execution_device(vae), dtype=vae.dtype)
    image = vae.decode(x).sample.to(latent_dtype(vae.dtype))
    image = image.masked_fill(~torch.isfinite(image), float("nan"))
    return ((image + 1.0) / 2.0).clamp(0.0, 1.0)


def vae_dtype(network_dtype: torch.dtype, force_upcast: bool, never_half: bool = False) -> torch.dtype:
    """The VAE's dtype beside a network in ``network_dtype``: float32 where the network runs in
    float16 and the VAE config sets ``force_upcast`` (SD, SDXL: what diffusers' pipelines do before
    decoding) or the family's VAE never runs in float16 (``never_half``: FLUX.1's, which runs in
    bfloat16 or float32); else the network's own dtype."""
    if network_dtype == torch.float16 and (force_upcast or never_half):
        return torch.float32
    return network_dtype


def latent_dtype(network_dtype: torch.dtype) -> torch.dtype:
    """Latents and predictions are float32 under half precision, else the network's dtype."""
    return torch.promote_types(network_dtype, torch.float32)


def vae_factors(vae: Any) -> tuple[float, float]:
    """The VAE config's ``scaling_factor`` and ``shift_factor`` (0 when absent, as in SD)."""
    shift = getattr(vae.config, "shift_factor", None)
    return float(vae.config.scaling_factor), float(shift or 0.0)


def move(pipe: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``pipe`` on ``device``, cast to ``dtype`` only where it differs (diffusers warns on casts)."""
    pipe = pipe.to(device)
    return pipe if pipe.dtype == dtype else pipe.to(dtype=dtype)


def freeze(modules: Sequence[Any]) -> None:
    """Eval mode and no parameter gradients: inverters differentiate w.r.t. latents only."""
    for m in modules:
        if isinstance(m, torch.nn.Module):
            m.eval()
            m.requires_grad_(False)


def token_overflow(tokenizer: Any, text: str, max_length: int | None = None) -> int:
    """How many of ``text``'s tokens a pipeline drops: its token count, special tokens included,
    past ``max_length`` (default the tokenizer's ``model_max_length``, the length diffusers
    truncates CLIP prompts to); 0 when it fits."""
    limit = int(max_length if max_length is not None else tokenizer.model_max_length)
    ids = tokenizer(text, truncation=False, add_special_tokens=True, verbose=False)["input_ids"]
    return max(0, len(ids) - limit)


def truncation_warning(text: str, encoders: Sequence[tuple[str, Any, int]]) -> str | None:
    """One line saying which text encoders truncate ``text`` and by how many tokens, or None.

    ``encoders``: (name, tokenizer, max_length) per encoder; a None tokenizer is skipped.
    """
    parts = []
    for name, tokenizer, limit in encoders:
        dropped = token_overflow(tokenizer, text, limit) if tokenizer is not None else 0
        if dropped:
            parts.append(f"{name} keeps {limit} tokens, {dropped} dropped")
    return "caption truncated: " + "; ".join(parts) if parts else None
