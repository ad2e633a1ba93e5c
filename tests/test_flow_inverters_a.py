"""RF-Inversion, Uni-Inv (+ Uni-Edit) and FTEdit against known answers (issue 15, first half).

Oracles, independent of the code under test:
- RF-Inversion with ``gamma = 0`` is Euler inversion (``baselines.ddim`` on the flow grid); with
  ``gamma = 1`` it lands on its target noise; its controlled reverse ODE with ``eta = 1`` on every
  step lands on the source latent; both loops agree with a transcription of diffusers' community
  pipeline ``pipeline_flux_rf_inversion.py`` on a uniform grid (where ``t_i = i / N`` is the grid).
- Uni-Inv's inversion and one Uni-Edit step, and FTEdit's fixed-point step, agree with by-hand
  transcriptions of the official loops (``DSL-Lab/UniEdit-Flow`` ``flux/sampling.py``;
  ``Pengchengpcx/FTEdit`` ``inversion/flow_fixpoint_residual_new.py``) on two steps of an
  analytic velocity field, written here with plain tensor ops.
- Round trips on the analytic Gaussian flow of :mod:`gnri.toy` close to the stated tolerances.
- One run.py multirun on tiny_flux (every row ok); a VP grid is a one-line ValueError naming the
  inverter, which the harness records as skipped.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from baselines import ddim, ftedit, rf_inversion, uni_inv
from eval.data import sample_dataset
from eval.tasks.reconstruct import evaluate
from eval.metrics import build_metrics
from eval.records import RESULTS_FILE, read_records
from gnri.core import Conditioning, CountingDenoiser, Grid, Level, Prediction, Tensor, reconstruct, sample
from gnri.models.base import ScheduleSpec
from gnri.toy import GaussianDenoiser, flow_grid, vp_grid

ROOT = Path(__file__).resolve().parents[1]
COND = Conditioning({})
SOURCE = Conditioning({"shift": torch.tensor(0.0, dtype=torch.float64)})
TARGET = Conditioning({"shift": torch.tensor(0.7, dtype=torch.float64)})
SHAPE = (2, 6, 5)  # (B, tokens, features): the packed Flux layout
NETWORK_ROWS = ("time_network_call_s", "time_network_backward_s", "overhead_ratio_bare",  # time_network=false
                "residual_rms_mean", "residual_rms_max")  # unavailable for a method with its own sampler


@dataclass
class AffineField:
    """An analytic velocity ``v(z, sigma) = (1 + sigma) w * z + (cos(sigma) + shift) b`` (per-element w, b)."""

    w: Tensor
    b: Tensor

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 1

    def velocity(self, z: Tensor, sigma: float, cond: Conditioning) -> Tensor:
        return (1.0 + sigma) * self.w * z + (math.cos(sigma) + cond.positive.get("shift", 0.0)) * self.b

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        v = self.velocity(z, level.s, cond)
        return Prediction(z - level.s * v, z + level.a * v)  # eps - x0 == v, a x0 + s eps == z


def _field(batch: int = SHAPE[0]) -> AffineField:
    g = torch.Generator().manual_seed(1)
    shape = (batch, *SHAPE[1:])
    return AffineField(0.4 * torch.randn(shape, generator=g, dtype=torch.float64),
                       torch.randn(shape, generator=g, dtype=torch.float64))


def _x0(batch: int = SHAPE[0], seed: int = 0) -> Tensor:
    return torch.randn((batch, *SHAPE[1:]), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gauss() -> GaussianDenoiser:
    std = torch.linspace(0.3, 1.4, math.prod(SHAPE[1:]), dtype=torch.float64).reshape(1, *SHAPE[1:])
    return GaussianDenoiser(mean=0.2, std=std)


def _data(den: GaussianDenoiser, seed: int = 0) -> Tensor:
    return den.mean + den.std * _x0(seed=seed)


def _sigmas(grid: Grid) -> list[float]:
    return [level.s for level in grid.levels]


# ---------------------------------------------------------------- RF-Inversion


@pytest.mark.parametrize("timestep", ["src", "dst"])
def test_rf_inversion_gamma0_is_euler_inversion(timestep: str) -> None:
    den, grid = _gauss(), flow_grid(6, shift=3.0)
    x0 = _data(den)
    rf = rf_inversion.invert(den, x0, grid, COND, gamma=0.0, timestep=timestep)
    euler = ddim.invert(den, x0, grid, COND, timestep=timestep)
    for a, b in zip(rf.trajectory, euler.trajectory):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_rf_inversion_gamma1_lands_on_its_target_noise() -> None:
    den, grid = _gauss(), flow_grid(5, shift=3.0)
    x0 = _data(den)
    result = rf_inversion.invert(den, x0, grid, COND, gamma=1.0, seed=11)
    y1 = torch.randn(SHAPE[1:], generator=torch.Generator().manual_seed(11), dtype=torch.float32).to(x0.dtype)
    torch.testing.assert_close(result.z, y1.expand_as(x0), rtol=0, atol=1e-12)
    assert not torch.allclose(rf_inversion.invert(den, x0, grid, COND, gamma=0.5, seed=11).z, y1.expand_as(x0))


def test_rf_inversion_reverse_ode_eta1_lands_on_source_and_eta0_is_euler() -> None:
    den, grid = _gauss(), flow_grid(7, shift=3.0)
    x0 = _data(den)
    full = rf_inversion.invert(den, x0, grid, COND, gamma=0.5, eta=1.0, start=0.0, stop=1.0)
    torch.testing.assert_close(reconstruct(den, full, grid, COND), x0, rtol=0, atol=1e-10)
    plain = rf_inversion.invert(den, x0, grid, COND, gamma=0.0, eta=0.0)
    torch.testing.assert_close(reconstruct(den, plain, grid, COND), sample(den, plain.z, grid, COND), rtol=0, atol=1e-12)


def test_rf_inversion_matches_the_community_pipeline_on_a_uniform_grid() -> None:
    """Transcription of ``invert`` (Algorithm 1) and ``__call__`` (Algorithm 2) with ``sigmas = linspace(1, 0)``."""
    field, n, gamma, eta, stop = _field(), 8, 0.5, 0.9, 0.25
    grid = flow_grid(n, shift=1.0)  # sigma_i = i / N: the pipeline's t_i
    x0 = _x0()
    result = rf_inversion.invert(field, x0, grid, SOURCE, gamma=gamma, eta=eta, start=0.0, stop=stop, seed=3)
    y1 = result.extras["target_noise"]
    sigmas = [1.0 - k / n for k in range(n)] + [0.0]  # descending, as the scheduler's
    y = x0.clone()
    for i in range(n):
        t_i = i / n
        u = field.velocity(y, t_i, SOURCE)
        u_hat = u + gamma * ((y1 - y) / (1 - t_i) - u)
        y = y + u_hat * (sigmas[i] - sigmas[i + 1])
    torch.testing.assert_close(result.z, y, rtol=0, atol=1e-12)
    latents, first, last = y, int(0.0 * n), min(int(stop * n), n)
    for i in range(n):
        t_i = 1 - sigmas[i]
        v_t = -field.velocity(latents, sigmas[i], TARGET)
        v_hat = v_t + eta * ((x0 - latents) / (1 - t_i) - v_t) if first <= i < last else v_t
        latents = latents + v_hat * (sigmas[i] - sigmas[i + 1])
    torch.testing.assert_close(reconstruct(field, result, grid, TARGET), latents, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- Uni-Inv / Uni-Edit


def test_uni_inv_matches_a_transcription_of_denoise_uniinv_on_two_steps() -> None:
    field, grid = _field(), flow_grid(2, shift=3.0)
    x0 = _x0()
    ts = _sigmas(grid)  # ascending: the code's reversed timesteps
    img, nxt = x0.clone(), None
    for t_curr, t_prev in zip(ts[:-1], ts[1:]):
        pred = field.velocity(img, t_curr, SOURCE) if nxt is None else nxt
        img_next = img + (t_prev - t_curr) * pred
        nxt = field.velocity(img_next, t_prev, SOURCE)
        img = img + (t_prev - t_curr) * nxt
    counting = CountingDenoiser(field)
    result = uni_inv.invert(counting, x0, grid, SOURCE)
    torch.testing.assert_close(result.z, img, rtol=0, atol=1e-12)
    assert counting.counter.forward == 3 and result.iterations == [2, 1]  # N + 1 calls


def test_uni_edit_step_matches_a_transcription_of_edit_uniedit() -> None:
    """One denoising step (batch 1: the code normalises the mask over the batch)."""
    field, grid, omega = _field(batch=1), flow_grid(1), 5.0
    z = _x0(batch=1, seed=4)
    result = uni_inv.invert(field, _x0(batch=1), grid, SOURCE, omega=omega)
    t_curr, t_prev = grid.levels[1].s, grid.levels[0].s
    pred_trg, pred_src = field.velocity(z, t_curr, TARGET), field.velocity(z, t_curr, SOURCE)
    cfg = pred_trg - pred_src
    m = cfg.abs().mean(dim=2, keepdim=True)
    m = (m - m.min()) / (m.max() - m.min())
    pred = m * pred_trg + (1 - m) * pred_src + (m + 1) * omega * cfg
    expected = z + (t_prev - t_curr) * pred
    torch.testing.assert_close(result.sampler(field, grid, TARGET, z), expected, rtol=0, atol=1e-12)


def test_uni_edit_with_the_source_prompt_is_one_call_euler() -> None:
    field, grid = _field(), flow_grid(4, shift=3.0)
    result = uni_inv.invert(field, _x0(), grid, SOURCE)
    counting = CountingDenoiser(field)
    same = Conditioning({"shift": SOURCE.positive["shift"].clone()})  # equal tensors, another object
    torch.testing.assert_close(reconstruct(counting, result, grid, same), sample(field, result.z, grid, SOURCE),
                               rtol=0, atol=1e-12)
    assert counting.counter.forward == 4
    counting.counter.reset()
    reconstruct(counting, result, grid, TARGET)
    assert counting.counter.forward == 8
    assert uni_inv.invert(field, _x0(), grid, SOURCE, editing="euler").pure_latent


def test_same_conditioning_compares_every_branch_entry() -> None:
    from baselines.flow_common import same_conditioning

    emb = torch.ones(1, 3)
    base = Conditioning({"prompt_embeds": emb, "guidance": 3.5})
    assert same_conditioning(base, Conditioning({"prompt_embeds": emb.clone(), "guidance": 3.5}))
    assert not same_conditioning(base, Conditioning({"prompt_embeds": emb, "guidance": 1.0}))
    assert not same_conditioning(base, Conditioning({"prompt_embeds": emb, "guidance": torch.tensor([3.5])}))
    assert not same_conditioning(base, Conditioning({"prompt_embeds": emb + 1, "guidance": 3.5}))
    assert not same_conditioning(base, Conditioning(base.positive, {"prompt_embeds": emb}, 2.0))


# ---------------------------------------------------------------- FTEdit


def test_ftedit_matches_a_transcription_of_fixpoint_step_on_two_steps() -> None:
    field, grid, k, avg = _field(), flow_grid(2, shift=3.0), 2, (0, 5)
    x0 = _x0()
    ts = _sigmas(grid)
    latent, latents = x0.clone(), [x0.clone()]
    for i in range(2):
        sigma, sigma_next = ts[i], ts[i + 1]
        approx, mean_v = latent.clone(), None
        for j in range(k + 1):
            v = field.velocity(approx, sigma_next, SOURCE)  # the network sees the noisier level's time
            if avg[0] <= j < avg[1]:
                jj = j - avg[0]
                mean_v = v.clone() if jj == 0 else (jj * mean_v + v) / (jj + 1)
            approx = latent + (sigma_next - sigma) * v
        latent = latent + (sigma_next - sigma) * mean_v
        latents.append(latent)
    counting = CountingDenoiser(field)
    result = ftedit.invert(counting, x0, grid, SOURCE, num_fixpoint_steps=k, average_range=list(avg))
    for a, b in zip(result.trajectory, latents):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert counting.counter.forward == 6
    # an empty averaging range keeps the last fixed-point iterate (the code's ``ave_noise`` fallback)
    last = ftedit.invert(field, x0, grid, SOURCE, num_fixpoint_steps=1, average_range=[3, 5])
    v0 = field.velocity(x0, ts[1], SOURCE)
    v1 = field.velocity(x0 + (ts[1] - ts[0]) * v0, ts[1], SOURCE)
    torch.testing.assert_close(last.trajectory[1], x0 + (ts[1] - ts[0]) * v1, rtol=0, atol=1e-12)


def test_ftedit_residual_modes() -> None:
    den, grid = _gauss(), flow_grid(6, shift=3.0)
    x0 = _data(den)
    counting = CountingDenoiser(den)
    src = ftedit.invert(den, x0, grid, COND)
    torch.testing.assert_close(reconstruct(counting, src, grid, COND), x0, rtol=0, atol=1e-10)
    assert counting.counter.forward == 6
    edit = Conditioning({"shift": torch.tensor(0.5, dtype=torch.float64)})
    torch.testing.assert_close(reconstruct(den, src, grid, edit), sample(den, src.z, grid, edit), rtol=0, atol=1e-12)
    counting.counter.reset()
    every = ftedit.invert(counting, x0, grid, COND, residual="all")
    assert counting.counter.forward == 6 * 3 + 6  # the stored residuals cost one call per step
    torch.testing.assert_close(reconstruct(den, every, grid, COND), x0, rtol=0, atol=1e-10)
    assert not torch.allclose(reconstruct(den, every, grid, edit), sample(den, every.z, grid, edit))
    assert ftedit.invert(den, x0, grid, COND, residual="none").pure_latent


# ---------------------------------------------------------------- round trips and refusals


def test_round_trips_on_the_gaussian_flow() -> None:
    """28 steps, shift 3: Uni-Inv and FTEdit's inversion alone beat Euler; exact where residuals are kept."""
    den, grid = _gauss(), flow_grid(28, shift=3.0)
    x0 = _data(den)

    def err(result) -> float:
        return float((reconstruct(den, result, grid, COND) - x0).abs().max())

    euler = err(ddim.invert(den, x0, grid, COND))
    assert 0.1 < euler < 1.0
    assert err(uni_inv.invert(den, x0, grid, COND)) < min(0.05, euler / 5)
    assert err(ftedit.invert(den, x0, grid, COND, residual="none")) < min(0.05, euler / 5)
    assert err(ftedit.invert(den, x0, grid, COND)) < 1e-10
    assert err(rf_inversion.invert(den, x0, grid, COND, eta=1.0, stop=1.0)) < 1e-10
    assert err(rf_inversion.invert(den, x0, grid, COND, gamma=0.0, eta=0.0)) == pytest.approx(euler, rel=1e-9)


