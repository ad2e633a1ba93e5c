"""Paired verdicts (eval.report.paired / pairing / verdict_table): oracles written by hand, not by the code under test."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from eval.report.fair import EXACT_MARK
from eval.report.load import LOAD_MARK, timed_under_load
from eval.report.paired import (
    BETTER, LOADED, MIN_PAIRED_IMAGES, NO_DIFFERENCE, TOO_FEW, VERDICT_RULE, WORSE, holm, paired_test,
)
from eval.report.pairing import configured_reference, paired_verdicts, reference_map, resolve_reference
from eval.report.tables import paper_markdown
from eval.summary import summarize as summary_md

HIGHER = {"psnr": True}
QUIET = json.dumps({"cpu_count": 2, "load_1min": 0.5})
LOADED_MACHINE = json.dumps({"cpu_count": 2, "load_1min": 9.0})


def base(n: int, seed: int = 0) -> np.ndarray:
    """The reference's per-image PSNRs: widely spread, so unpaired intervals overlap."""
    return 25.0 + 4.0 * np.random.default_rng(seed).standard_normal(n)


def table(methods: dict[str, dict[str, list[float]]], machine: dict[str, str] | None = None,
          config: str | None = None) -> pd.DataFrame:
    """Tidy rows: ``methods[name][metric]`` = one ok value per image."""
    rows = []
    for name, metrics in methods.items():
        for metric, values in metrics.items():
            for i, v in enumerate(values):
                rows.append({"run_id": f"{name}-run", "model": "m", "schedule": "s", "inverter": name, "adapter": "m",
                             "image": f"img{i}", "caption": "c", "metric": metric, "value": float(v), "status": "ok",
                             "reason": "", "higher_is_better": HIGHER.get(metric, False), "num_steps": 4,
                             "machine": (machine or {}).get(name, QUIET), "config": config or "{}"})
    return pd.DataFrame(rows)


def verdict_of(verdicts: pd.DataFrame, method: str, metric: str = "psnr") -> str:
    row = verdicts[(verdicts["method"] == method) & (verdicts["metric"] == metric)]
    assert len(row) == 1, row
    return str(row["verdict"].iloc[0])


def test_holm_on_hand_values() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.02, math.nan, 0.04]), [0.04, math.nan, 0.04])  # NaN not counted: m = 2
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])  # capped at 1
    assert holm([]).size == 0


def test_paired_test_edge_cases() -> None:
    zero = paired_test([0.0] * 8)
    assert (zero.low, zero.high, zero.p, zero.mean) == (0.0, 0.0, 1.0, 0.0)
    constant = paired_test([1.0] * 8)
    assert (constant.low, constant.high) == (1.0, 1.0) and constant.p < 0.05
    few = paired_test([1.0, 2.0, 3.0, 4.0, 5.0])
    assert few.n == 5 < MIN_PAIRED_IMAGES and math.isnan(few.p) and math.isnan(few.low)
    spread = paired_test(np.arange(10) - 4.5 + 0.1)  # mean 0.1, symmetric spread: the interval covers 0
    assert spread.low < 0 < spread.high and spread.p > 0.5
    assert paired_test(np.arange(10.0) + 1).low == paired_test(np.arange(10.0) + 1).low  # seeded: repeatable


def test_b_one_db_better_on_ten_images_and_a_a_is_no_difference() -> None:
    ref = base(10)
    rows = table({"ddim": {"psnr": ref}, "b": {"psnr": ref + 1.0}, "same": {"psnr": ref.copy()},
                  "down": {"psnr": ref - 1.0}})
    v = paired_verdicts(rows, "ddim")
    assert verdict_of(v, "b") == BETTER and verdict_of(v, "same") == NO_DIFFERENCE and verdict_of(v, "down") == WORSE
    b = v[v["method"] == "b"].iloc[0]
    assert b["mean_diff"] == pytest.approx(1.0) and (b["ci_low"], b["ci_high"]) == pytest.approx((1.0, 1.0))
    assert b["n_pairs"] == 10 and b["reference"] == "ddim" and "ddim" not in set(v["method"])


def test_five_images_are_too_few() -> None:
    ref = base(5)
    v = paired_verdicts(table({"ddim": {"psnr": ref}, "b": {"psnr": ref + 5.0}}), "ddim")
    assert verdict_of(v, "b") == TOO_FEW


def test_only_images_both_finished_are_paired() -> None:
    ref = base(8)
    rows = table({"ddim": {"psnr": ref}, "b": {"psnr": ref + 1.0}})
    rows.loc[(rows["inverter"] == "b") & (rows["image"].isin(["img0", "img1", "img2"])), ["status", "value"]] = \
        ["failed", math.nan]
    v = paired_verdicts(rows, "ddim")
    assert v.iloc[0]["n_pairs"] == 5 and verdict_of(v, "b") == TOO_FEW


