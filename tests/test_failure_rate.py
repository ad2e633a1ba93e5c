"""The paper table's failure-rate column: the share of images more than 3 dB under the VAE ceiling
(a failed image counts as one), which a mean PSNR hides."""

from __future__ import annotations

import math

import pandas as pd

from eval.records import RunInfo, to_frame
from eval.report.tables import FAILURE_RATE, paper_markdown, paper_table, summarize


def _rows(gaps: list[float | None]) -> pd.DataFrame:
    info = RunInfo("r", "m", "s", "ddim", "a", 4, 1.0, 0)
    rows = []
    for i, gap in enumerate(gaps):
        status = "failed" if gap is None else "ok"
        value = math.nan if gap is None else gap
        rows.append(info.row(f"img{i}", "c", "psnr_gap_to_vae", value, status, "diverged" if gap is None else "", False))
        rows.append(info.row(f"img{i}", "c", "psnr", 30.0 - (gap or 99), status, "", True))
    return to_frame(rows)


def test_failure_rate_counts_images_beyond_3_db_and_failed_ones() -> None:
    # gaps 0.5, 2.9, 3.1, 12 and one failed image: 3 of 5 are failures
    summary = summarize(_rows([0.5, 2.9, 3.1, 12.0, None]))
    row = summary[summary["metric"] == FAILURE_RATE].iloc[0]
    assert row["mean"] == 3 / 5 and row["n"] == 5
    assert 0.0 <= row["ci_low"] <= row["ci_high"] <= 1.0  # a rate's interval stays within [0, 1]


def test_the_paper_table_shows_the_column_and_says_what_it_is() -> None:
    wide = paper_table(_rows([0.5, 4.0, 1.0]))
    assert math.isclose(float(wide[wide["method"] == "ddim"][FAILURE_RATE].iloc[0]), 1 / 3)
    text = paper_markdown(_rows([0.5, 4.0, 1.0]))
    assert "fail (> 3 dB)" in text and "more than 3 dB under the VAE ceiling" in text


def test_an_infinite_value_is_counted_in_the_notes_not_dropped_silently() -> None:
    from eval.records import RunInfo as Info

    info = Info("r", "m", "s", "ddim", "a", 4, 1.0, 0)
    rows = [info.row(f"img{i}", "c", "bg_psnr", v, "ok", "", True) for i, v in enumerate([30.0, math.inf, 32.0])]
    summary = summarize(to_frame(rows))
    row = summary[summary["metric"] == "bg_psnr"].iloc[0]
    assert row["n"] == 2 and row["n_infinite"] == 1 and row["mean"] == 31.0
    assert "`bg_psnr` infinite on 1 of 3 images" in paper_markdown(to_frame(rows))
