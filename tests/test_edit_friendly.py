"""Edit-friendly DDPM inversion (arXiv 2304.06140; ``inbarhub/DDPM_inversion``): oracles.

- Exact reconstruction (float tolerance) on every family: the analytic Gaussian toy on VP grids
  (clean end ``a = 1`` and SD's ``alphas_cumprod[0]``) and a shifted flow grid, and tiny_sd
  (DDIM and Euler grids) and tiny_flux through the adapters.
- A by-hand transcription of the public code's ``sample_xts_from_x0`` / ``inversion_forward_process``
  / ``reverse_step`` in ``alphabar`` terms (``get_variance``, the ``eta * variance`` direction),
  never calling :mod:`baselines.edit_friendly`: its noise maps and its target-prompt edit.
- On flow levels the noise std is the DDPM posterior of the Gaussian path (Kingma et al. 2021,
  ``sigma_{t|s}^2 sigma_s^2 / sigma_t^2``), written out here.
"""

from __future__ import annotations

import math

import pytest
import torch

from baselines import edit_friendly
from gnri.core import Conditioning, CountingDenoiser, Grid, Level, reconstruct
from gnri.models.base import ScheduleSpec
from gnri.toy import GaussianDenoiser, flow_grid, vp_grid

SOURCE, TARGET = "a photo of a cat", "a photo of a dog"


def _toy() -> GaussianDenoiser:
    std = torch.linspace(0.3, 1.4, 2 * 4 * 4, dtype=torch.float64).reshape(2, 4, 4)
    return GaussianDenoiser(mean=0.2, std=std)


def _shift(value: float) -> dict[str, torch.Tensor]:
    return {"shift": torch.tensor(value, dtype=torch.float64)}


SRC = Conditioning(_shift(0.0), _shift(-0.3), 2.0)  # guided, so both branches matter
TAR = Conditioning(_shift(0.6), _shift(-0.3), 4.0)


