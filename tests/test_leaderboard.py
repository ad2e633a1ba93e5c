"""The leaderboard (eval.report.leaderboard): fronts on hand-made point sets, load and exact rows kept off them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from eval.report.leaderboard import leaderboard, pareto_front, write_leaderboard
from eval.report.paired import BETTER, NO_DIFFERENCE, WORSE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUIET = json.dumps({"cpu_count": 2, "load_1min": 0.5})
LOADED = json.dumps({"cpu_count": 2, "load_1min": 9.0})
N = 10


def hand_verdicts(quality: dict[str, float]) -> dict[tuple[str, str], str]:
    """(a, b) -> better / worse / no difference from hand-written qualities (lower is better, ties: no difference)."""
    out = {}
    for a, qa in quality.items():
        for b, qb in quality.items():
            if a != b:
                out[(a, b)] = BETTER if qa < qb else WORSE if qa > qb else NO_DIFFERENCE
    return out


def test_front_on_a_hand_made_point_set() -> None:
    # (cost, quality): a (1, 5), b (2, 3), e (2, 4): b beats e at equal cost, c (3, 3.5): b beats it cheaper,
    # f (3, 3): tied with b, so nothing beats it, d (4, 1); g has no cost.
    cost = {"a": 1.0, "b": 2.0, "e": 2.0, "c": 3.0, "f": 3.0, "d": 4.0, "g": float("nan")}
    quality = {"a": 5.0, "b": 3.0, "e": 4.0, "c": 3.5, "f": 3.0, "d": 1.0, "g": 0.0}
    assert pareto_front(cost, hand_verdicts(quality)) == ["a", "b", "f", "d"]
    assert pareto_front({"x": 1.0}, {}) == ["x"] and pareto_front({}, {}) == []


def rows(methods: dict[str, dict], seed: int = 0) -> pd.DataFrame:
    """Tidy rows: per method a gap offset over a shared spread, NFE, inversion time and machine."""
    spread = 2.0 * np.random.default_rng(seed).random(N)
    out = []
    for name, spec in methods.items():
        per_image = {"psnr_gap_to_vae": spread + spec["gap"], "nfe_forward": np.full(N, spec["nfe"]),
                     "nfe_backward": np.zeros(N), "time_invert_s": np.full(N, spec["time"]) * (1 + 0.01 * spread)}
        for metric, values in per_image.items():
            for i, v in enumerate(values):
                out.append({"run_id": f"{name}-run", "model": "m", "schedule": "s", "inverter": name, "adapter": "m",
                            "image": f"img{i}", "caption": "c", "metric": metric, "value": float(v), "status": "ok",
                            "reason": "", "higher_is_better": False, "num_steps": 4,
                            "machine": spec.get("machine", QUIET)})
    return pd.DataFrame(out)


METHODS = {
    "ddim": {"gap": 5.0, "nfe": 4, "time": 0.1},
    "fast_good": {"gap": 1.0, "nfe": 8, "time": 0.2},
    "slow_good": {"gap": 2.0, "nfe": 40, "time": 1.0},  # fast_good is better and cheaper: off both fronts
    "edict": {"gap": 0.0, "nfe": 8, "time": 0.2},  # exact by construction (shipped name): marked, off the fronts
    "loaded_best": {"gap": 0.5, "nfe": 100, "time": 0.01, "machine": LOADED},  # off the time front only
}


def test_leaderboard_fronts_verdicts_and_marks() -> None:
    board = leaderboard(rows(METHODS), "ddim").set_index("method")
    assert list(board.index) == ["edict", "loaded_best", "fast_good", "slow_good", "ddim"]  # by mean gap
    assert set(board.index[board["front_nfe"]]) == {"ddim", "fast_good", "loaded_best"}
    assert set(board.index[board["front_time"]]) == {"ddim", "fast_good"}
    assert bool(board.loc["edict", "exact"]) and bool(board.loc["loaded_best", "under_load"])
    assert board.loc["fast_good", "verdict"] == BETTER and board.loc["fast_good", "reference"] == "ddim"
    assert board.loc["slow_good", "nfe"] == 40 and board.loc["edict", "kept"] == 2


def test_write_leaderboard_files(tmp_path: Path) -> None:
    paths = write_leaderboard(rows(METHODS), tmp_path, "ddim", title="Test board")
    names = [p.name for p in paths]
    assert names == ["leaderboard.md", "leaderboard.csv", "leaderboard_m_s.png"]
    assert paths[2].read_bytes()[:8] == PNG_MAGIC and paths[2].stat().st_size > 1000
    md = paths[0].read_text()
    assert md.startswith("# Test board") and "edict ‡" in md and "†" in md and "![m · s](leaderboard_m_s.png)" in md
    assert "| 5 | ddim | " in md and "reference" in md
