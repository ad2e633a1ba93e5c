"""Scale on existing engines: accelerate data parallel (2 CPU processes, gloo) equals one process,
and Hydra's joblib and submitit-local launchers run a 2-job sweep; every launcher preset composes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from eval.records import RESULTS_FILE, read_records
from eval.summary import SUMMARY_FILE
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py
from test_resume import non_timing  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny_sd", "schedule.num_steps=2", "warmup=0", "progress=false"]
LAUNCHERS = sorted(p.stem for p in (ROOT / "conf" / "hydra" / "launcher").glob("*.yaml"))


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "WANDB_SILENT": "true", "WANDB_DIR": str(tmp / "wandb_dir"), "WANDB_CONFIG_DIR": str(tmp / "wandb_cfg"),
            "WANDB_CACHE_DIR": str(tmp / "wandb_cache"), "WANDB_DATA_DIR": str(tmp / "wandb_data")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path: Path) -> None:
    args = [*TINY, "inverter=ddim", "max_images=5", "logger=wandb_offline"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), "run.py"]
    two = subprocess.run([*launch, *args, f"hydra.run.dir={tmp_path / 'two'}"], cwd=ROOT, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    _check(two)
    one = subprocess.run([sys.executable, "run.py", *args, f"hydra.run.dir={tmp_path / 'one'}"], cwd=ROOT,
                         env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    _check(one)
    both, single = read_records(tmp_path / "two" / RESULTS_FILE), read_records(tmp_path / "one" / RESULTS_FILE)
    assert "rank 1/2: resumed 0 of 5 units; 2 to run here" in two.stdout + two.stderr
    pd.testing.assert_frame_equal(non_timing(both), non_timing(single))
    assert not list((tmp_path / "two").glob("results.rank*.csv")) and (tmp_path / "two" / SUMMARY_FILE).is_file()
    assert len(list((tmp_path / "two" / "wandb").glob("offline-run-*"))) == 1  # rank 0 alone logs


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launcher_runs_a_two_job_sweep(tmp_path: Path, launcher: str) -> None:
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", f"hydra/launcher={launcher}", *TINY, "inverter=ddim,fixed_point3",
         "max_images=1", f"hydra.sweep.dir={sweep}", "hydra.launcher.timeout_min=10" if "submitit" in launcher
         else "hydra.launcher.n_jobs=2"],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    _check(proc)
    tables = [read_records(p) for p in sorted(sweep.glob("*/" + RESULTS_FILE))]
    assert sorted(t["inverter"].iloc[0] for t in tables) == ["ddim", "fixed_point3"]
    # Every row ok, except the bare network's backward time, which the harness records as unavailable
    # ("clock noise") when, under the load of a parallel test run, forward+backward times no slower than forward.
    noisy = lambda t: (t["metric"] == "time_network_backward_s") & t["reason"].fillna("").str.contains("clock noise")  # noqa: E731
    bad = [t.loc[(t["status"] != "ok") & ~noisy(t), ["inverter", "metric", "status", "reason"]] for t in tables]
    assert all(b.empty for b in bad), [b.to_dict("records") for b in bad]
    assert (sweep / SUMMARY_FILE).is_file()


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int], Path]:
    """``run.py hydra/launcher=<name> --cfg hydra`` for every launcher preset, all in one process
    (tests/run_many.py): exit status by launcher, and the folder with each one's ``<name>.out``/``.err``."""
    out = tmp_path_factory.mktemp("launchers")
    return run_in_one_process([(name, [f"hydra/launcher={name}", "--cfg", "hydra"]) for name in LAUNCHERS], out,
                              timeout=300), out


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_preset_composes(launcher: str, composed: tuple[dict[str, int], Path]) -> None:
    codes, out = composed
    stdout, stderr = ((out / f"{launcher}{ext}").read_text(encoding="utf-8") for ext in (".out", ".err"))
    assert codes[launcher] == 0, (stdout + stderr)[-3000:]
    assert "_target_: hydra_plugins." in stdout


def test_presets_cover_the_named_engines() -> None:
    assert {"submitit_slurm", "submitit_local", "ray", "joblib"} <= set(LAUNCHERS)
