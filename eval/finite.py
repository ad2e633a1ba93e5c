"""Dtype safety: a non-finite latent or image is a failure with its reason, never a number.

Half precision overflows (float16's largest value is 65504; SDXL's VAE in float16 is the known
case), and an overflow becomes inf, then NaN. A NaN or inf latent, or a decoded image with one,
must not reach a metric: PSNR of a NaN image is NaN, and a clamped inf image is plain white.
:func:`check_finite` raises :class:`NonFiniteError` (a RuntimeError, so the harnesses record the
image as ``failed`` with the message) naming what was non-finite, how many values, and the dtype;
:func:`diverged_reason` is the short form for a method's own latents and their decoding.
"""

from __future__ import annotations

from typing import Any

import torch

from gnri.core import Tensor


class NonFiniteError(RuntimeError):
    """A latent or image with NaN or inf values (one line: what, how many, which dtype)."""


def nonfinite_reason(tensor: Tensor, what: str) -> str | None:
    """One line naming ``what`` and its NaN / inf counts if ``tensor`` has any, else None."""
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return None
    nan = int(torch.isnan(tensor).sum())
    inf = int((~finite).sum()) - nan
    dtype = str(tensor.dtype).removeprefix("torch.")
    return (f"non-finite values in the {what}: {nan} NaN, {inf} inf of {tensor.numel()} ({dtype}; "
            "a half-precision overflow or a diverging method)")


def diverged_reason(tensor: Tensor, stage: str) -> str | None:
    """``diverged: non-finite latent|image after <stage>`` if ``tensor`` has a NaN or inf, else None.

    The short form the harness records for a method's own output (one reason for every image that
    failed alike, so reports group them); :func:`nonfinite_reason` counts the values instead."""
    if bool(torch.isfinite(tensor).all()):
        return None
    return f"diverged: non-finite {'image' if stage == 'decoding' else 'latent'} after {stage}"


def check_finite(tensor: Tensor, what: str) -> Tensor:
    """``tensor`` itself if every value is finite, else raise :class:`NonFiniteError`."""
    reason = nonfinite_reason(tensor, what)
    if reason is not None:
        raise NonFiniteError(reason)
    return tensor


def checked_result(result: Any) -> Any:
    """``result`` if it is a :class:`gnri.core.InversionResult`, else a TypeError naming what the
    inverter returned (a plug-in's mistake becomes a ``failed`` row with that reason)."""
    from gnri.core import InversionResult

    if not isinstance(result, InversionResult):
        raise TypeError(f"the inverter returned a {type(result).__name__}, not a gnri.core.InversionResult")
    return result
