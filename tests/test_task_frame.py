"""The task frame (issue 24): a new task is one file plus one config, run by name through run.py
without touching this project's files; the frame turns its values and exceptions into rows.

The toy task below is written to a temporary package (``toy_task.py``) and its config to a user
config folder (``task/toy.yaml``, naming the class with ``task._target_``), as an outside author
would: ``git status`` of the project is untouched.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from eval.data import sample_dataset
from eval.settings import RunSettings
from eval.tasks import TASKS, run, task_class
from gnri.models.base import ScheduleSpec
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py

ROOT = Path(__file__).resolve().parents[1]
TOY_TASK = '''
from dataclasses import dataclass
from typing import ClassVar

import torch

from eval.task import Skip, TaskRun


@dataclass
class Toy(TaskRun):
    """Each image's latent mean: ``toy_latent_mean``; the second image is skipped, the third fails."""

    name: ClassVar[str] = "toy"

    def directions(self):
        return {"toy_latent_mean": True, "toy_scale": True}

    def measure_one(self, unit):
        if unit.index == 1:
            raise Skip("the toy skips its second image")
        if unit.index == 2:
            raise RuntimeError("the toy fails its third image")
        with torch.no_grad():
            latent = self.adapter.encode_images(torch.zeros(1, 3, *self.adapter.image_size()))
        return {"toy_latent_mean": float(latent.mean()),
                "toy_scale": float(self.settings.task_params.get("scale", 1.0))}
'''
TOY_CONFIG = """\
# @package _global_
task:
  name: toy
  _target_: toy_task.Toy
  scale: 2.5
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the package folder holding toy_task.py, the user config folder holding task/toy.yaml)."""
    root = tmp_path_factory.mktemp("toy")
    (root / "pkg").mkdir()
    (root / "pkg" / "toy_task.py").write_text(textwrap.dedent(TOY_TASK), encoding="utf-8")
    (root / "conf" / "task").mkdir(parents=True)
    (root / "conf" / "task" / "toy.yaml").write_text(TOY_CONFIG, encoding="utf-8")
    return root / "pkg", root / "conf"


GIT_STATUS = ["git", "status", "--porcelain", "--", "conf", "eval", "gnri", "run.py"]  # what a new task would touch


@pytest.fixture(scope="module")
def task_runs(toy: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int], str]:
    """This module's run.py runs in one child process (tests/run_many.py: run.py's __main__ once per run, each with
    its own exit status and stderr), the toy task's folder on PYTHONPATH: (their folder, exit codes, git status
    before them). The unknown task runs first, so that its stderr holds whatever a fresh process prints."""
    package, conf = toy
    root = tmp_path_factory.mktemp("task_runs")
    before = subprocess.run(GIT_STATUS, cwd=ROOT, capture_output=True, text=True).stdout
    env = {**os.environ, "PYTHONPATH": f"{package}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    codes = run_in_one_process([
        ("unknown", ["task.name=nosuch", "model=tiny_sd", "dataset=sample", f"hydra.run.dir={root / 'unknown'}"]),
        ("toy", ["--config-dir", str(conf), "task=toy", "model=tiny_sd", "dataset=sample", "max_images=3",
                 "schedule.num_steps=2", "progress=false", f"hydra.run.dir={root / 'run'}"]),
    ], root / "logs", env=env, timeout=600)
    return root, codes, before


def test_a_new_task_is_one_file_and_one_config(task_runs: tuple[Path, dict[str, int], str]) -> None:
    root, codes, before = task_runs
    assert codes["toy"] == 0, (root / "logs" / "toy.err").read_text(encoding="utf-8")[-2000:]
    rows = pd.read_csv(root / "run" / "results.csv")
    assert len(rows) == 3 * 2 and set(rows["metric"]) == {"toy_latent_mean", "toy_scale"}
    status = [set(rows[rows["image"] == image]["status"]) for image in rows["image"].unique()]  # plan order
    assert status == [{"ok"}, {"skipped"}, {"failed"}]
    assert (rows[rows["metric"] == "toy_scale"]["value"].dropna() == 2.5).all()
    assert "RuntimeError: the toy fails its third image" in set(rows["reason"])
    after = subprocess.run(GIT_STATUS, cwd=ROOT, capture_output=True, text=True).stdout
    assert before == after


def test_an_unknown_task_is_one_line_before_loading(task_runs: tuple[Path, dict[str, int], str]) -> None:
    root, codes, _ = task_runs
    assert codes["unknown"] == 2
    assert (root / "logs" / "unknown.err").read_text(encoding="utf-8").strip() == (
        "run.py: task.name='nosuch' is not a task; valid: reconstruct, edit, interpolate, "
        "exact, edit_chain, seed_select (or give task._target_: package.module.TaskClass)")
    with pytest.raises(ValueError, match="is not an eval.task.TaskRun subclass"):
        task_class("x", "eval.settings.RunSettings")


def test_every_shipped_task_resolves_and_has_a_config() -> None:
    for name in TASKS:
        assert task_class(name).name == name
        assert (ROOT / "conf" / "task" / f"{name}.yaml").is_file()


def test_the_frame_records_a_model_that_cannot_be_built(toy: tuple[Path, Path], monkeypatch) -> None:
    from eval.task import BrokenAdapter

    monkeypatch.syspath_prepend(str(toy[0]))
    settings = RunSettings(ScheduleSpec("ddim", 2), "ddim", task="toy", progress=False)
    table = run(settings, BrokenAdapter("gone", OSError("no such folder")), lambda *a: None, sample_dataset()[:2],
                target="toy_task.Toy")
    assert (table["status"] == "failed").all()
    assert set(table["reason"]) == {"model gone could not be built: OSError: no such folder"}
