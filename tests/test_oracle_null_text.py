"""Oracle for null-text inversion: the official optimisation loop transcribed by hand.

``NullInversion`` of google/prompt-to-prompt ``null_text_w_ptp.ipynb`` (Mokady et al. 2023,
Algorithm 1), written out here with torch only: ``ddim_loop`` (the pivot, guidance 1, the network
fed the noisier timestep, the cleaner level's alphas converting its output), then
``null_optimization`` (per denoising step ``i``: Adam on the unconditional embedding with
``lr * (1 - lr_decay * i)`` -- ``1e-2 * (1 - i / 100)`` in the notebook -- for up to
``num_inner_steps`` iterations of ``mse_loss(prev_step(CFG eps), pivot)``, break once
``loss < early_stop + slope * i``, then step the latent with the optimised embedding), and the
replay with the stored embeddings. DDIM steps are written from the levels' ``a`` and ``s``
(``x0 = (z - s eps) / a``, ``z' = a' x0 + s' eps``); nothing here calls ``baselines.ddim``,
``gnri.core``'s loop or its sampler. The toy network predicts eps from the timestep only (as a
real eps network does) and depends on its embedding differentiably.
"""

from __future__ import annotations

import pytest
import torch

from baselines import null_text
from gnri.core import Conditioning, Level, Prediction, reconstruct
from gnri.toy import vp_grid

F64 = torch.float64
C = 4
W = torch.tensor([[0.9, -0.3, 0.2, 0.1], [0.4, 0.7, -0.5, 0.0], [-0.2, 0.3, 1.1, 0.2], [0.1, -0.4, 0.3, 0.8]],
                 dtype=F64)


class EmbeddingEps:
    """eps = tanh(W z (1 + t/1000) / 2 + emb): depends on the embedding ``emb`` (B or 1, C, 1, 1),
    on the timestep only through ``t`` (never the level's scales); CFG as a real adapter applies it."""

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 2 if cond.uses_cfg else 1

    @staticmethod
    def eps(z: torch.Tensor, t: float, emb: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.einsum("ij,bjhw->bihw", W, z) * (1.0 + t / 1000.0) / 2 + emb)

    def __call__(self, z: torch.Tensor, level: Level, cond: Conditioning) -> Prediction:
        def one(branch: dict) -> Prediction:
            e = self.eps(z, level.t, branch["emb"])
            return Prediction((z - level.s * e) / level.a, e)

        pos = one(cond.positive)
        if not cond.uses_cfg:
            return pos
        neg = one(cond.negative)  # type: ignore[arg-type]
        w = cond.guidance_scale
        return Prediction(neg.x0 + w * (pos.x0 - neg.x0), neg.eps + w * (pos.eps - neg.eps))


def _ddim(z: torch.Tensor, eps: torch.Tensor, src: Level, dst: Level) -> torch.Tensor:
    """DDIM (eta 0) from level ``src`` to ``dst`` with the noise prediction ``eps``."""
    return dst.a * (z - src.s * eps) / src.a + dst.s * eps


def notebook_null_text(x0, levels, pos, uncond, guidance, *, num_inner_steps, lr, lr_decay, early_stop, slope):
    """``NullInversion.ddim_loop`` + ``null_optimization`` + the replay, by hand.

    Returns (pivot latents z*_0..z*_T, per denoising step i the optimised embedding and the
    number of Adam iterations, the final latent of the optimisation loop, the replayed image)."""
    n = len(levels) - 1
    # ddim_loop: guidance 1, the source prompt; the network sees the next (noisier) timestep
    latents = [x0]
    z = x0
    for k in range(n):
        cur, nxt = levels[k], levels[k + 1]
        z = _ddim(z, EmbeddingEps.eps(z, nxt.t, pos), cur, nxt)
        latents.append(z)
    # null_optimization
    embeddings, iterations = [], []
    latent_cur = latents[-1]
    for i in range(n):
        uncond = uncond.clone().detach()
        uncond.requires_grad = True
        optimizer = torch.optim.Adam([uncond], lr=lr * (1.0 - lr_decay * i))
        latent_prev = latents[len(latents) - i - 2]
        t_level, prev_level = levels[n - i], levels[n - i - 1]
        with torch.no_grad():
            noise_pred_cond = EmbeddingEps.eps(latent_cur, t_level.t, pos)
        j = 0
        for j in range(num_inner_steps):
            noise_pred_uncond = EmbeddingEps.eps(latent_cur, t_level.t, uncond)
            noise_pred = noise_pred_uncond + guidance * (noise_pred_cond - noise_pred_uncond)
            latents_prev_rec = _ddim(latent_cur, noise_pred, t_level, prev_level)
            loss = torch.nn.functional.mse_loss(latents_prev_rec, latent_prev)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if loss.item() < early_stop + i * slope:
                break
        iterations.append(j + 1 if num_inner_steps else 0)
        embeddings.append(uncond.detach().clone())
        with torch.no_grad():
            e_u = EmbeddingEps.eps(latent_cur, t_level.t, uncond)
            e_c = EmbeddingEps.eps(latent_cur, t_level.t, pos)
            latent_cur = _ddim(latent_cur, e_u + guidance * (e_c - e_u), t_level, prev_level)
    # replay (the editing pipeline with the source prompt and the stored embeddings)
    z = latents[-1]
    with torch.no_grad():
        for i in range(n):
            t_level, prev_level = levels[n - i], levels[n - i - 1]
            e_u = EmbeddingEps.eps(z, t_level.t, embeddings[i])
            e_c = EmbeddingEps.eps(z, t_level.t, pos)
            z = _ddim(z, e_u + guidance * (e_c - e_u), t_level, prev_level)
    return latents, embeddings, iterations, latent_cur, z


