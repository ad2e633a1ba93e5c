"""The paper's numbers as data (results/paper_numbers.csv) and the report's paper / difference columns.

Oracles: values typed here by hand from ../shared/reference/gnri-paper.md (independent of the CSV
writer), and a hand-made results table + numbers file whose comparison is worked out by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from eval.records import to_frame
from eval.report.paper_numbers import (
    COLUMNS, NUMBERS_FILE, load_paper_numbers, method_base, paper_comparison, run_preset,
)
from eval.report.tables import write_tables


def test_committed_numbers_load_and_have_one_source_per_row() -> None:
    df = load_paper_numbers()
    assert len(df) >= 60
    for col in ("source_id", "method", "metric", "source", "tag"):
        assert (df[col].str.strip() != "").all(), col
    key = ["source_id", "preset", "model", "method", "params", "metric"]
    assert not df.duplicated(key).any(), df[df.duplicated(key, keep=False)][key]
    presets = {p for cell in df["preset"] for p in cell.split(";") if p}
    assert all(p.startswith("paper_") for p in presets), presets
    psnr = df[df["metric"].str.endswith("psnr")]
    assert ((psnr["value"] > 5) & (psnr["value"] < 40)).all()
    assert (df["reading_error"] >= 0).all()


@pytest.mark.parametrize("model, method, metric, value, scale", [
    ("sdxl_turbo", "gnri", "psnr", 23.9, 1), ("flux_schnell", "gnri", "psnr", 24.3, 1),
    ("sdxl_turbo", "ddim", "psnr", 12.3, 1), ("flux_schnell", "renoise", "time_total_s", 7.0, 1),
    ("sdxl_turbo", "gnri", "clip_whole", 0.301, 0.01), ("flux_schnell", "gnri", "lpips_to_source", 0.132, 1),
    ("sdxl_turbo", "sdedit", "lpips_to_source", 0.349, 1),
])
def test_figure_values_transcribed(model: str, method: str, metric: str, value: float, scale: float) -> None:
    df = load_paper_numbers()
    row = df[(df["model"] == model) & (df["method"] == method) & (df["metric"] == metric)
             & df["source_id"].str.startswith("Fig.")]
    assert len(row) == 1 and row["value"].iloc[0] == value and row["scale"].iloc[0] == scale
    assert row["tag"].iloc[0] == "FIG" and row["reading_error"].iloc[0] > 0


def test_third_party_values_transcribed() -> None:
    df = load_paper_numbers()
    trdi = df[(df["source_id"] == "TRDI Tab. (PIE-Bench)") & (df["method"] == "gnri")].set_index("metric")
    assert trdi.loc["bg_mse", "value"] == 88.48 and trdi.loc["bg_mse", "scale"] == 10_000
    assert trdi.loc["structure_distance", "value"] == 32.06 and trdi.loc["structure_distance", "scale"] == 1000
    coco = df[(df["source_id"] == "TRDI Tab. (MSCOCO)") & (df["method"] == "gnri")].set_index("metric")
    assert coco.loc["ssim", "value"] / coco.loc["ssim", "scale"] == pytest.approx(0.6972)


def test_method_and_preset_parsing() -> None:
    assert method_base("gnri_official[n_iters=1]+p2p") == "gnri" and method_base("ddim+p2p") == "ddim"
    assert run_preset(json.dumps({"paper_preset": "paper_x"})) == "paper_x"
    assert run_preset(json.dumps({"paper_preset": None})) is None and run_preset("") is None


NUMBERS = """# a comment line
source_id,preset,model,method,params,metric,value,reading_error,scale,dataset,source,tag,notes
Fig. A,paper_x,big_model,gnri,,psnr,24.0,0.3,1,d,paper,FIG,
Fig. A,paper_x,big_model,gnri,max_iters=1,psnr,22.0,0.3,1,d,paper,FIG,needs max_iters=1: no match
Fig. A,paper_y,big_model,gnri,,psnr,99.0,0.3,1,d,paper,FIG,another preset: no match
Fig. A,paper_x;paper_t,big_model,ddim,,psnr,15.0,0.5,1,d,paper,FIG,
Fig. A,paper_x,big_model,VAE ceiling,,psnr,26.0,0.3,1,d,paper,FIG,
Fig. B,paper_x,big_model,gnri,,clip_whole,0.30,0.005,0.01,d,paper,FIG,cosine
Tab. C,paper_x,big_model,gnri,,bg_mse,50.0,0.005,10000,d,other,3rd-party,x10^4
"""


def _records(preset: str | None) -> pd.DataFrame:
    """Two runs on a stand-in model: gnri (psnr 25, 27; clip 31; bg_mse 0.004) and ddim (psnr 16)."""
    rows = []
    config = json.dumps({"paper_preset": preset, "model": {"name": "world_sd"}})
    for inverter, params, values in (
        ("gnri", {"max_iters": 2}, {"psnr": (25.0, 27.0), "clip_whole": (31.0, 31.0), "bg_mse": (0.004, 0.004)}),
        ("ddim", {}, {"psnr": (16.0, 16.0)}),
    ):
        for i in range(2):
            base = {"run_id": f"r-{inverter}", "model": "world_sd", "schedule": "ddim50", "inverter": inverter,
                    "image": f"img{i}", "caption": "c", "status": "ok", "reason": "", "num_steps": 50,
                    "guidance_scale": 1.0, "seed": 0, "inverter_params": json.dumps(params), "config": config,
                    "schedule_params": "{}", "checkpoint": "", "unit_key": f"{inverter}-{i}"}
            for metric, vals in values.items():
                rows.append({**base, "metric": metric, "value": vals[i], "higher_is_better": metric != "bg_mse"})
            rows.append({**base, "metric": "psnr_vae_ceiling", "value": 28.0, "higher_is_better": True})
    return to_frame(rows)


def test_comparison_worked_by_hand(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text(NUMBERS)
    numbers = load_paper_numbers(tmp_path / "n.csv")
    comp = paper_comparison(_records("paper_x"), numbers)
    got = {(r.method, r.metric): r for r in comp.itertuples(index=False)}
    assert set(got) == {("gnri", "psnr"), ("ddim", "psnr"), ("VAE ceiling", "psnr"), ("gnri", "clip_whole"),
                        ("gnri", "bg_mse")}
    assert got["gnri", "psnr"].ours == 26.0 and got["gnri", "psnr"].paper == 24.0
    assert got["gnri", "psnr"].difference == pytest.approx(2.0) and got["gnri", "psnr"].paper_error == 0.3
    assert got["ddim", "psnr"].difference == pytest.approx(1.0)
    assert got["VAE ceiling", "psnr"].difference == pytest.approx(2.0)
    assert got["gnri", "clip_whole"].paper == pytest.approx(30.0)  # 0.30 printed as a cosine: / 0.01
    assert got["gnri", "clip_whole"].difference == pytest.approx(1.0)
    assert got["gnri", "clip_whole"].paper_error == pytest.approx(0.5)
    assert got["gnri", "bg_mse"].paper == pytest.approx(0.005) and got["gnri", "bg_mse"].difference == pytest.approx(-0.001)
    assert set(comp["paper_model"]) == {"big_model"} and set(comp["model"]) == {"world_sd"}
    # another preset picks other rows; the run's own preset can be overridden
    other = paper_comparison(_records("paper_x"), numbers, preset="paper_t")
    assert list(zip(other["method"], other["paper"])) == [("ddim", 15.0)]


def test_report_adds_paper_and_difference_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import eval.report.paper_numbers as pn

    (tmp_path / "n.csv").write_text(NUMBERS)
    monkeypatch.setattr(pn, "NUMBERS_FILE", tmp_path / "n.csv")
    paths = write_tables(_records("paper_x"), tmp_path / "out")
    assert [p.name for p in paths] == ["summary.csv", "paper_table.csv", "paper_table.md", "paper_comparison.csv"]
    wide = pd.read_csv(paths[1]).set_index("method")
    assert wide.loc["gnri", "psnr_paper"] == 24.0 and wide.loc["gnri", "psnr_difference"] == pytest.approx(2.0)
    assert wide.loc["ddim", "psnr_difference"] == pytest.approx(1.0)
    assert math.isnan(wide.loc["ddim", "clip_whole_paper"])
    md = paths[2].read_text()
    assert "The paper's numbers beside ours" in md and "preset `paper_x`" in md and "big_model · Fig. A (FIG)" in md
    # a run of no preset: no comparison, the usual three files
    plain = write_tables(_records(None), tmp_path / "plain")
    assert len(plain) == 3 and "psnr_paper" not in pd.read_csv(plain[1]).columns


def test_bad_numbers_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(NUMBERS.replace(",0.01,d,", ",0,d,"))
    with pytest.raises(ValueError, match=r"row 6: scale='0' .*\(non-zero\)"):
        load_paper_numbers(bad)
    bad.write_text("source_id,metric\nx,psnr\n")
    with pytest.raises(ValueError, match="lacks column"):
        load_paper_numbers(bad)
    assert NUMBERS_FILE.name == "paper_numbers.csv" and len(COLUMNS) == 13