@pytest.mark.parametrize("module", [rf_inversion, uni_inv, ftedit], ids=lambda m: m.METHOD)
def test_vp_grids_are_refused_in_one_line(module) -> None:
    den = _gauss()
    with pytest.raises(ValueError) as err:
        module.invert(den, _data(den), vp_grid(3), COND)
    text = str(err.value)
    assert "\n" not in text and f"inverter {module.METHOD}" in text and "flow" in text


@pytest.mark.parametrize("module,options", [
    (rf_inversion, {"gamma": 1.5}), (rf_inversion, {"eta": -0.1}), (rf_inversion, {"start": 0.5, "stop": 0.25}),
    (rf_inversion, {"seed": -1}), (rf_inversion, {"timestep": "mid"}),
    (uni_inv, {"omega": -1.0}), (uni_inv, {"editing": "p2p"}),
    (ftedit, {"num_fixpoint_steps": -1}), (ftedit, {"average_range": [3, 1]}), (ftedit, {"residual": "half"}),
], ids=str)
def test_bad_options_raise_naming_them(module, options) -> None:
    den = _gauss()
    with pytest.raises(ValueError, match=f"inverter {module.METHOD}: {next(iter(options))}"):
        module.invert(den, _data(den), flow_grid(2), COND, **options)


def test_harness_skips_vp_models(tiny_sd_adapter) -> None:
    df = evaluate(tiny_sd_adapter, ScheduleSpec("ddim", 2), functools.partial(uni_inv.invert), "uni_inv",
                  sample_dataset()[:1], build_metrics(["psnr"]), warmup=0, progress=False, time_network=False,
                  inverter_params={})
    assert (df["status"] == "skipped").all() and df["reason"].str.contains("inverter uni_inv: needs a rectified-flow").all()


