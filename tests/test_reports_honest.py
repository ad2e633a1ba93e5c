"""Honest reports for small n: clipped intervals, none for n < 3, an ``n`` column, bold only from paired verdicts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

from eval.report.edit_plots import edit_tradeoff
from eval.report.plots import convergence, quality_vs_time
from eval.report.tables import (
    BOLD_RULE, MIN_N_FOR_INTERVAL, VAE_ROW, clipped_interval, metric_bounds, paper_markdown, paper_table, summarize,
)

CEILING = 30.0
HIGHER = {"psnr": True, "psnr_vae_ceiling": True, "edit_success": True}


def frame(values: dict[str, dict[str, list[float]]], model: str = "m", schedule: str = "s") -> pd.DataFrame:
    """A tidy table: ``values[method][metric]`` = one value per image (all ok)."""
    rows = []
    for method, metrics in values.items():
        for metric, per_image in metrics.items():
            for i, v in enumerate(per_image):
                rows.append({"run_id": f"{method}-run", "model": model, "schedule": schedule, "inverter": method,
                             "adapter": model, "image": f"img{i}", "metric": metric, "value": float(v), "status": "ok",
                             "reason": "", "higher_is_better": HIGHER.get(metric, False)})
    return pd.DataFrame(rows)


def recon(n: int, psnr_center: float = 29.0, spread: float = 3.0, time: float = 0.02) -> dict[str, list[float]]:
    """One method's values on ``n`` images: PSNRs near the ceiling, times near zero, both widely spread."""
    k = np.arange(n) - (n - 1) / 2
    return {"psnr": list(psnr_center + spread * k / max(n - 1, 1)), "psnr_vae_ceiling": [CEILING] * n,
            "time_invert_s": list(time * (1 + 4 * (k == k.max()))), "time_reconstruct_s": [0.001] * n,
            "nfe_forward": list(1.0 + 20 * (k == k.max()))}


def test_intervals_are_clipped_to_what_can_happen() -> None:
    assert clipped_interval("time_invert_s", 0.1, 0.5, 5)[0] == 0.0
    assert clipped_interval("nfe_forward", 2.0, 5.0, 5)[0] == 0.0
    assert clipped_interval("edit_success", 0.8, 0.5, 5) == (pytest.approx(0.3), 1.0)
    assert clipped_interval("psnr", 29.0, 3.0, 5, ceiling=CEILING) == (26.0, CEILING)
    assert clipped_interval("psnr", 31.0, 3.0, 5, ceiling=CEILING)[1] == 31.0  # never below the mean itself
    assert clipped_interval("psnr_gap_to_vae", -1.0, 3.0, 5) == (-4.0, 2.0)  # a gap can be negative
    assert all(map(math.isnan, clipped_interval("psnr", 29.0, 3.0, MIN_N_FOR_INTERVAL - 1)))
    assert metric_bounds("lpips_vgg") == (0.0, math.inf) and metric_bounds("clip_whole") == (0.0, 100.0)


def test_summary_intervals_respect_bounds_and_the_ceiling() -> None:
    s = summarize(frame({"a": recon(4)})).set_index("metric")
    assert s.loc["time_invert_s", "ci_low"] == 0.0 > s.loc["time_invert_s", "mean"] - s.loc["time_invert_s", "ci95"]
    assert s.loc["nfe_forward", "ci_low"] == 0.0
    assert s.loc["psnr", "ci_high"] == CEILING < s.loc["psnr", "mean"] + s.loc["psnr", "ci95"]
    small = summarize(frame({"a": recon(2)})).set_index("metric")
    assert small["ci_low"].isna().all() and small["ci_high"].isna().all()


