"""``model=local model.path=DIR``: any diffusers folder, family from model_index.json, dtype from the
device, image size from the checkpoint; rows name the checkpoint, not the config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eval.records import RESULTS_FILE, read_records
from eval.validate import ConfigError, adapter_family, check_schedule, model_family
from gnri.models import auto_dtype, folder_family
from gnri.models.tiny import save_tiny

ROOT = Path(__file__).resolve().parents[1]


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


def test_one_override_runs_a_local_folder(folders: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "run.py", "model=local", f"model.path={folders['sd']}", "inverter=ddim",
         "schedule.num_steps=2", "max_images=1", "warmup=0", "progress=false", f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warn" not in proc.stderr.lower().replace("load average", "")  # no dtype / size warnings
    df = read_records(out / RESULTS_FILE)
    assert (df["status"] == "ok").all()
    assert df["dtype"].unique().tolist() == ["float32"] and df["model"].unique().tolist() == ["local"]
    assert df["checkpoint"].iloc[0].startswith("my_sd@") and df["adapter"].iloc[0] == "my_sd"


def test_model_local_without_path_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "run.py", "model=local", f"hydra.run.dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "run.py: model=local needs model.path=<a local diffusers pipeline folder>"