def test_run_py_on_tiny_flux(tmp_path: Path) -> None:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "model=tiny_flux", "schedule=flow4", "inverter=rf_inversion",
         "max_images=1", "progress=false", "warmup=0", "time_network=false", f"hydra.run.dir={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = read_records(out / RESULTS_FILE)
    assert set(df["inverter"]) == {"rf_inversion"}
    assert df[~df["metric"].isin(NETWORK_ROWS)]["status"].eq("ok").all()
    assert float(df[df["metric"] == "nfe_forward"]["value"].iloc[0]) == 4.0


@pytest.mark.parametrize("module,nfe", [(uni_inv, 5.0), (ftedit, 12.0)], ids=["uni_inv", "ftedit"])
def test_harness_on_tiny_flux(tiny_flux_adapter, module, nfe: float) -> None:
    df = evaluate(tiny_flux_adapter, ScheduleSpec("flow_euler", 4), functools.partial(module.invert), module.METHOD,
                  sample_dataset()[:1], build_metrics(["psnr"]), warmup=0, progress=False, time_network=False,
                  inverter_params={})
    assert df[~df["metric"].isin(NETWORK_ROWS)]["status"].eq("ok").all()
    assert float(df[df["metric"] == "nfe_forward"]["value"].iloc[0]) == nfe
    assert float(df[df["metric"] == "nfe_forward_reconstruct"]["value"].iloc[0]) == 4.0
