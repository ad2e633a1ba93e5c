"""Reports from the tidy table: paper-shaped tables, plots, image grids, multi-run aggregation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from eval.records import HARNESS_METRICS, RESULTS_FILE, RunInfo, provenance, read_records, to_frame
from eval.report.aggregate import aggregate, find_results, load_results
from eval.report.plots import (
    convergence, convergence_from_records, image_grid, quality_vs_time, run_image_grid, save_run_images,
)
from eval.report.tables import (
    TIME_TOTAL, VAE_ROW, label_methods, mean_ci, paper_markdown, paper_table, summarize, write_tables,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = (("ddim", {}), ("gnri", {"max_iters": 1}), ("gnri", {"max_iters": 2}))


def make_records(n_images: int = 5, seed: int = 0, model: str = "tiny_sd", methods=METHODS) -> pd.DataFrame:  # noqa: ANN001
    """A synthetic tidy table: known per-image values, one run per method, one unavailable metric."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (inverter, params) in enumerate(methods):
        prov = provenance("cpu", "float32", inverter_params=params, schedule_params={"kind": "ddim", "num_steps": 10})
        info = RunInfo(f"{model}-run{k}", model, "ddim10", inverter, "tiny_sd", 10, 1.0, 0, prov)
        for i in range(n_images):
            values = {
                "psnr": 20.0 + 2 * k + rng.normal(), "psnr_vae_ceiling": 30.0 + 0.1 * i, "ssim": 0.5 + 0.1 * k,
                "lpips": 0.3 - 0.05 * k, "time_invert_s": 0.1 * (k + 1), "time_reconstruct_s": 0.05,
                "nfe_forward": 10.0 * (k + 1), "nfe_backward": 0.0, "residual_rms_mean": 10.0 ** (-k - rng.random()),
            }
            values["psnr_gap_to_vae"] = values["psnr_vae_ceiling"] - values["psnr"]
            for metric, value in values.items():
                rows.append(info.row(f"img{i}.png", "a caption", metric, value, "ok", "",
                                     HARNESS_METRICS.get(metric, metric in ("psnr", "ssim"))))
            rows.append(info.row(f"img{i}.png", "a caption", "clip_score", math.nan, "unavailable",
                                 "clip_score: no local ViT-B-32/openai weights", True))
    return to_frame(rows)


def test_mean_ci_is_student_t_over_images() -> None:
    x = [1.0, 2.0, 4.0, 7.0, float("nan")]
    mean, half, n = mean_ci(x)
    finite = np.array(x[:4])
    want = stats.t.ppf(0.975, 3) * finite.std(ddof=1) / math.sqrt(4)
    assert n == 4 and mean == pytest.approx(3.5) and half == pytest.approx(want)
    assert math.isnan(mean_ci([5.0])[1]) and mean_ci([])[2] == 0


def test_method_labels_name_only_what_varies() -> None:
    labelled = label_methods(make_records(n_images=1))
    assert list(dict.fromkeys(labelled["method"])) == ["ddim", "gnri[max_iters=1]", "gnri[max_iters=2]"]
    assert set(labelled["setting"]) == {"ddim10"}


def test_paper_table_values_ceiling_and_markdown() -> None:
    records = make_records()
    wide = paper_table(records)
    assert list(wide["method"]) == ["ddim", "gnri[max_iters=1]", "gnri[max_iters=2]", VAE_ROW]
    for method, block in label_methods(records).groupby("method"):
        psnr = block.loc[block["metric"] == "psnr", "value"]
        row = wide[wide["method"] == method].iloc[0]
        assert row["psnr"] == pytest.approx(psnr.mean())
        assert row["psnr_ci95"] == pytest.approx(mean_ci(psnr)[1])
        times = block.loc[block["metric"] == "time_invert_s", "value"].to_numpy() + 0.05
        assert row[TIME_TOTAL] == pytest.approx(times.mean())
    ceiling = wide[wide["method"] == VAE_ROW].iloc[0]
    assert ceiling["psnr"] == pytest.approx(np.mean([30.0 + 0.1 * i for i in range(5)]))  # each image once
    assert ceiling["psnr_n"] == 5
    md = paper_markdown(records, title="Reconstruction")
    assert "Tiny random-weight model" in md
    assert "### tiny_sd · ddim10" in md and "| method | PSNR (dB) ↑ | gap to VAE (dB) ↓ | fail (> 3 dB) ↓ | LPIPS ↓ | SSIM ↑ |" in md
    assert "n/a" in md and "`clip_score` unavailable: clip_score: no local" in md
    assert "VJP" not in md  # no backward passes anywhere: column dropped
    assert "**" not in md.split("### tiny_sd · ddim10")[1].split("Notes:")[0]  # 5 paired images < 6: no claim
    md8 = paper_markdown(make_records(n_images=8), title="Reconstruction")
    assert "**0.2000**" in md8  # LPIPS 0.1 under ddim's on all 8 images: paired verdict better (gnri[max_iters=2])


