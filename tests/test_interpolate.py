"""Interpolation: slerp's endpoints are exact and it keeps norms on the arc; a regenerated path
starts and ends exactly at the two reconstructions (pure latents, null-text, EDICT); the eval
loop records smoothness and fidelity rows."""

from __future__ import annotations

import math

import pytest
import torch

from baselines import ddim, edict, null_text
from eval.data import sample_dataset
from eval.metrics.diagnostics import INTERP_METRICS
from eval.tasks.interpolate import evaluate_interpolation
from eval.report.edit_plots import interpolation_strip
from gnri.core import reconstruct
from gnri.edit import interpolate, interpolation_weights, slerp
from gnri.models.base import ScheduleSpec
from lpips_guard import lpips_expected


def test_slerp_endpoints_are_exact_and_the_arc_keeps_norms() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    u = torch.zeros(1, 2)
    u[0, 0] = 3.0
    v = torch.zeros(1, 2)
    v[0, 1] = 3.0
    mid = slerp(u, v, 0.5)
    torch.testing.assert_close(mid, torch.full((1, 2), 3.0 / math.sqrt(2.0)))  # on the circle, not the chord
    torch.testing.assert_close(slerp(u, 2 * u, 0.25), 1.25 * u)  # parallel: linear
    torch.testing.assert_close(slerp(torch.zeros(1, 2), v, 0.5), 0.5 * v)  # zero latent: linear
    assert interpolation_weights(3) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        interpolation_weights(1)


@pytest.mark.parametrize("name", ["ddim", "null_text", "edict"])
@torch.no_grad()
def test_path_ends_are_the_reconstructions(tiny_sd_adapter, name: str) -> None:
    adapter = tiny_sd_adapter
    torch.manual_seed(0)
    latents = adapter.encode_images(torch.rand(2, 3, *adapter.image_size()))
    grid = adapter.grid(ScheduleSpec("ddim", 3), tuple(latents[:1].shape))
    guidance = 7.5 if name == "null_text" else 1.0
    conds = [adapter.encode_prompts([p], guidance) for p in ("a red circle", "a blue square")]
    den = adapter.denoiser()
    if name == "ddim":
        results = [ddim.invert(den, latents[i:i + 1], grid, conds[i]) for i in range(2)]
    elif name == "null_text":
        results = [null_text.invert(den, latents[i:i + 1], grid, conds[i], num_inner_steps=2) for i in range(2)]
    else:
        results = [edict.invert(den, latents[i:i + 1], grid, conds[i]) for i in range(2)]
    path = interpolate(den, results[0], results[1], grid, conds[0], conds[1], interpolation_weights(4))
    assert torch.equal(path[0], reconstruct(den, results[0], grid, conds[0]))
    assert torch.equal(path[-1], reconstruct(den, results[1], grid, conds[1]))
    assert not torch.allclose(path[1], path[0]) and not torch.allclose(path[1], path[-1])


def test_interpolation_rows(tiny_sd_adapter, tmp_path) -> None:
    df = evaluate_interpolation(
        tiny_sd_adapter, ScheduleSpec("ddim", 3), ddim.invert, "ddim", sample_dataset()[:2], num_points=3,
        max_images=2, progress=False, out_dir=tmp_path,
    )
    assert set(df["metric"]) == set(INTERP_METRICS) and len(df) == len(INTERP_METRICS)
    assert set(df["image"]) == {f"{e.image_id}|{f.image_id}" for e, f in [sample_dataset()[:2]]}
    ok = df[df["status"] == "ok"].set_index("metric")["value"]
    assert {"interp_rms_step_max", "interp_psnr_start", "interp_psnr_end"} <= set(ok.index)
    assert ok["interp_rms_step_max"] > 0 and math.isfinite(ok["interp_psnr_start"])
    lpips_rows = df[df["metric"].str.startswith("interp_lpips")]
    # "ok" whenever the LPIPS weights are installed, and always under CI=true (tests/lpips_guard.py)
    want = {"ok"} if lpips_expected() else {"unavailable"}
    assert set(lpips_rows["status"]) == want, lpips_rows[["metric", "status", "reason"]].to_dict("records")
    assert (tmp_path / "results.csv").exists()
    strip = interpolation_strip(torch.rand(3, 3, 16, 16), tmp_path / "strip.png", [0.0, 0.5, 1.0])
    assert strip.exists()


def test_interpolation_paths_and_measures(tiny_sd_adapter, tmp_path) -> None:
    from dataclasses import replace

    from eval.metrics.interp import NOT_WORLD

    world = sample_dataset()[:2]  # the sample captions are of the world's grammar
    cats = [replace(e, caption="a photo of a cat") for e in world]
    for data, path in ((world, "nao"), (cats, "linear")):
        df = evaluate_interpolation(
            tiny_sd_adapter, ScheduleSpec("ddim", 3), ddim.invert, "ddim", data, num_points=3, max_images=2,
            progress=False, out_dir=tmp_path / path, path=path,
        )
        assert set(df["inverter"]) == {f"ddim+{path}"}
        rows = df.set_index("metric")
        assert rows.loc["interp_norm_dev", "status"] == "ok" and rows.loc["interp_norm_dev", "value"] >= 0
        assert rows.loc["interp_clip_either", "status"] == "unavailable"  # no task.clip given
        assert "no CLIP metric configured" in rows.loc["interp_clip_either", "reason"]
        valid = rows.loc["interp_valid_frac"]
        if data is cats:
            assert valid["status"] == "unavailable" and valid["reason"] == NOT_WORLD
        else:
            assert valid["status"] == "ok" and 0.0 <= valid["value"] <= 1.0
    with pytest.raises(ValueError, match="task.path must be one of"):
        evaluate_interpolation(tiny_sd_adapter, ScheduleSpec("ddim", 3), ddim.invert, "ddim", world, num_points=3,
                               max_images=2, progress=False, out_dir=tmp_path / "bad", path="cubic")
