"""Oracle for negative-prompt inversion (NPI, Miyake et al. 2023) from its definition, by hand.

The latent is DDIM inversion with the source prompt at guidance 1 (``ddim_loop`` of
prompt-to-prompt / PnPInversion: the network fed the noisier timestep with ``timestep='dst'``,
the cleaner one with ``'src'``; the cleaner level's ``a, s`` convert its output), written here
from the levels' ``a`` and ``s`` without ``baselines.ddim`` or ``gnri.core``'s loop; the stored
negative is the source prompt embedding (``interp = 0``) or PnPInversion's ``slerp_tensor``
from it toward the null embedding, per sample; reconstruction is CFG with that negative,
replayed here by hand. The toy network (``EmbeddingEps``) reads the timestep only.
"""

from __future__ import annotations

import math

import pytest
import torch

from baselines import negative_prompt
from gnri.core import Conditioning, reconstruct
from gnri.toy import vp_grid
from test_oracle_null_text import C, F64, EmbeddingEps, _ddim

GUIDANCE = 7.5


def _setup(batch: int = 2):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(batch, C, 5, 5, generator=g, dtype=F64)
    pos = 0.6 * torch.randn(batch, C, 1, 1, generator=g, dtype=F64)
    null = 0.4 * torch.randn(batch, C, 1, 1, generator=g, dtype=F64)
    return x0, pos, null, vp_grid(5)


def _inversion_by_hand(x0, levels, pos, timestep: str) -> list[torch.Tensor]:
    chain, z = [x0], x0
    for k in range(len(levels) - 1):
        cur, nxt = levels[k], levels[k + 1]
        t = nxt.t if timestep == "dst" else cur.t
        z = _ddim(z, EmbeddingEps.eps(z, t, pos), cur, nxt)
        chain.append(z)
    return chain


def _cfg_sampling_by_hand(z, levels, pos, neg, w) -> torch.Tensor:
    for i in reversed(range(len(levels) - 1)):
        src, dst = levels[i + 1], levels[i]
        e_n, e_p = EmbeddingEps.eps(z, src.t, neg), EmbeddingEps.eps(z, src.t, pos)
        z = _ddim(z, e_n + w * (e_p - e_n), src, dst)
    return z


def _slerp_by_hand(v: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """PnPInversion's ``slerp`` on each sample's flattened tensor (non-parallel inputs here)."""
    rows = []
    for a, b in zip(low, high):
        fa, fb = a.flatten(), b.flatten()
        omega = math.acos(float(fa @ fb) / (float(fa.norm()) * float(fb.norm())))
        rows.append((math.sin((1 - v) * omega) * a + math.sin(v * omega) * b) / math.sin(omega))
    return torch.stack(rows)


@pytest.mark.parametrize("timestep", ["dst", "src"])
def test_npi_latent_is_ddim_inversion_at_guidance_one_by_hand(timestep: str) -> None:
    x0, pos, null, grid = _setup()
    cond = Conditioning({"emb": pos}, {"emb": null}, GUIDANCE)
    result = negative_prompt.invert(EmbeddingEps(), x0, grid, cond, timestep=timestep)
    chain = _inversion_by_hand(x0, list(grid.levels), pos, timestep)
    assert len(result.trajectory) == len(chain)
    for got, want in zip(result.trajectory, chain):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # guidance 1 matters: the guided (null-branch) inversion is another latent
    guided = [x0]
    for k in range(grid.num_steps):
        cur, nxt = grid.levels[k], grid.levels[k + 1]
        t = nxt.t if timestep == "dst" else cur.t
        e_n, e_p = EmbeddingEps.eps(guided[-1], t, null), EmbeddingEps.eps(guided[-1], t, pos)
        guided.append(_ddim(guided[-1], e_n + GUIDANCE * (e_p - e_n), cur, nxt))
    assert (guided[-1] - result.z).abs().max() > 1e-3


def test_npi_reconstruction_is_cfg_with_the_source_prompt_as_negative_by_hand() -> None:
    x0, pos, null, grid = _setup()
    cond = Conditioning({"emb": pos}, {"emb": null}, GUIDANCE)
    result = negative_prompt.invert(EmbeddingEps(), x0, grid, cond)
    assert result.cond_per_step is not None and len(result.cond_per_step) == grid.num_steps
    for c in result.cond_per_step:
        assert c.guidance_scale == GUIDANCE
        assert torch.equal(c.negative["emb"], pos)  # type: ignore[index]
    levels = list(grid.levels)
    want = _cfg_sampling_by_hand(result.z, levels, pos, pos, GUIDANCE)  # collapses to the positive branch
    torch.testing.assert_close(reconstruct(EmbeddingEps(), result, grid, cond), want, rtol=0, atol=1e-12)
    with_null = _cfg_sampling_by_hand(result.z, levels, pos, null, GUIDANCE)
    assert (with_null - want).abs().max() > 1e-3  # the stored negative is what made it


@pytest.mark.parametrize("interp", [0.3, 1.0])
def test_npi_interp_is_a_per_sample_slerp_toward_the_null_embedding(interp: float) -> None:
    x0, pos, null, grid = _setup()
    cond = Conditioning({"emb": pos}, {"emb": null}, GUIDANCE)
    result = negative_prompt.invert(EmbeddingEps(), x0, grid, cond, interp=interp)
    want_neg = _slerp_by_hand(interp, pos, null)
    if interp == 1.0:
        torch.testing.assert_close(want_neg, null, rtol=0, atol=1e-12)  # the oracle's own end point
    assert result.cond_per_step is not None
    for c in result.cond_per_step:
        torch.testing.assert_close(c.negative["emb"], want_neg, rtol=0, atol=1e-12)  # type: ignore[index]
    # per sample: the batch's other row does not enter a row's angle
    alone = negative_prompt.invert(EmbeddingEps(), x0[:1], grid, Conditioning({"emb": pos[:1]}, {"emb": null[:1]}, GUIDANCE),
                                   interp=interp)
    torch.testing.assert_close(alone.cond_per_step[0].negative["emb"], want_neg[:1], rtol=0, atol=1e-12)  # type: ignore[index]
    want = _cfg_sampling_by_hand(result.z, list(grid.levels), pos, want_neg, GUIDANCE)
    torch.testing.assert_close(reconstruct(EmbeddingEps(), result, grid, cond), want, rtol=0, atol=1e-12)