def _record(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[tuple, dict[str, Any]]]:
    calls: list[tuple[tuple, dict[str, Any]]] = []
    original = getattr(Axes, name)

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append((args, kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, name, spy)
    return calls


def test_quality_vs_time_bars_are_clipped_and_absent_for_small_n(tmp_path: Path, monkeypatch) -> None:
    calls = _record(monkeypatch, "errorbar")
    quality_vs_time(frame({"a": recon(4)}), tmp_path / "qt.png")
    (x, y), kw = calls[0]
    assert x - kw["xerr"][0][0] >= 0.0  # no negative time
    assert y + kw["yerr"][1][0] <= CEILING + 1e-9  # no PSNR above the VAE ceiling from the interval
    calls.clear()
    quality_vs_time(frame({"a": recon(2)}), tmp_path / "qt2.png")
    assert calls[0][1]["xerr"] is None and calls[0][1]["yerr"] is None


def test_convergence_band_is_clipped_and_absent_for_small_n(tmp_path: Path, monkeypatch) -> None:
    calls = _record(monkeypatch, "fill_between")
    rows = [{"method": "fp", "iteration": it, "image": i, "metric": metric, "value": value}
            for it in (1, 2) for i in range(4)
            for metric, value in (("psnr", 28.0 + 0.8 * i), ("residual", 1e-3 if i < 3 else 1.0))]
    convergence(pd.DataFrame(rows), tmp_path / "conv.png", ceiling=CEILING)
    (psnr_its, psnr_lo, psnr_hi), _ = calls[0]
    (_, res_lo, _), _ = calls[1]
    assert (np.asarray(psnr_hi) <= CEILING).all() and (np.asarray(res_lo) >= 0).all()
    calls.clear()
    few = pd.DataFrame([r for r in rows if r["image"] < 2])
    convergence(few, tmp_path / "conv2.png", ceiling=CEILING)
    assert not any(np.asarray(kw["where"]).any() for _, kw in calls)  # no band where n < 3


def test_edit_tradeoff_bars_stay_in_range(tmp_path: Path, monkeypatch) -> None:
    calls = _record(monkeypatch, "errorbar")
    records = frame({"a+prompt_swap": {"edit_success": [1, 1, 1, 0], "lpips_to_source": [0.01, 0.01, 0.01, 0.3]}})
    edit_tradeoff(records, tmp_path / "edit.png", y="edit_success", x="lpips_to_source")
    (x, y), kw = calls[0]
    assert y + kw["yerr"][1][0] <= 1.0 and x - kw["xerr"][0][0] >= 0.0


def test_paper_table_has_an_n_column() -> None:
    records = frame({"a": recon(4), "b": recon(3)})
    records.loc[(records["inverter"] == "b") & (records["image"] == "img2"), ["status", "value"]] = ["failed", math.nan]
    wide = paper_table(records).set_index("method")
    assert (wide.loc["a", "n"], wide.loc["b", "n"], wide.loc[VAE_ROW, "n"]) == (4, 2, 4)
    md = paper_markdown(records)
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert header.endswith("| n |")
    assert any(line.startswith("| b |") and line.endswith("| 2 |") for line in md.splitlines())


def _psnr_cells(md: str) -> dict[str, str]:
    lines = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    return {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in lines}


def test_bold_only_from_the_paired_verdict() -> None:
    # intervals overlap widely (spread 3 dB), but every image is 0.5 dB better than ddim's: paired, better
    paired = paper_markdown(frame({"ddim": recon(8, 25.5), "a": recon(8, 26.0)}))
    assert _psnr_cells(paired)["a"].startswith("**") and not _psnr_cells(paired)["ddim"].startswith("**")
    # intervals far apart, but no reference method in the table: nothing is bold
    apart = paper_markdown(frame({"a": recon(8, 26.0, spread=0.5), "b": recon(8, 20.0, spread=0.5)}))
    assert "**" not in _psnr_cells(apart)["a"] and "nothing is bold" in apart
    # the reference named: b against a, 6 dB under it on every image
    named = paper_markdown(frame({"a": recon(8, 26.0, spread=0.5), "b": recon(8, 20.0, spread=0.5)}), reference="a")
    assert not _psnr_cells(named)["b"].startswith("**") and not _psnr_cells(named)["a"].startswith("**")
    tiny = paper_markdown(frame({"ddim": recon(2, 20.0, spread=0.1), "a": recon(2, 26.0, spread=0.1)}))
    assert "**" not in _psnr_cells(tiny)["a"] and "±" not in tiny.split("Mean ±")[0]  # n < 3: no claim, no interval
    assert BOLD_RULE in paired and "never from overlapping unpaired intervals" in BOLD_RULE
