"""Options that a wrong implementation could ignore and still pass (issue 17, item 6).

Each test computes the option's effect by hand (plain torch/numpy, or diffusers' and torch's own
implementations as the oracle) on a toy where the option changes the answer, and asserts that
it does. The "network" of the by-hand cases is a nonlinear, timestep-dependent eps model
(``TanhEps``), so the first prediction's timestep and every iterate matter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines import anderson, ddim, fixed_point, gradient_descent, negative_prompt, renoise
from gnri.core import Conditioning, Grid, Level, Prediction, Tensor, sample_step
from gnri.models.common import to_prediction
from gnri.toy import LinearEpsDenoiser

COND = Conditioning({})
F64 = torch.float64
W = torch.tensor([[0.9, -0.6, 0.3], [0.4, 0.7, -0.5], [-0.2, 0.8, 1.1]], dtype=F64)


def _vp(alphabar: float, t: float) -> Level:
    return Level(t, math.sqrt(alphabar), math.sqrt(1.0 - alphabar))


STEP = Grid((_vp(0.93, 1.0), _vp(0.55, 2.0)))
# ReNoise's first-step rule: VE sigma s/a < 0.6958 on the first step (0.58), not on the second (1.22).
TWO = Grid((_vp(0.93, 1.0), _vp(0.75, 2.0), _vp(0.4, 3.0)))


def _x(seed: int = 0, batch: int = 2) -> Tensor:
    return torch.randn(batch, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)


def eps_net(z: Tensor, t: float) -> Tensor:
    """The toy network: eps = tanh(W z) (1 + t / 10) (depends on t, not on the level's scales)."""
    return torch.tanh(z @ W.T) * (1.0 + t / 10.0)


class TanhEps:
    """:func:`eps_net` as a denoiser (eps-prediction, converted with the level's own scales)."""

    def forwards_per_call(self, cond: Conditioning) -> int:
        return 1

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        eps = eps_net(z, level.t)
        return Prediction((z - level.s * eps) / level.a, eps)


def f_vp(eps: Tensor, x: Tensor, xl: Level, zl: Level) -> Tensor:
    """Eq. 4 of arXiv 2312.12540: the z that DDIM-steps onto x with eps held fixed."""
    return zl.a * (x - xl.s * eps) / xl.a + zl.s * eps


# ------------------------------------------------------------------ keep_best


def test_keep_best_returns_the_first_iterate_when_fixed_point_diverges() -> None:
    """eps = 4 z makes the implicit map expand (f' = 1.87 on this step): each iterate's residual
    grows, so keep_best returns f(x) (DDIM inversion) and the plain method the last f."""
    xl, zl = STEP.levels
    den, x = LinearEpsDenoiser(4.0), _x(0)
    iterates = [x]
    for _ in range(5):
        iterates.append(f_vp(4.0 * iterates[-1], x, xl, zl))
    assert (iterates[2] - iterates[1]).abs().max() > (iterates[1] - iterates[0]).abs().max()  # diverging
    for module, extra in ((fixed_point, {"max_iters": 5}), (anderson, {"max_iters": 2})):
        n = extra["max_iters"]
        best = module.invert(den, x, STEP, COND, keep_best=True, **extra).z
        last = module.invert(den, x, STEP, COND, keep_best=False, **extra).z
        torch.testing.assert_close(best, iterates[1], rtol=0, atol=1e-12)
        torch.testing.assert_close(last, iterates[n], rtol=0, atol=1e-10)  # anderson: no mixing yet at 2


# ------------------------------------------------------------------ ReNoise's averaging windows


def renoise_by_hand(x0: Tensor, grid: Grid, num: int, first_num: int, late: tuple[int, int],
                    early: tuple[int, int], average: bool = True) -> Tensor:
    """ReNoise (Garibi et al. 2024, ``inversion_step``): z^(i+1) = f(eps(z^(i))); the output is
    f(mean of eps_i over the window, half-open); the first-step rule on s/a < 0.6958."""
    x = x0
    for i in range(grid.num_steps):
        xl, zl = grid.levels[i], grid.levels[i + 1]
        first = zl.s / zl.a < 0.6958
        n = min(first_num, num) if first else num
        lo, hi = early if first else late
        z, kept = x, []
        for k in range(n + 1):
            eps = eps_net(z, zl.t)
            if lo <= k < hi:
                kept.append(eps)
            z = f_vp(eps, x, xl, zl)
        x = f_vp(torch.stack(kept).mean(0), x, xl, zl) if average and kept else z
    return x


@pytest.mark.parametrize(
    "options",
    [
        {},  # the code's defaults: 9 renoising steps, windows [8, 10) and [0, 5), 5 on the first step
        {"num_renoise_steps": 6, "max_first_step_renoise_steps": 3, "average_range": (2, 5),
         "first_step_average_range": (1, 3)},
    ],
    ids=["defaults", "custom"],
)
def test_renoise_averaging_windows_by_hand(options: dict) -> None:
    x0 = _x(1)
    num = options.get("num_renoise_steps", 9)
    first_num = options.get("max_first_step_renoise_steps", 5)
    late = tuple(options.get("average_range", (8, 10)))
    early = tuple(options.get("first_step_average_range", (0, 5)))
    want = renoise_by_hand(x0, TWO, num, first_num, late, early)  # type: ignore[arg-type]
    got = renoise.invert(TanhEps(), x0, TWO, COND, **options).z
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    shifted = renoise_by_hand(x0, TWO, num, first_num, (late[0] - 1, late[1] - 1), early)  # type: ignore[arg-type]
    assert (shifted - want).abs().max() > 1e-8  # the window is visible on this toy


# ------------------------------------------------------------------ negative-prompt's slerp


def slerp_by_hand(val: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Shoemake's slerp per sample (flattened): sin((1-v)W)/sin W low + sin(v W)/sin W high."""
    out = []
    for a, b in zip(low.reshape(len(low), -1), high.reshape(len(high), -1)):
        omega = math.acos(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        out.append((math.sin((1 - val) * omega) * a + math.sin(val * omega) * b) / math.sin(omega))
    return np.stack(out).reshape(low.shape)


def test_negative_prompt_interp_slerps_from_the_prompt_toward_the_null_embedding() -> None:
    """NPI with ``interp`` (PnPInversion's ``npi_interp``): the replayed negative is
    slerp(interp, prompt, null) per sample; interp = 0 is the prompt itself."""
    g = torch.Generator().manual_seed(5)
    pos, null = torch.randn(2, 4, 5, generator=g, dtype=F64), torch.randn(2, 4, 5, generator=g, dtype=F64)
    cond = Conditioning({"prompt_embeds": pos}, {"prompt_embeds": null}, 7.5)
    x0 = _x(2)
    for interp in (0.3, 0.8):
        res = negative_prompt.invert(LinearEpsDenoiser(0.2), x0, STEP, cond, interp=interp)
        got = res.cond_per_step[0].negative["prompt_embeds"]
        want = torch.from_numpy(slerp_by_hand(interp, pos.numpy(), null.numpy()))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        assert (got - ((1 - interp) * pos + interp * null)).abs().max() > 1e-3  # not a lerp
    plain = negative_prompt.invert(LinearEpsDenoiser(0.2), x0, STEP, cond)
    assert torch.equal(plain.cond_per_step[0].negative["prompt_embeds"], pos)


# ------------------------------------------------------------------ ddim's timestep convention


@pytest.mark.parametrize("timestep", ["dst", "src"])
def test_ddim_timestep_option_feeds_the_network_that_level(timestep: str) -> None:
    """``dst``: eps(z_{t-1}, t) (DDIMInverseScheduler); ``src``: eps(z_{t-1}, t-1), the level the
    latent sits at. The toy's eps depends on t, so the two differ."""
    x0 = _x(3)
    x, want = x0, [x0]
    for i in range(TWO.num_steps):
        xl, zl = TWO.levels[i], TWO.levels[i + 1]
        x = f_vp(eps_net(x, (zl if timestep == "dst" else xl).t), x, xl, zl)
        want.append(x)
    res = ddim.invert(TanhEps(), x0, TWO, COND, timestep=timestep)
    for got, w in zip(res.trajectory, want):
        torch.testing.assert_close(got, w, rtol=0, atol=1e-12)
    other = ddim.invert(TanhEps(), x0, TWO, COND, timestep="src" if timestep == "dst" else "dst").z
    assert (other - res.z).abs().max() > 1e-3


# ------------------------------------------------------------------ Anderson's damping


def anderson_by_hand(x: Tensor, xl: Level, zl: Level, window: int, iters: int, beta: float) -> Tensor:
    """Walker & Ni (2011) Alg. AA with damping: g_k = f(z_k), F_k = g_k - z_k,
    gamma = argmin ||F_k - dF gamma|| (numpy lstsq), z_{k+1} = z_k + beta F_k - (dZ + beta dF) gamma
    with dZ = dG - dF (the z differences); returns the last g."""
    out = []
    for xb in x:
        z, zs, Fs, Gs = xb.numpy(), [], [], []
        for k in range(iters):
            g = f_vp(eps_net(torch.from_numpy(z)[None], zl.t)[0], xb, xl, zl).numpy()
            F = g - z
            zs.append(z)
            Fs.append(F)
            Gs.append(g)
            if k == iters - 1:
                break
            m = min(window, k)
            z_next = z + beta * F
            if m:
                dF = np.stack([Fs[j + 1] - Fs[j] for j in range(k - m, k)], axis=1)
                dX = np.stack([zs[j + 1] - zs[j] for j in range(k - m, k)], axis=1)
                gamma, *_ = np.linalg.lstsq(dF, F, rcond=None)
                z_next = z_next - (dX + beta * dF) @ gamma
            z = z_next
        out.append(Gs[-1])
    return torch.from_numpy(np.stack(out))


def test_anderson_damping_below_one_by_hand() -> None:
    x = _x(4)
    xl, zl = STEP.levels
    want = anderson_by_hand(x, xl, zl, window=2, iters=5, beta=0.5)
    got = anderson.invert(TanhEps(), x, STEP, COND, window=2, max_iters=5, damping=0.5, regularization=0.0).z
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    undamped = anderson_by_hand(x, xl, zl, window=2, iters=5, beta=1.0)
    assert (undamped - want).abs().max() > 1e-6
    torch.testing.assert_close(
        anderson.invert(TanhEps(), x, STEP, COND, window=2, max_iters=5, regularization=0.0).z, undamped,
        rtol=0, atol=1e-9,
    )


# ------------------------------------------------------------------ gradient descent's schedule


def gd_by_hand(x: Tensor, gain: float, step_size: float, iters: int, warmup: int, factor: float,
               patience: int, threshold: float) -> tuple[Tensor, list[float]]:
    """ExactDPM's forward-step method from DDIM inversion: z <- z - eta r(z); eta rises linearly
    over ``warmup`` iterations, then is the lr of torch's own ReduceLROnPlateau fed ||r||^2."""
    xl, zl = STEP.levels
    outs, lrs = [], []
    for xb in x:
        z = f_vp(gain * xb, xb, xl, zl)  # DDIM inversion (eps = gain z, evaluated at x)
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=step_size)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=factor, patience=patience, threshold=threshold, threshold_mode="rel", eps=0.0,
        )
        for k in range(iters):
            eps = gain * z
            r = xl.a * (z - zl.s * eps) / zl.a + xl.s * eps - xb  # r(z) = sample_step(pred(z)) - x
            eta = opt.param_groups[0]["lr"] if k >= warmup else step_size * (k + 1) / warmup
            z = z - eta * r
            plateau.step(float(r.pow(2).sum()))
        outs.append(z)
        lrs.append(opt.param_groups[0]["lr"])
    return torch.stack(outs), lrs


def test_gradient_descent_warmup_and_plateau_schedule_by_hand() -> None:
    """r is affine with slope 1 here (eps = 0.5 z), so eta > 2 diverges: the full step size 3
    diverges after the 4-iteration warm-up, the plateau rule halves it, and it converges."""
    x, gain = _x(5), 0.5
    opts = {"step_size": 3.0, "warmup_iters": 4, "plateau_factor": 0.5, "plateau_patience": 2,
            "plateau_threshold": 1e-4}
    want, lrs = gd_by_hand(x, gain, 3.0, 8, 4, 0.5, 2, 1e-4)
    assert all(lr == 1.5 for lr in lrs)  # the plateau rule fired once
    got = gradient_descent.invert(LinearEpsDenoiser(gain), x, STEP, COND, max_iters=8, tol=None, **opts).z
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    no_warmup, _ = gd_by_hand(x, gain, 3.0, 8, 0, 0.5, 2, 1e-4)
    assert (no_warmup - want).abs().max() > 1e-5  # the warm-up changes the answer on this toy
    no_plateau, _ = gd_by_hand(x, gain, 3.0, 8, 4, 0.5, 100, 1e-4)
    assert (no_plateau - want).abs().max() > 1e-3  # without the plateau rule the error doubles per step


# ------------------------------------------------------------------ prediction conversions vs diffusers


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_vp_prediction_conversion_matches_ddim_scheduler_step(prediction_type: str) -> None:
    """``to_prediction`` + the shared step == diffusers' DDIMScheduler.step (eta 0) on random
    (z, output): x0 is its ``pred_original_sample``, the step its ``prev_sample``."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, prediction_type=prediction_type)
    sched.set_timesteps(10)
    ab = sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(6)
    for t in (int(sched.timesteps[0]), int(sched.timesteps[4]), int(sched.timesteps[-1])):
        z, out = torch.randn(2, 4, 8, 8, generator=g, dtype=F64), torch.randn(2, 4, 8, 8, generator=g, dtype=F64)
        prev_t = t - 1000 // 10
        ab_prev = ab[prev_t] if prev_t >= 0 else sched.final_alpha_cumprod.double()
        src = Level(float(t), float(ab[t].sqrt()), float((1 - ab[t]).sqrt()))
        dst = Level(float(prev_t), float(ab_prev.sqrt()), float((1 - ab_prev).sqrt()))
        ref = sched.step(out, t, z)
        pred = to_prediction(out, z, src, prediction_type)  # type: ignore[arg-type]
        torch.testing.assert_close(pred.x0, ref.pred_original_sample.double(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sample_step(pred, src, dst), ref.prev_sample.double(), rtol=1e-5, atol=1e-5)


def test_flow_velocity_conversion_matches_flow_match_euler_step() -> None:
    """``to_prediction(..., 'flow')`` + the shared step == FlowMatchEulerDiscreteScheduler.step on
    random (z, velocity) at every step of a shifted 4-step schedule (the last lands on sigma = 0,
    where the step IS the x0 estimate)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(4)
    sigmas = [float(s) for s in sched.sigmas]
    g = torch.Generator().manual_seed(7)
    for i, t in enumerate(sched.timesteps):
        z, v = torch.randn(2, 16, 8, generator=g, dtype=F64), torch.randn(2, 16, 8, generator=g, dtype=F64)
        ref = sched.step(v, t, z).prev_sample.double()
        src, dst = Level(sigmas[i], 1 - sigmas[i], sigmas[i]), Level(sigmas[i + 1], 1 - sigmas[i + 1], sigmas[i + 1])
        pred = to_prediction(v, z, src, "flow")
        torch.testing.assert_close(sample_step(pred, src, dst), ref, rtol=1e-5, atol=1e-5)
        if sigmas[i + 1] == 0.0:
            torch.testing.assert_close(pred.x0, ref, rtol=1e-5, atol=1e-5)
