"""The benchmark loop: rows, statuses, NFE, timing protocol, failures and interruption.

End to end on the tiny random-weight SD adapter; the failure paths on an analytic toy adapter
(identity "VAE", Gaussian posterior-mean denoiser), which runs in milliseconds.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import torch

from gnri.models.base import AdapterDefaults

from baselines import ddim
from eval.data import Entry, sample_dataset
from eval.task import BrokenAdapter
from eval.tasks.reconstruct import evaluate
from eval.metrics import build_metrics
from eval.records import (
    COLUMNS, HARNESS_METRICS, PROVENANCE_FILE, RESULTS_FILE, RunInfo, append_rows, provenance, read_records,
)
from eval.summary import summarize
from gnri.core import Conditioning, InversionResult
from gnri.models.base import ScheduleSpec
from gnri.toy import GaussianDenoiser, vp_grid

REQUIRED = {
    "run_id", "model", "schedule", "inverter", "image", "metric", "value", "status", "reason",
    "higher_is_better", "git_commit", "torch_version", "diffusers_version", "transformers_version",
    "device", "dtype", "inverter_params", "config",
}
PER_IMAGE = 1 + len(HARNESS_METRICS)  # psnr + the harness's own metrics
NETWORK_ROWS = ("time_network_call_s", "time_network_backward_s", "overhead_ratio_bare")  # the bare network clock


def toy_ok(df: pd.DataFrame) -> bool:
    """Every row ok, except the bare-network rows: the toy denoiser has no network to time."""
    net = df["metric"].isin(NETWORK_ROWS)
    return bool((df[~net]["status"] == "ok").all() and (df[net]["status"] == "unavailable").all())


@dataclass
class ToyAdapter(AdapterDefaults):
    """Identity "VAE" (latent = 2x - 1), analytic denoiser, VP grid; ddim schedules only."""

    name: str = "toy"
    family: str = "vp"
    guidance_distilled: bool = False
    size: int = 8

    def image_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return 2.0 * images - 1.0

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents + 1.0) / 2.0).clamp(0.0, 1.0)

    def encode_prompts(self, prompts, guidance_scale=1.0, negative_prompts=None) -> Conditioning:
        neg = {"shift": torch.tensor(0.0)} if guidance_scale != 1.0 else None
        return Conditioning({"shift": torch.tensor(0.1)}, neg, guidance_scale)

    def denoiser(self) -> GaussianDenoiser:
        return GaussianDenoiser(0.0, 0.5)

    def grid(self, schedule: ScheduleSpec, latent_shape):
        if schedule.kind != "ddim":
            raise ValueError(f"toy model supports schedule kind ddim only, got {schedule.kind!r}")
        return vp_grid(schedule.num_steps).truncate(schedule.strength)


@dataclass
class ScriptedInverter:
    """DDIM inversion, except on the calls listed in ``actions`` (1-based call number)."""

    actions: dict[int, str] = field(default_factory=dict)
    calls: int = 0

    def __call__(self, denoiser, x0, grid, cond) -> InversionResult:
        self.calls += 1
        action = self.actions.get(self.calls)
        if action == "interrupt":
            raise KeyboardInterrupt
        if action == "not_applicable":
            raise ValueError("needs classifier-free guidance")
        if action == "crash":
            raise RuntimeError("boom\nsecond line")
        result = ddim.invert(denoiser, x0, grid, cond)
        if action == "nan":
            return InversionResult(result.z * math.nan, result.trajectory, result.steps)
        return result


@dataclass
class FakeMetric:
    name: str
    higher_is_better: bool = True
    missing: str | None = None
    raises: bool = False

    def unavailable_reason(self) -> str | None:
        return self.missing

    def __call__(self, pred, target, prompts=None):
        if self.raises:
            raise RuntimeError("metric exploded")
        return torch.ones(pred.shape[0])


def _toy_run(inverter, tmp_path: Path | None = None, entries=None, **kwargs) -> pd.DataFrame:
    options = {"warmup": 0, "progress": False, "inverter_params": {}} | kwargs
    return evaluate(
        ToyAdapter(), options.pop("schedule", ScheduleSpec(num_steps=3)), inverter, "scripted",
        entries if entries is not None else sample_dataset()[:2], options.pop("metrics", build_metrics(["psnr"])),
        out_dir=tmp_path, **options,
    )


def _value(df: pd.DataFrame, image: str, metric: str) -> float:
    [value] = df[(df["image"] == image) & (df["metric"] == metric)]["value"]
    return float(value)


def test_tiny_sd_ddim_end_to_end(tiny_sd_adapter, tmp_path: Path) -> None:
    steps = 4
    entries = sample_dataset()[:2]
    df = evaluate(
        tiny_sd_adapter, ScheduleSpec(kind="ddim", num_steps=steps), functools.partial(ddim.invert), "ddim",
        entries, build_metrics(["psnr"]), model_name="tiny_sd", schedule_name="ddim4", warmup=1,
        repeats=1, out_dir=tmp_path, inverter_params={"timestep": "dst"}, config={"seed": 0}, progress=False,
    )
    assert list(df.columns) == list(COLUMNS) and REQUIRED <= set(df.columns)
    assert len(df) == 2 * PER_IMAGE and (df["status"] == "ok").all()
    assert df["value"].notna().all() and (df["reason"] == "").all()
    assert set(df["image"]) == {e.image_id for e in entries}
    assert set(df["model"]) == {"tiny_sd"} and set(df["adapter"]) == {"tiny_sd"}
    for image in df["image"].unique():
        assert _value(df, image, "nfe_forward") == steps
        assert _value(df, image, "nfe_forward_reconstruct") == steps
        assert _value(df, image, "nfe_backward") == 0
        gap = _value(df, image, "psnr_vae_ceiling") - _value(df, image, "psnr")
        assert _value(df, image, "psnr_gap_to_vae") == pytest.approx(gap, abs=1e-4)
        assert _value(df, image, "time_invert_s") > 0 and _value(df, image, "peak_memory_mb") > 0
        assert _value(df, image, "residual_rms_max") >= _value(df, image, "residual_rms_mean") >= 0
    assert set(df["num_steps"]) == {steps}
    assert json.loads(df["inverter_params"].iloc[0]) == {"timestep": "dst"}
    assert json.loads(df["schedule_params"].iloc[0])["num_steps"] == steps
    saved = read_records(tmp_path / RESULTS_FILE)
    pd.testing.assert_frame_equal(
        saved[["image", "metric", "status"]], df[["image", "metric", "status"]], check_dtype=False
    )
    assert saved["value"].to_numpy() == pytest.approx(df["value"].to_numpy())
    prov = json.loads((tmp_path / PROVENANCE_FILE).read_text())
    assert prov["torch_version"] == metadata.version("torch") and prov["device"] == "cpu"
    assert prov["schedule_params"]["num_steps"] == steps and prov["inverter"] == "ddim"
    assert summarize(df).splitlines()[2].startswith("> **Tiny random-weight model")


def test_interrupted_sweep_keeps_finished_rows(tmp_path: Path) -> None:
    inverter = ScriptedInverter({2: "interrupt"})
    with pytest.raises(KeyboardInterrupt):
        _toy_run(inverter, tmp_path)
    saved = read_records(tmp_path / RESULTS_FILE)
    assert len(saved) == PER_IMAGE and set(saved["image"]) == {sample_dataset()[0].image_id}
    assert toy_ok(saved)


def test_divergence_is_a_failed_row_and_the_sweep_goes_on(tmp_path: Path) -> None:
    df = _toy_run(ScriptedInverter({1: "nan"}), tmp_path)
    first, second = (e.image_id for e in sample_dataset()[:2])
    bad = df[df["image"] == first]
    assert len(bad) == PER_IMAGE and (bad["status"] == "failed").all() and bad["value"].isna().all()
    assert bad["reason"].str.contains("diverged: non-finite latent after inversion").all()
    assert toy_ok(df[df["image"] == second])
    assert len(read_records(tmp_path / RESULTS_FILE)) == 2 * PER_IMAGE


def test_value_error_is_skipped_and_other_errors_failed() -> None:
    df = _toy_run(ScriptedInverter({1: "not_applicable", 2: "crash"}))
    first, second = (e.image_id for e in sample_dataset()[:2])
    skipped, failed = df[df["image"] == first], df[df["image"] == second]
    assert (skipped["status"] == "skipped").all()
    assert (skipped["reason"] == "does not apply: needs classifier-free guidance").all()
    assert (failed["status"] == "failed").all() and (failed["reason"] == "RuntimeError: boom").all()


def test_bad_entries_are_skipped_rows(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    good = sample_dataset()[0]
    entries = [
        Entry("nocap.png", good.path, None, "missing caption for nocap.png"),
        Entry("broken.png", broken, "a caption"),
        good,
    ]
    df = _toy_run(ScriptedInverter(), entries=entries)
    by_image = df[~df["metric"].isin(NETWORK_ROWS)].groupby("image")["status"].agg(set).to_dict()
    assert by_image == {"nocap.png": {"skipped"}, "broken.png": {"skipped"}, good.image_id: {"ok"}}
    assert (df[df["image"] == "nocap.png"]["reason"] == "missing caption for nocap.png").all()
    assert df[df["image"] == "broken.png"]["reason"].str.startswith("cannot read image broken.png").all()


def test_unsupported_schedule_skips_every_image() -> None:
    inverter = ScriptedInverter()
    df = _toy_run(inverter, schedule=ScheduleSpec(kind="flow_euler", num_steps=2))
    assert (df["status"] == "skipped").all() and inverter.calls == 0
    assert df["reason"].str.contains("supports schedule kind ddim only").all()


def test_unavailable_and_failing_metrics_are_per_metric_rows() -> None:
    metrics = [FakeMetric("clip_score", missing="no CLIP weights here"), FakeMetric("ssim", raises=True)]
    df = _toy_run(ScriptedInverter(), metrics=metrics)
    status = df.groupby("metric")["status"].agg(set).to_dict()
    assert status["clip_score"] == {"unavailable"} and status["ssim"] == {"failed"}
    assert status["latent_rmse"] == {"ok"}
    assert (df[df["metric"] == "clip_score"]["reason"] == "no CLIP weights here").all()
    assert (df[df["metric"] == "ssim"]["reason"] == "RuntimeError: metric exploded").all()
    text = summarize(df)
    assert "no CLIP weights here" in text and "Tiny random-weight" not in text


def test_nfe_counts_cfg_twice_and_repeats_do_not_inflate_it() -> None:
    inverter = ScriptedInverter()
    df = _toy_run(inverter, guidance_scale=2.0, repeats=3, warmup=2, entries=sample_dataset()[:1])
    assert inverter.calls == 2 + 3  # warm-up, then the timed repeats
    assert _value(df, sample_dataset()[0].image_id, "nfe_forward") == 2 * 3
    assert _value(df, sample_dataset()[0].image_id, "nfe_forward_reconstruct") == 2 * 3
    assert set(df["guidance_scale"]) == {2.0}


def test_summary_counts_problems_with_reasons() -> None:
    df = _toy_run(ScriptedInverter({1: "nan", 2: "not_applicable"}), entries=sample_dataset()[:3])
    text = summarize(df)
    assert "| toy | ddim | scripted | failed | 1 image(s) | diverged: non-finite latent after inversion |" in text
    assert "| skipped | 1 image(s) | does not apply: needs classifier-free guidance |" in text
    assert "(n=1)" in text  # only the third image is ok


def test_a_model_that_could_not_be_built_gives_failed_rows() -> None:
    try:
        raise RuntimeError("wrapper") from OSError("no weights offline")
    except RuntimeError as err:
        adapter = BrokenAdapter("sd15", err)
    df = evaluate(adapter, ScheduleSpec(num_steps=2), ScriptedInverter(), "ddim", sample_dataset()[:2],
                  build_metrics(["psnr"]), warmup=0, progress=False)
    assert len(df) == 2 * PER_IMAGE and (df["status"] == "failed").all()
    assert (df["reason"] == "model sd15 could not be built: OSError: no weights offline").all()


def test_records_round_trip_through_csv(tmp_path: Path) -> None:
    info = RunInfo("r1", "m", "s", "i", "a", 3, 1.0, 0, provenance("cpu", "float32", {"k": [1, 2]}, {}, {"x": "y"}))
    rows = [
        info.row("img,1.png", 'a "quoted", caption', "psnr", math.inf, "ok", "", True),
        info.row("img,1.png", 'a "quoted", caption', "nfe_forward", 3, "ok", "", False),
        info.row("img,1.png", 'a "quoted", caption', "clip_score", 0.5, "unavailable", "no weights", True),
    ]
    path = tmp_path / RESULTS_FILE
    append_rows(path, rows[:1])
    append_rows(path, rows[1:])
    back = read_records(path)
    assert list(back.columns) == list(COLUMNS) and len(back) == 3
    assert back["caption"].tolist() == ['a "quoted", caption'] * 3
    assert back["value"].iloc[0] == math.inf and back["value"].iloc[1] == 3.0 and math.isnan(back["value"].iloc[2])
    assert back["reason"].tolist() == ["", "", "no weights"]
    assert back["higher_is_better"].tolist() == [True, False, True]
    assert json.loads(back["inverter_params"].iloc[0]) == {"k": [1, 2]}
    with pytest.raises(ValueError, match="status must be one of"):
        info.row("x", "c", "psnr", 1.0, "broken", "", True)


def test_rows_record_the_machine_and_a_loaded_cpu_warns(tmp_path: Path, monkeypatch, caplog) -> None:
    import json

    import eval.machine as machine

    df = _toy_run(ScriptedInverter(), tmp_path)
    state = json.loads(df["machine"].iloc[0])
    assert state["cpu_count"] >= 1 and state["torch_threads"] >= 1 and state["cpu_model"]
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (99.0, 0.0, 0.0))
    with caplog.at_level("WARNING"):
        assert machine.warn_if_loaded("start of the timed work")
    assert "load average 99.0 exceeds" in caplog.text
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert not machine.warn_if_loaded("end")
    assert machine.load_limit(2) == 3.0 and machine.load_limit(16) == 20.0  # a lone run's own load is not a warning


class NaNDecoder(ToyAdapter):
    """The toy model whose decoder overflows: the latent is finite, the image is not."""

    def decode_latents(self, latents):
        return super().decode_latents(latents) * math.nan


def test_a_non_finite_image_after_decoding_is_a_failed_row_not_a_number(tmp_path: Path) -> None:
    df = evaluate(NaNDecoder(), ScheduleSpec(num_steps=3), ScriptedInverter(), "scripted", sample_dataset()[:1],
                  build_metrics(["psnr"]), warmup=0, progress=False, cache_dir=None)
    psnr_rows = df[df["metric"] == "psnr"]
    assert (psnr_rows["status"] == "failed").all() and psnr_rows["value"].isna().all()
    # the VAE round trip of the source decodes first (the ceiling): the same check stops it there
    assert psnr_rows["reason"].str.contains("non-finite values in the VAE round-trip image").all()


def test_a_really_diverging_configuration_gives_failed_rows(tiny_sd_adapter) -> None:
    from baselines import gradient_descent

    diverging = functools.partial(gradient_descent.invert, step_size=1e30, max_iters=3, warmup_iters=0)
    df = evaluate(tiny_sd_adapter, ScheduleSpec("ddim", 2), diverging, "gradient_descent", sample_dataset()[:1],
                  build_metrics(["psnr"]), warmup=0, progress=False, time_network=False)
    assert (df["status"] == "failed").all() and df["value"].isna().all()
    assert df["reason"].str.startswith("diverged: non-finite latent after inversion").all()


def test_a_truncated_caption_is_an_ok_row_with_the_warning(tiny_sd_adapter) -> None:
    good = sample_dataset()[0]
    long = Entry(good.image_id, good.path, " ".join(["a red circle on a blue background"] * 20))
    df = evaluate(tiny_sd_adapter, ScheduleSpec("ddim", 2), ddim.invert, "ddim", [long, sample_dataset()[1]],
                  build_metrics(["psnr"]), warmup=0, progress=False, time_network=False)
    first, second = df[df["image"] == good.image_id], df[df["image"] != good.image_id]
    psnr_row = first[first["metric"] == "psnr"].iloc[0]
    assert psnr_row["status"] == "ok" and psnr_row["reason"].startswith("caption truncated: text_encoder keeps")
    assert (second[second["status"] == "ok"]["reason"] == "").all()


def test_a_method_with_its_own_sampler_has_no_shared_step_residual() -> None:
    from baselines import edict

    df = _toy_run(edict.invert)
    residual = df[df["metric"].isin(["residual_rms_mean", "residual_rms_max"])]
    assert (residual["status"] == "unavailable").all() and residual["reason"].str.contains("own sampler").all()
    assert (_toy_run(ddim.invert).query("metric == 'residual_rms_mean'")["status"] == "ok").all()
