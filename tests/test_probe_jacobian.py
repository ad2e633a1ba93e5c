"""scripts/probe_jacobian.py: its band perturbations stay in their band with unit RMS, the bands
run from low to high frequency, and the script runs end to end on the world UNet."""

from __future__ import annotations

import torch

from scripts import probe_jacobian as probe


def test_band_noise_lies_in_its_band_with_unit_rms() -> None:
    index = probe.band_index(16, 16, 4)
    gen = torch.Generator().manual_seed(0)
    for band in range(4):
        d = probe.band_noise(torch.Size((2, 3, 16, 16)), index, band, gen)
        power = torch.fft.rfft2(d, norm="ortho").abs().pow(2)
        assert float(power[..., index != band].sum()) < 1e-20 * float(power.sum()) + 1e-24
        assert abs(float(d.pow(2).mean().sqrt()) - 1.0) < 1e-12


def test_band_index_covers_every_band_from_low_to_high() -> None:
    index = probe.band_index(8, 8, 4)
    assert index[0, 0] == 0 and index[4, 4] == 3 and set(index.unique().tolist()) == {0, 1, 2, 3}


def test_runs_on_the_world_unet(capsys) -> None:
    assert probe.main(["--model", "world_sd", "--steps", "2", "--step", "1", "--images", "2", "--bands", "2"]) == 0
    out = capsys.readouterr().out
    assert "m = " in out and out.count("in-band") == 2
