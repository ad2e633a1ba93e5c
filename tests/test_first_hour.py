"""First-hour faults (issue 24): the interrupt message names the command that resumes, and
``dataset.max_images=N`` works on every dataset."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from eval.records import RESULTS_FILE, read_records
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py

ROOT = Path(__file__).resolve().parents[1]
FAST = ["warmup=0", "progress=false", "time_network=false", "schedule.num_steps=2"]


@pytest.fixture(scope="module")
def run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gnri_bench_run_first_hour", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_resume_command_pins_the_run_folder(run_module: ModuleType) -> None:
    """The default run folder is time-stamped: the same command would start afresh, so the
    message gives the original arguments plus the folder that holds the finished units."""
    cmd = run_module.resume_command(["inverter=gnri", "max_images=4"], "/out/runs/2026-12-07/09-00-00", False)
    assert cmd == "python run.py inverter=gnri max_images=4 hydra.run.dir=/out/runs/2026-12-07/09-00-00"
    cmd = run_module.resume_command(["-m", "inverter=ddim,gnri", "hydra.sweep.dir=/old", "dataset.path=my images"],
                                    Path("/out/multiruns/x"), True)
    assert cmd == "python run.py -m inverter=ddim,gnri 'dataset.path=my images' hydra.sweep.dir=/out/multiruns/x"
    cmd = run_module.resume_command(["hydra.run.dir=/a"], "/a", False, script="/repo/run.py")
    assert cmd == "python /repo/run.py hydra.run.dir=/a"


@pytest.mark.slow
def test_dataset_max_images_is_accepted_on_every_dataset(run_module: ModuleType, tmp_path: Path) -> None:
    assert run_module.inverter_overrides(["dataset.max_images=4", "max_images=2"]) == [
        "++dataset.max_images=4", "max_images=2"]
    datasets = {"folder": ["dataset=folder", f"dataset.path={ROOT / 'datasets' / 'sample'}"], "sample": ["dataset=sample"]}
    # both runs in one process (tests/run_many.py: run.py's __main__ once per run)
    codes = run_in_one_process([(name, [*dataset, "dataset.max_images=1", *FAST, f"hydra.run.dir={tmp_path / name}"])
                                for name, dataset in datasets.items()], tmp_path / "logs", timeout=600)
    for name, dataset in datasets.items():
        assert codes[name] == 0, (tmp_path / "logs" / f"{name}.err").read_text(encoding="utf-8")[-2000:]
        df = read_records(tmp_path / name / RESULTS_FILE)
        assert df["image"].nunique() == 1, dataset
