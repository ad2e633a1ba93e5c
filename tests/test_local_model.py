"""``model=local model.path=DIR``: any diffusers folder, family from model_index.json, dtype from the
device, image size from the checkpoint; rows name the checkpoint, not the config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from eval.records import RESULTS_FILE, read_records
from eval.validate import ConfigError, adapter_family, check_schedule, model_family
from gnri.models import auto_dtype, folder_family
from gnri.models.tiny import save_tiny
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py

ROOT = Path(__file__).resolve().parents[1]
FAST = ["max_images=1", "warmup=0", "progress=false", "time_network=false"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("local_models")
    return {family: save_tiny(family, root / f"my_{family}") for family in ("sd", "flux")}


def test_family_comes_from_model_index(folders: dict[str, Path], tmp_path: Path) -> None:
    assert folder_family(folders["sd"]) == "sd" and folder_family(folders["flux"]) == "flux"
    assert model_family({"path": str(folders["flux"])}) == "flow"
    with pytest.raises(ConfigError, match="model_index.json"):
        adapter_family({"path": str(tmp_path)})
    (tmp_path / "model_index.json").write_text('{"_class_name": "AudioLDMPipeline"}')
    with pytest.raises(ConfigError, match="names pipeline 'AudioLDMPipeline'; supported: StableDiffusionPipeline"):
        adapter_family({"path": str(tmp_path)})
    with pytest.raises(ConfigError, match="does not apply to model=local"):
        check_schedule("local", {"path": str(folders["flux"])}, "ddim10", "ddim")


def test_dtype_follows_the_device() -> None:
    assert auto_dtype("sd", "cpu") == "float32" and auto_dtype("flux", "cpu") == "float32"
    assert auto_dtype("sd", "cuda:1") == "float16" and auto_dtype("flux", "cuda") == "bfloat16"


def test_one_override_runs_a_local_folder(local_runs) -> None:
    root, codes, stderr = local_runs
    out = root / "sd"
    assert codes["sd"] == 0, stderr["sd"][-2000:]
    assert "warn" not in stderr["sd"].lower().replace("load average", "")  # no dtype / size warnings
    df = read_records(out / RESULTS_FILE)
    assert (df["status"] == "ok").all()
    assert df["dtype"].unique().tolist() == ["float32"] and df["model"].unique().tolist() == ["my_sd"]  # the folder's name
    assert df["checkpoint"].iloc[0].startswith("my_sd@") and df["adapter"].iloc[0] == "my_sd"


def test_model_local_without_path_is_one_line(local_runs) -> None:
    root, codes, stderr = local_runs
    assert codes["no_path"] == 2
    assert stderr["no_path"].strip() == "run.py: model=local needs model.path=<a local diffusers pipeline folder>"


def test_a_flux_folder_runs_on_the_flow_default_schedule_with_its_label(local_runs) -> None:
    """No schedule= given: the flow family's default (flow4), not conf/config.yaml's ddim10;
    model.name= labels the rows."""
    root, codes, stderr = local_runs
    out = root / "flux"
    assert codes["flux"] == 0, stderr["flux"][-2000:]
    df = read_records(out / RESULTS_FILE)
    assert set(df["status"]) == {"ok", "unavailable"}  # unavailable: the time_network=false rows
    assert set(df["schedule"]) == {"flow4"} and set(df["model"]) == {"my_label"}
    assert df["checkpoint"].iloc[0].startswith("my_flux@")


def test_an_explicit_schedule_wins_over_the_family_default(local_runs) -> None:
    root, codes, stderr = local_runs
    assert codes["explicit"] == 2 and "schedule=ddim10 (kind ddim) does not apply to model=local" in stderr["explicit"]


def test_default_schedule_follows_the_family_without_loading(folders: dict[str, Path]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gnri_bench_run_local", ROOT / "run.py")
    run = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(run)  # type: ignore[union-attr]
    flux = ["model=local", f"model.path={folders['flux']}"]
    assert run.default_schedule(flux) == [*flux, "schedule=flow4"]
    assert run.default_schedule(["model=tiny_flux"]) == ["model=tiny_flux", "schedule=flow4"]
    for unchanged in (["model=local", f"model.path={folders['sd']}"], [], ["model=tiny_sd"], [*flux, "schedule=flow8"],
                      [*flux, "experiment=tiny_sweep"], ["model=local"], ["-m", "model=tiny_sd,tiny_flux"]):
        assert run.default_schedule(unchanged) == unchanged


@pytest.fixture(scope="module")
def pickled(tmp_path_factory) -> Path:
    """The tiny SD pipeline with pickle (.bin) weights only: refused unless model.allow_pickle=true."""
    import torch
    from safetensors.torch import load_file

    from gnri.models.tiny import tiny_pipeline

    folder = tmp_path_factory.mktemp("pickled") / "my_pickled"
    tiny_pipeline("sd", seed=3).save_pretrained(folder, safe_serialization=False)
    for file in folder.rglob("*.safetensors"):  # transformers 5 writes safetensors regardless
        torch.save(load_file(file), file.with_name("pytorch_model.bin"))
        file.unlink()
    return folder


@pytest.fixture(scope="module")
def local_runs(folders: dict[str, Path], pickled: Path,
               tmp_path_factory) -> tuple[Path, dict[str, int], dict[str, str]]:
    """This module's unmarked run.py runs in one child process (tests/run_many.py: run.py's __main__ once per
    run, each with its own exit status and stderr): (their folder, exit codes, stderrs). The SD run goes first,
    so that its stderr holds whatever the first import in a fresh process prints (it must hold no warning)."""
    root = tmp_path_factory.mktemp("local_runs")
    codes = run_in_one_process([
        ("sd", ["model=local", f"model.path={folders['sd']}", "inverter=ddim", "schedule.num_steps=2", "max_images=1",
                "warmup=0", "progress=false", f"hydra.run.dir={root / 'sd'}"]),
        ("no_path", ["model=local", f"hydra.run.dir={root / 'no_path'}"]),
        ("flux", ["model=local", f"model.path={folders['flux']}", "model.name=my_label", *FAST,
                  f"hydra.run.dir={root / 'flux'}"]),
        ("explicit", ["model=local", f"model.path={folders['flux']}", "schedule=ddim10",
                      f"hydra.run.dir={root / 'explicit'}"]),
        ("pickled_sweep", ["-m", "model=local", f"model.path={pickled}", *FAST,
                           f"hydra.sweep.dir={root / 'pickled_sweep'}"]),
    ], root / "logs", timeout=900)
    return root, codes, {name: (root / "logs" / f"{name}.err").read_text(encoding="utf-8") for name in codes}


@pytest.mark.slow
def test_a_model_that_cannot_load_stops_a_single_run_in_one_line(folders: dict[str, Path], pickled: Path,
                                                                 tmp_path: Path) -> None:
    """Refused pickle, a missing component, a folder holding the pipeline one level down: one line on
    stderr, exit 2, no rows. The three runs share one process (tests/run_many.py: run.py's __main__ once per
    run, each with its own stderr)."""
    broken = tmp_path / "no_vae"
    shutil.copytree(folders["sd"], broken)
    shutil.rmtree(broken / "vae")
    wrapped = tmp_path / "download"
    shutil.copytree(folders["sd"], wrapped / "pipeline")
    logs = tmp_path / "logs"
    codes = run_in_one_process([
        ("pickled", ["model=local", f"model.path={pickled}", *FAST, f"hydra.run.dir={tmp_path / 'run'}"]),
        ("no_vae", ["model=local", f"model.path={broken}", *FAST, f"hydra.run.dir={tmp_path / 'run2'}"]),
        ("wrapped", ["model=local", f"model.path={wrapped}", *FAST, f"hydra.run.dir={tmp_path / 'run3'}"]),
    ], logs, timeout=600)
    stderr = {name: (logs / f"{name}.err").read_text(encoding="utf-8") for name in codes}

    assert codes["pickled"] == 2, stderr["pickled"][-2000:]
    assert stderr["pickled"].strip().splitlines() == [stderr["pickled"].strip()], stderr["pickled"][-2000:]
    assert stderr["pickled"].startswith("run.py: model=local could not be loaded: PickleWeightsError: ")
    assert "model.allow_pickle=true" in stderr["pickled"] and not (tmp_path / "run" / RESULTS_FILE).exists()

    # above the line: diffusers' progress bars
    assert codes["no_vae"] == 2 and "Traceback" not in stderr["no_vae"], stderr["no_vae"][-2000:]
    assert stderr["no_vae"].strip().splitlines()[-1].startswith("run.py: model=local could not be loaded: OSError: ")
    assert not (tmp_path / "run2" / RESULTS_FILE).exists()

    assert codes["wrapped"] == 2
    assert stderr["wrapped"].strip() == (f"run.py: model.path: no model_index.json in {wrapped}; {wrapped}/pipeline has "
                                         f"one: use model.path={wrapped}/pipeline")


def test_a_model_that_cannot_load_is_failed_rows_in_a_multirun(local_runs) -> None:
    root, codes, stderr = local_runs
    assert codes["pickled_sweep"] == 0, stderr["pickled_sweep"][-2000:]
    df = read_records(root / "pickled_sweep" / "0" / RESULTS_FILE)
    assert (df["status"] == "failed").all() and df["reason"].str.contains("allow_pickle").all()