def test_lower_is_better_metric_direction() -> None:
    ref = 0.2 + 0.05 * np.random.default_rng(1).random(10)
    rows = table({"ddim": {"lpips": ref}, "lower": {"lpips": ref - 0.01}, "higher": {"lpips": ref + 0.01}})
    v = paired_verdicts(rows, "ddim")
    assert verdict_of(v, "lower", "lpips") == BETTER and verdict_of(v, "higher", "lpips") == WORSE


def test_loaded_rows_get_no_timing_verdict() -> None:
    assert not timed_under_load(QUIET) and timed_under_load(LOADED_MACHINE)
    assert timed_under_load(json.dumps({"cpu_count": 2, "load_1min": 0.1, "timed_under_load": True}))
    assert not timed_under_load("not json") and not timed_under_load(None) and not timed_under_load("{}")
    ref = base(10)
    times = np.full(10, 1.0)
    rows = table({"ddim": {"psnr": ref, "time_invert_s": times}, "b": {"psnr": ref + 1, "time_invert_s": times / 30},
                  "c": {"psnr": ref, "time_invert_s": times / 2}}, machine={"b": LOADED_MACHINE})
    v = paired_verdicts(rows, "ddim")
    assert verdict_of(v, "b", "time_invert_s") == LOADED and verdict_of(v, "b") == BETTER  # quality still compared
    assert verdict_of(v, "c", "time_invert_s") == BETTER
    md = paper_markdown(rows)
    b_row = next(line for line in md.splitlines() if line.startswith("| b |"))
    assert LOAD_MARK in b_row and "**" not in b_row.split(" | ")[-2] and "timed under load" in md


def test_bold_appears_only_where_the_verdict_is_better() -> None:
    ref = base(10)
    rows = table({"ddim": {"psnr": ref}, "up": {"psnr": ref + 1.0}, "down": {"psnr": ref - 1.0},
                  "same": {"psnr": ref.copy()}})
    md = paper_markdown(rows)
    cells = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in md.splitlines()
             if line.startswith("| ") and not line.startswith("| method")}
    assert cells["up"].startswith("**")
    assert not any(cells[m].startswith("**") for m in ("ddim", "down", "same"))
    assert "better than the reference method by the paired verdict" in md and VERDICT_RULE in md


def test_exact_by_construction_rows_are_marked_not_bold() -> None:
    ref = base(10)
    measured = {"psnr": ref + 1.0, "kept_latents": [3.0] * 10, "exact_by_construction": [1.0] * 10}
    rows = table({"ddim": {"psnr": ref}, "edict": {"psnr": ref + 1.0}, "mine": measured, "plain": {"psnr": ref + 1.0}})
    md = paper_markdown(rows)
    lines = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    assert f"edict {EXACT_MARK}" in lines and f"mine {EXACT_MARK}" in lines and "plain" in lines  # shipped / measured
    assert "**" not in lines[f"edict {EXACT_MARK}"] and "**" not in lines[f"mine {EXACT_MARK}"]
    assert lines["plain"].split(" | ")[1].startswith("**")  # the same numbers, not exact: bold
    assert lines[f"edict {EXACT_MARK}"].split(" | ")[-2] == "2" and lines[f"mine {EXACT_MARK}"].split(" | ")[-2] == "3"
    assert lines["plain"].split(" | ")[-2] == "n/a" and "exact by construction" in md and "kept (latents)" in md


def test_reference_resolution_and_editors() -> None:
    rows = table({"ddim": {"psnr": base(6)}}, config=json.dumps({"reference": "gnri"}))
    assert configured_reference(rows) == "gnri" and resolve_reference(rows) == "gnri"
    assert resolve_reference(rows, "edict") == "edict"
    plain = table({"ddim": {"psnr": base(6)}})
    assert resolve_reference(plain) == "ddim" and resolve_reference(table({"x": {"psnr": base(6)}})) is None
    methods = {"ddim+prompt_swap": "ddim+prompt_swap", "ddim+p2p": "ddim+p2p", "null_text+p2p": "null_text+p2p",
               "gnri+prompt_swap": "gnri+prompt_swap"}
    assert reference_map(methods, "ddim") == {"null_text+p2p": "ddim+p2p", "gnri+prompt_swap": "ddim+prompt_swap"}
    assert reference_map({"a": "a", "b": "b"}, "a") == {"b": "a"} and reference_map({"a": "a"}, "zzz") == {}


def test_sweep_summary_has_the_verdict_table() -> None:
    ref = base(10)
    text = summary_md(table({"ddim": {"psnr": ref}, "b": {"psnr": ref + 1.0}}), reference="ddim")
    assert "Paired verdicts against `ddim`" in text and "**better**" in text and VERDICT_RULE in text
    assert "Paired verdicts" not in summary_md(table({"ddim": {"psnr": ref}}))
    loaded = summary_md(table({"ddim": {"psnr": ref}, "b": {"psnr": ref}}, machine={"b": LOADED_MACHINE}))
    assert f"{LOAD_MARK} timed under load: m/s/b:" in loaded and "m/s/ddim" not in loaded