def _x0(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("grid", [vp_grid(8), vp_grid(8, final_alpha_one=False), flow_grid(6, shift=3.0)],
                         ids=["vp_alpha_one", "vp_sd_end", "flow_shift3"])
@pytest.mark.parametrize("skip", [0.0, 0.36])
def test_toy_reconstruction_is_exact_and_a_target_prompt_edits(grid: Grid, skip: float) -> None:
    den, x0 = CountingDenoiser(_toy()), _x0()
    result = edit_friendly.invert(den, x0, grid, SRC, skip=skip)
    used = grid.num_steps - round(skip * grid.num_steps)
    assert den.counter.forward == 2 * used  # one guided call per step used
    assert result.trajectory[0] is x0 and result.z.shape == x0.shape
    torch.testing.assert_close(reconstruct(den, result, grid, SRC), x0, rtol=0, atol=1e-12)
    edited = reconstruct(den, result, grid, TAR)
    assert (edited - x0).abs().max() > 0.1


@pytest.mark.parametrize("kind", ["ddim", "euler"])
@torch.no_grad()
def test_tiny_sd_reconstruction_is_exact(tiny_sd_adapter, kind: str) -> None:
    adapter = tiny_sd_adapter
    torch.manual_seed(0)
    latent = adapter.encode_images(torch.rand(1, 3, *adapter.image_size()))
    grid = adapter.grid(ScheduleSpec(kind, 5, spacing="trailing" if kind == "euler" else "leading"), tuple(latent.shape))
    cond = adapter.encode_prompts([SOURCE], 3.5)
    result = edit_friendly.invert(adapter.denoiser(), latent, grid, cond, skip=0.0)
    rebuilt = reconstruct(adapter.denoiser(), result, grid, cond)
    torch.testing.assert_close(rebuilt, latent, rtol=0, atol=1e-5)
    edited = reconstruct(adapter.denoiser(), result, grid, adapter.encode_prompts([TARGET], 3.5))
    assert not torch.allclose(edited, latent, atol=1e-4)


@torch.no_grad()
def test_tiny_flux_reconstruction_is_exact(tiny_flux_adapter) -> None:
    adapter = tiny_flux_adapter
    torch.manual_seed(0)
    latent = adapter.encode_images(torch.rand(1, 3, *adapter.image_size()))
    grid = adapter.grid(ScheduleSpec("flow_euler", 4), tuple(latent.shape))
    cond = adapter.encode_prompts([SOURCE])
    result = edit_friendly.invert(adapter.denoiser(), latent, grid, cond)
    torch.testing.assert_close(reconstruct(adapter.denoiser(), result, grid, cond), latent, rtol=0, atol=1e-5)
    edited = reconstruct(adapter.denoiser(), result, grid, adapter.encode_prompts([TARGET]))
    assert not torch.allclose(edited, latent, atol=1e-4)


# --- by-hand transcription of inbarhub/DDPM_inversion (alphabar terms, eps network) ---------------------------
ALPHABARS = (0.9991, 0.80, 0.52, 0.23, 0.06)  # clean end = alphas_cumprod[0] (SD), then 4 noisier timesteps
TIMESTEPS = (0.0, 201.0, 451.0, 701.0, 951.0)


def _sd_grid() -> Grid:
    return Grid(tuple(Level(t, math.sqrt(ab), math.sqrt(1.0 - ab)) for t, ab in zip(TIMESTEPS, ALPHABARS)))


def _eps(den: GaussianDenoiser, x: torch.Tensor, k: int, cond: Conditioning) -> torch.Tensor:
    """The "UNet" (with its CFG) at timestep index ``k``: the toy's guided eps."""
    ab = ALPHABARS[k]
    return den(x, Level(TIMESTEPS[k], math.sqrt(ab), math.sqrt(1.0 - ab)), cond).eps


def _get_variance(k: int) -> float:
    ab_t, ab_prev = ALPHABARS[k], ALPHABARS[k - 1]
    return (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)


def _official_forward(den, x0, cond, eta, seed):  # noqa: ANN001, ANN202
    """``sample_xts_from_x0`` + ``inversion_forward_process`` (eta > 0 branch): (zs, xts)."""
    gen = torch.Generator().manual_seed(seed)  # the documented draw: one per level, cleanest first
    xts = [x0]
    for ab in ALPHABARS[1:]:
        n = torch.randn(x0.shape[1:], generator=gen, dtype=torch.float32).to(x0.dtype)
        xts.append(ab**0.5 * x0 + (1 - ab) ** 0.5 * n)
    zs = [None] * (len(ALPHABARS) - 1)
    for idx in reversed(range(len(zs))):
        k = idx + 1
        xt, xtm1 = xts[idx + 1], xts[idx]
        noise_pred = _eps(den, xt, k, cond)
        ab_t, ab_prev = ALPHABARS[k], ALPHABARS[k - 1]
        pred_original = (xt - (1 - ab_t) ** 0.5 * noise_pred) / ab_t**0.5
        variance = _get_variance(k)
        mu = ab_prev**0.5 * pred_original + (1 - ab_prev - eta * variance) ** 0.5 * noise_pred
        zs[idx] = (xtm1 - mu) / (eta * variance**0.5)
        xts[idx] = mu + eta * variance**0.5 * zs[idx]
    return zs, xts


def _official_reverse(den, xT, zs, cond, eta):  # noqa: ANN001, ANN202
    """``inversion_reverse_process`` with ``reverse_step`` from ``xT`` with the maps ``zs``."""
    xt = xT
    for idx in reversed(range(len(zs))):
        k = idx + 1
        noise_pred = _eps(den, xt, k, cond)
        ab_t, ab_prev = ALPHABARS[k], ALPHABARS[k - 1]
        pred_original = (xt - (1 - ab_t) ** 0.5 * noise_pred) / ab_t**0.5
        variance = _get_variance(k)
        xt = ab_prev**0.5 * pred_original + (1 - ab_prev - eta * variance) ** 0.5 * noise_pred
        xt = xt + eta * variance**0.5 * zs[idx]
    return xt


@pytest.mark.parametrize("eta", [1.0, 0.6])
def test_matches_a_transcription_of_the_public_code(eta: float) -> None:
    den, x0, grid = _toy(), _x0(1), _sd_grid()
    result = edit_friendly.invert(den, x0, grid, SRC, eta=eta, skip=0.0, seed=11)
    zs, xts = _official_forward(den, x0, SRC, eta, 11)
    torch.testing.assert_close(result.extras["noise_maps"], torch.stack(zs, dim=1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(result.z, xts[-1], rtol=0, atol=0)
    expected = [eta * _get_variance(k) ** 0.5 for k in range(1, len(ALPHABARS))]
    assert result.extras["noise_std"] == pytest.approx(expected, rel=1e-12)
    edit = reconstruct(den, result, grid, TAR)
    torch.testing.assert_close(edit, _official_reverse(den, xts[-1], zs, TAR, eta), rtol=1e-10, atol=1e-10)


def test_skip_starts_lower_and_zero_last_is_the_codes_reconstruction() -> None:
    """``skip=0.5`` of 4 steps: the code's ``xT=wts[T - skip], zs=zs[:T - skip]``; ``zero_last``:
    the code's ``zs[0] = 0``."""
    den, x0, grid = _toy(), _x0(1), _sd_grid()
    zs, xts = _official_forward(den, x0, SRC, 1.0, 5)
    half = edit_friendly.invert(den, x0, grid, SRC, skip=0.5, seed=5)
    torch.testing.assert_close(reconstruct(den, half, grid, TAR), _official_reverse(den, xts[2], zs[:2], TAR, 1.0),
                               rtol=1e-10, atol=1e-10)
    code = edit_friendly.invert(den, x0, grid, SRC, skip=0.0, seed=5, zero_last=True)
    zeroed = [torch.zeros_like(zs[0])] + zs[1:]
    torch.testing.assert_close(reconstruct(den, code, grid, SRC), _official_reverse(den, xts[-1], zeroed, SRC, 1.0),
                               rtol=1e-10, atol=1e-10)
    assert (reconstruct(den, code, grid, SRC) - x0).abs().max() > 1e-3  # the code's reconstruction is not exact


def test_flow_noise_std_is_the_gaussian_path_posterior() -> None:
    grid = flow_grid(5, shift=3.0)
    result = edit_friendly.invert(_toy(), _x0(1), grid, SRC, skip=0.0)
    for i, std in enumerate(result.extras["noise_std"]):
        dst, src = grid.levels[i], grid.levels[i + 1]
        if dst.s == 0.0:
            assert std == 0.0
            continue
        sigma_ts2 = src.s**2 - (src.a / dst.a) ** 2 * dst.s**2  # Var of q(x_src | x_dst)
        assert std == pytest.approx(math.sqrt(sigma_ts2 * dst.s**2 / src.s**2), rel=1e-12), i


def test_seed_and_batch() -> None:
    den, grid = _toy(), vp_grid(4)
    x0 = _x0(2)
    one = edit_friendly.invert(den, x0[1:], grid, SRC, seed=4)
    both = edit_friendly.invert(den, x0, grid, SRC, seed=4)
    torch.testing.assert_close(both.z[1:], one.z, rtol=0, atol=0)  # an image sees the same draws in a batch
    torch.testing.assert_close(reconstruct(den, both, grid, TAR)[1:], reconstruct(den, one, grid, TAR),
                               rtol=1e-12, atol=1e-12)
    other = edit_friendly.invert(den, x0, grid, SRC, seed=5)
    assert not torch.allclose(other.z, both.z)


@pytest.mark.parametrize("option, value, message", [
    ("eta", 0.0, "eta must be in \\(0, 1\\]"),
    ("eta", 1.5, "eta must be in \\(0, 1\\]"),
    ("skip", 1.0, "skip must be a fraction"),
    ("seed", -1, "seed must be an integer"),
])
def test_bad_options_are_one_line(option: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=f"inverter edit_friendly: {message}") as err:
        edit_friendly.invert(_toy(), _x0(1), vp_grid(4), SRC, **{option: value})
    assert "\n" not in str(err.value)
