"""FlowEdit (arXiv 2412.08629; ``fallenshock/FlowEdit``): oracles and the harness's handling.

- With the target prompt equal to the source prompt the velocity difference is exactly 0: the
  edit is the source latent, bit for bit (the analytic flow toy, and tiny_flux).
- On the analytic Gaussian flow field the edit equals a by-hand transcription of the public
  ``FlowEditFLUX`` loop (``T_steps - i > n_max`` skip, ``n_avg`` averaging, the ``n_min``
  SDEdit-style phase), never calling :mod:`baselines.flowedit`.
- The harness: reconstruction, interpolation and the exact track record ``skipped`` rows with
  the reason; ``task=edit`` on tiny_flux runs (no network call in "inversion").
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from baselines import flowedit
from eval.edit_data import world_edit_dataset
from eval.tasks.edit import EditSettings, evaluate_edits
from eval.tasks.exact import evaluate_exact
from eval.tasks.reconstruct import evaluate
from eval.data import sample_dataset
from eval.metrics import build_metrics
from eval.validate import task_refusal
from gnri.core import Conditioning, CountingDenoiser, Level, reconstruct
from gnri.models.base import ScheduleSpec
from gnri.toy import GaussianDenoiser, flow_grid, vp_grid

REASON = "flowedit is inversion-free editing; task=reconstruct does not apply"


def _toy() -> GaussianDenoiser:
    std = torch.linspace(0.3, 1.4, 2 * 4 * 4, dtype=torch.float64).reshape(2, 4, 4)
    return GaussianDenoiser(mean=0.2, std=std)


def _shift(value: float) -> dict[str, torch.Tensor]:
    return {"shift": torch.tensor(value, dtype=torch.float64)}


SRC = Conditioning(_shift(0.0), _shift(-0.3), 1.5)
TAR = Conditioning(_shift(0.7), _shift(-0.3), 5.5)


def _x0(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def test_same_prompt_returns_the_source_exactly_and_no_call_is_made_in_inversion() -> None:
    den, x0, grid = CountingDenoiser(_toy()), _x0(2), flow_grid(5, shift=3.0)
    result = flowedit.invert(den, x0, grid, SRC, n_max=4, n_avg=2)
    assert den.counter.forward == 0 and result.z is x0
    same = reconstruct(den, result, grid, SRC)
    assert torch.equal(same, x0)
    assert den.counter.forward == 2 * 2 * 4 * 2  # (target + source) x n_avg x steps x CFG branches


@torch.no_grad()
def test_tiny_flux_same_prompt_is_the_source_and_another_prompt_edits(tiny_flux_adapter) -> None:
    adapter = tiny_flux_adapter
    torch.manual_seed(0)
    latent = adapter.encode_images(torch.rand(1, 3, *adapter.image_size()))
    grid = adapter.grid(ScheduleSpec("flow_euler", 4), tuple(latent.shape))
    cond = adapter.encode_prompts(["a photo of a cat"])
    result = flowedit.invert(adapter.denoiser(), latent, grid, cond)
    assert torch.equal(reconstruct(adapter.denoiser(), result, grid, adapter.encode_prompts(["a photo of a cat"])),
                       latent)
    edited = reconstruct(adapter.denoiser(), result, grid, adapter.encode_prompts(["a photo of a dog"]))
    assert not torch.allclose(edited, latent, atol=1e-4)


def _velocity(den: GaussianDenoiser, z: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
    pred = den(z, Level(sigma, 1.0 - sigma, sigma), cond)
    return pred.eps - pred.x0


def official_flowedit(den, x_src, sigmas, tar, src, n_max, n_min, n_avg, seed):  # noqa: ANN001, ANN201
    """``FlowEditFLUX``'s loop; ``sigmas`` noisy -> clean ending with 0; draws as documented
    (a CPU generator seeded with ``seed``, one draw of one image's shape per use)."""
    gen = torch.Generator().manual_seed(seed)

    def randn() -> torch.Tensor:
        return torch.randn(x_src.shape[1:], generator=gen, dtype=torch.float32).to(x_src.dtype).expand_as(x_src)

    T = len(sigmas) - 1
    zt_edit, xt_tar = x_src.clone(), None
    for i in range(T):
        if T - i > n_max:
            continue
        t_i, t_im1 = sigmas[i], sigmas[i + 1]
        if T - i > n_min:
            v_delta = torch.zeros_like(x_src)
            for _ in range(n_avg):
                zt_src = (1 - t_i) * x_src + t_i * randn()
                zt_tar = zt_edit + zt_src - x_src
                v_delta += (1 / n_avg) * (_velocity(den, zt_tar, t_i, tar) - _velocity(den, zt_src, t_i, src))
            zt_edit = zt_edit + (t_im1 - t_i) * v_delta
        else:
            if i == T - n_min:
                xt_src = (1 - t_i) * x_src + t_i * randn()
                xt_tar = zt_edit + xt_src - x_src
            xt_tar = xt_tar + (t_im1 - t_i) * _velocity(den, xt_tar, t_i, tar)
    return zt_edit if n_min == 0 else xt_tar


@pytest.mark.parametrize("n_max, n_min, n_avg", [(2, 0, 1), (2, 0, 3), (3, 1, 2), (9, 0, 1)])
def test_matches_a_transcription_of_the_public_loop(n_max: int, n_min: int, n_avg: int) -> None:
    den, x0, grid = _toy(), _x0(2), flow_grid(3, shift=3.0)
    sigmas = [level.s for level in reversed(grid.levels)]
    result = flowedit.invert(den, x0, grid, SRC, n_max=n_max, n_min=n_min, n_avg=n_avg, seed=7)
    ours = reconstruct(den, result, grid, TAR)
    expected = official_flowedit(den, x0, sigmas, TAR, SRC, n_max, n_min, n_avg, 7)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    assert (ours - x0).abs().max() > 0.05  # it edits
    torch.testing.assert_close(reconstruct(den, result, grid, TAR), ours, rtol=0, atol=0)  # deterministic


@pytest.mark.parametrize("options, message", [
    ({"n_max": 0}, "n_max must be an integer >= 1"),
    ({"n_min": 3}, "n_min=3 must be < min\\(n_max, num_steps\\) = 3"),
    ({"n_avg": 0}, "n_avg must be an integer >= 1"),
])
def test_bad_options_and_grids_are_one_line(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"inverter flowedit: {message}"):
        flowedit.invert(_toy(), _x0(), flow_grid(3), SRC, **options)
    with pytest.raises(ValueError, match="inverter flowedit: needs a rectified-flow grid"):
        flowedit.invert(_toy(), _x0(), vp_grid(3), SRC)


def test_task_refusal_reads_the_inverter_through_partials() -> None:
    bound = functools.partial(flowedit.invert, n_max=3)
    assert task_refusal(bound, "edit") is None
    assert task_refusal(bound, "reconstruct").startswith(REASON)
    assert task_refusal(functools.partial(vp_grid), "reconstruct") is None  # no ``tasks``: every task


@torch.no_grad()
def test_harness_skips_reconstruction_exact_and_runs_edit(tiny_flux_adapter, tmp_path: Path) -> None:
    inverter = functools.partial(flowedit.invert, n_max=24)
    entries = sample_dataset()[:1]
    df = evaluate(tiny_flux_adapter, ScheduleSpec("flow_euler", 2), inverter, "flowedit", entries,
                  build_metrics(["psnr"]), warmup=0, progress=False)
    assert (df["status"] == "skipped").all() and df["reason"].str.startswith(REASON).all()
    exact = evaluate_exact(tiny_flux_adapter, ScheduleSpec("flow_euler", 2), inverter, "flowedit", entries,
                           progress=False)
    assert (exact["status"] == "skipped").all() and exact["reason"].str.contains("task=exact does not apply").all()
    pairs = world_edit_dataset(cache_dir=tmp_path / "world", max_pairs=1)
    edits = evaluate_edits(tiny_flux_adapter, ScheduleSpec("flow_euler", 3), inverter, "flowedit", pairs,
                           EditSettings(), progress=False, save_images=False)
    values = edits.set_index("metric")
    assert values.loc["nfe_forward", "value"] == 0 and values.loc["nfe_forward_edit", "value"] == 2 * 3
    assert values.loc["recon_psnr", "status"] == "ok" and values.loc["edit_success", "status"] == "ok"