SETTINGS = [
    # the notebook's constants (lr 1e-2 * (1 - i/100), epsilon 1e-5 + i * 2e-5)
    {"num_inner_steps": 10, "lr": 1e-2, "lr_decay": 1e-2, "early_stop": 1e-5, "early_stop_slope": 2e-5},
    # another parameterisation: an early stop that fires at some steps and not at others
    {"num_inner_steps": 6, "lr": 4e-2, "lr_decay": 0.1, "early_stop": 0.03, "early_stop_slope": 0.01},
]


@pytest.mark.parametrize("options", SETTINGS, ids=["notebook", "decayed_early_stop"])
def test_null_text_is_the_notebook_loop(options: dict) -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, C, 5, 5, generator=g, dtype=F64)
    null = 0.2 * torch.randn(1, C, 1, 1, generator=g, dtype=F64)
    pos = null + 0.05 * torch.randn(1, C, 1, 1, generator=g, dtype=F64)
    grid, guidance = vp_grid(6), 7.5
    cond = Conditioning({"emb": pos}, {"emb": null}, guidance)
    levels = list(grid.levels)

    with torch.no_grad():  # as the harness runs it
        result = null_text.invert(EmbeddingEps(), x0, grid, cond, **options)
    latents, embeddings, iterations, final, replayed = notebook_null_text(
        x0, levels, pos, null, guidance, num_inner_steps=options["num_inner_steps"], lr=options["lr"],
        lr_decay=options["lr_decay"], early_stop=options["early_stop"], slope=options["early_stop_slope"],
    )
    n = grid.num_steps
    for got, want in zip(result.trajectory, latents):  # the pivot
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.z, latents[-1], rtol=0, atol=1e-12)
    assert result.cond_per_step is not None and len(result.cond_per_step) == n
    for i in range(n):  # per denoising step i (0 = noisiest): stored at grid index n - 1 - i
        stored = result.cond_per_step[n - 1 - i]
        assert stored.guidance_scale == guidance and stored.positive["emb"] is pos
        torch.testing.assert_close(stored.negative["emb"], embeddings[i], rtol=0, atol=1e-10,  # type: ignore[index]
                                   msg=lambda m, i=i: f"step {i}: {m}")
    assert [result.steps[n - 1 - i].iters for i in range(n)] == iterations
    with torch.no_grad():
        rebuilt = reconstruct(EmbeddingEps(), result, grid, cond)
    torch.testing.assert_close(rebuilt, final, rtol=0, atol=1e-10)
    torch.testing.assert_close(rebuilt, replayed, rtol=0, atol=1e-10)
    # the oracle is not vacuous: the embeddings moved, differ per step, and beat the plain null
    assert all((e - null).abs().max() > 1e-4 for e in embeddings)
    assert (embeddings[0] - embeddings[-1]).abs().max() > 1e-4
    if options["lr"] == 4e-2:  # the early stop fires at some steps and not at others
        assert min(iterations) < options["num_inner_steps"] == max(iterations), iterations
    else:
        assert max(iterations) == options["num_inner_steps"], iterations
    plain = latents[-1]
    with torch.no_grad():
        for i in range(n):
            t_level, prev_level = levels[n - i], levels[n - i - 1]
            e_u, e_c = EmbeddingEps.eps(plain, t_level.t, null), EmbeddingEps.eps(plain, t_level.t, pos)
            plain = _ddim(plain, e_u + guidance * (e_c - e_u), t_level, prev_level)
    assert (final - x0).pow(2).mean() < (plain - x0).pow(2).mean()