def test_summary_counts_failures_and_unavailable() -> None:
    records = make_records(n_images=3)
    failed = (records["image"] == "img0.png") & (records["inverter"] == "ddim") & (records["status"] == "ok")
    records.loc[failed, ["status", "reason", "value"]] = [
        "failed", "diverged: non-finite latent after inversion", math.nan]
    s = summarize(records)
    ddim_psnr = s[(s["method"] == "ddim") & (s["metric"] == "psnr")].iloc[0]
    assert ddim_psnr["n"] == 2 and ddim_psnr["n_failed"] == 1 and ddim_psnr["n_rows"] == 3
    clip = s[s["metric"] == "clip_score"]
    assert (clip["n_unavailable"] == 3).all() and clip["mean"].isna().all()
    assert "1 failed, 0 skipped of 3 images (diverged" in paper_markdown(records)


def test_write_tables_and_plots(tmp_path: Path) -> None:
    records = make_records()
    paths = write_tables(records, tmp_path)
    assert [p.name for p in paths] == ["summary.csv", "paper_table.csv", "paper_table.md"]
    assert pd.read_csv(paths[1])["method"].tolist()[-1] == VAE_ROW
    png = quality_vs_time(records, tmp_path / "qt.png")
    frame = convergence_from_records(records, "max_iters")
    assert set(frame["iteration"]) == {1, 2} and set(frame["metric"]) == {"psnr", "residual"}
    conv = convergence(frame, tmp_path / "conv.png", ceiling=30.2)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    grid = image_grid(images, {"ddim": images * 0.5, "gnri": images}, tmp_path / "grid.png", row_labels=["a", "b"])
    for p in (png, conv, grid):
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000
    with pytest.raises(ValueError, match="lacks columns"):
        convergence(frame.drop(columns=["iteration"]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="shape"):
        image_grid(images, {"bad": images[:1]}, tmp_path / "x.png")


def test_aggregate_multirun_folders_and_cli(tmp_path: Path) -> None:
    records = pd.concat([make_records(seed=0), make_records(seed=1, model="tiny_flux")], ignore_index=True)
    sweep = tmp_path / "multirun"
    source = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    for k, (_, block) in enumerate(records.groupby("run_id", sort=False)):
        (sweep / str(k)).mkdir(parents=True)
        block.to_csv(sweep / str(k) / RESULTS_FILE, index=False)
        if block["model"].iloc[0] == "tiny_sd":  # these runs kept their images
            for image in ("a/img0", "img1"):
                save_run_images(sweep / str(k), image, source, source * (k + 1) / 4)
    assert len(find_results([sweep])) == 6
    combined = load_results([sweep])
    assert len(combined) == len(records) and combined["run_dir"].nunique() == 6
    out = aggregate([sweep], tmp_path / "report", title="Sweep", sweep_param="max_iters")
    assert {p.name for p in out.plots} == {"quality_vs_time.png", "convergence.png", "reconstructions_tiny_sd.png",
                                           "leaderboard_tiny_sd_ddim10.png", "leaderboard_tiny_flux_ddim10.png"}
    assert {p.name for p in out.tables} >= {"paired_verdicts.csv", "leaderboard.md", "leaderboard.csv"}
    assert (sweep / "0" / "images" / "source" / "a__img0.png").is_file()
    wide = pd.read_csv(tmp_path / "report" / "paper_table.csv")
    assert set(wide["model"]) == {"tiny_sd", "tiny_flux"} and len(wide) == 8  # 3 methods + ceiling, per model
    md = (tmp_path / "report" / "paper_table.md").read_text()
    assert md.startswith("## Sweep") and "### tiny_flux · ddim10" in md
    assert len(read_records(out.combined)) == len(records)

    import importlib.util

    spec = importlib.util.spec_from_file_location("aggregate_cli", Path(__file__).parents[1] / "scripts" / "aggregate.py")
    cli = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(cli)  # type: ignore[union-attr]
    assert cli.main([str(sweep), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "paper_table.md").is_file()
    assert "Paired verdicts against `ddim`" in (tmp_path / "cli" / "paper_table.md").read_text()  # ddim: the default
    assert cli.main([str(sweep), "--out", str(tmp_path / "cli3"), "--reference", "gnri[max_iters=1]"]) == 0
    assert "vs `gnri[max_iters=1]`" in (tmp_path / "cli3" / "leaderboard.md").read_text()
    assert cli.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "cli2")]) == 2


