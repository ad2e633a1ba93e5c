"""Anderson mixing (type II; Walker & Ni 2011), shared by every Anderson-accelerated solver.

Per sample (batch row), never mixing the batch into one problem; the small least-squares
problem is solved on the latent's device in float64.
"""

from __future__ import annotations

import torch

from gnri.core.types import Tensor


def mixing_coefficients(dF: list[Tensor], F: Tensor, regularization: float) -> Tensor:
    """Per-sample ``argmin_gamma ||F - dF gamma||`` with a Tikhonov term: (B, m), ``F``'s dtype.

    ``regularization`` scales the largest diagonal entry of each sample's Gram matrix.
    """
    A = torch.stack([d.flatten(1) for d in dF], dim=-1).double()  # (B, D, m)
    gram = A.transpose(1, 2) @ A  # (B, m, m)
    rhs = A.transpose(1, 2) @ F.flatten(1).double().unsqueeze(-1)  # (B, m, 1)
    scale = gram.diagonal(dim1=1, dim2=2).amax(dim=1)  # (B,)
    ridge = regularization * scale + torch.finfo(torch.float64).tiny
    eye = torch.eye(len(dF), dtype=gram.dtype, device=gram.device)
    gamma = torch.linalg.solve(gram + ridge[:, None, None] * eye, rhs)
    return gamma.squeeze(-1).to(F.dtype)


def combine(columns: list[Tensor], gamma: Tensor) -> Tensor:
    """``sum_j gamma[:, j] * columns[j]`` for (B, ...) columns and (B, m) coefficients."""
    stacked = torch.stack(columns, dim=-1)
    return (stacked * gamma.view(gamma.shape[0], *([1] * (stacked.ndim - 2)), -1)).sum(-1)