def test_image_grid_leaves_out_runs_without_images(tmp_path: Path) -> None:
    source = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    save_run_images(tmp_path / "ran", "img0", source, source / 2)
    (tmp_path / "skipped").mkdir()  # a method that did not apply saved nothing
    grid = run_image_grid({"ran": tmp_path / "ran", "skipped": tmp_path / "skipped"}, tmp_path / "grid.png")
    assert grid is not None and grid.is_file()
    assert run_image_grid({"skipped": tmp_path / "skipped"}, tmp_path / "none.png") is None


def test_a_job_run_again_into_its_folder_supersedes_the_first_run(tmp_path: Path) -> None:
    """Two runs appended to one results.csv (the same OUT reused): only the newest is aggregated."""
    old = make_records(seed=0, methods=METHODS[:1]).assign(run_id="20260101-000000-aaaaaa")
    new = make_records(seed=1, methods=METHODS[:1]).assign(run_id="20260102-000000-bbbbbb")
    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    pd.concat([old, new], ignore_index=True).to_csv(job / RESULTS_FILE, index=False)
    with pytest.warns(UserWarning, match=r"no unit keys; \d+ rows repeat a unit of a newer run"):
        combined = load_results([tmp_path / "sweep"])
    assert set(combined["run_id"]) == {"20260102-000000-bbbbbb"} and len(combined) == len(new)
    psnr = combined[combined["metric"] == "psnr"]["value"].to_numpy()
    np.testing.assert_allclose(psnr, new[new["metric"] == "psnr"]["value"].to_numpy())


def test_a_combined_table_without_unit_keys_keeps_every_job(tmp_path: Path) -> None:
    """A committed results_all.csv of several jobs (one run each, different methods) that predates
    unit keys keeps every job's rows, not only the newest run's."""
    first = make_records(seed=0, methods=METHODS[:1]).assign(run_id="20260101-000000-aaaaaa")
    second = make_records(seed=1, methods=METHODS[1:2]).assign(run_id="20260102-000000-bbbbbb")
    table = pd.concat([first, second], ignore_index=True).drop(columns=["unit_key"], errors="ignore")
    table.to_csv(tmp_path / "results_all.csv", index=False)
    combined = load_results([tmp_path / "results_all.csv"])
    assert set(combined["inverter"]) == {name for name, _ in METHODS[:2]} and len(combined) == len(table)


def test_two_checkpoints_under_one_config_name_are_two_rows() -> None:
    from eval.report.tables import summarize as table_summary
    from eval.summary import means_table

    records = make_records(n_images=3)
    one = records[records["model"] == records["model"].iloc[0]].copy()
    first = one["image"] == one["image"].iloc[0]
    one["checkpoint"] = "folder_a@11111111"
    one.loc[first, "checkpoint"] = "folder_b@22222222"
    models = set(table_summary(one)["model"])
    name = records["model"].iloc[0]
    assert models == {f"{name} (folder_a@11111111)", f"{name} (folder_b@22222222)"}
    assert f"{name} (folder_b@22222222)" in means_table(one)
    one["checkpoint"] = "folder_a@11111111"
    assert set(table_summary(one)["model"]) == {name}  # one checkpoint: the name as it is
