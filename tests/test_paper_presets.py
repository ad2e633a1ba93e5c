"""Paper presets: every ``conf/experiment/paper_*.yaml`` runs in smoke mode (the tiny model of its
family, 1 image, CPU) through run.py's whole sweep; without a GPU or data a preset stops in one line.

The smoke sweeps run as one: a single Python process (``tests/run_many.py``) runs run.py's
``-m experiment=<preset> smoke=true`` for every selected preset in turn (one start, one torch import),
shared by the module's tests (scripts/test.sh's ``--dist loadfile``: one worker runs this file, first);
each test then checks its own preset's exit status and rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from eval.presets import smoke_arguments
from eval.records import read_records
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("paper_*.yaml"))


def test_the_paper_presets_exist() -> None:
    assert {"paper_recon_sd21", "paper_recon_sdxl_turbo", "paper_recon_flux", "paper_convergence", "paper_lambda",
            "paper_timing", "paper_edit_sdxl_turbo", "paper_edit_flux"} <= set(PRESETS)


@pytest.fixture(scope="module")
def smoke_sweep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where every selected preset's smoke sweep ran (``<preset>/<job>/results.csv``,
    ``<preset>.err``, ``exit_codes.json``): one process for all of them (``tests/run_many.py``)."""
    mine = [item for item in request.session.items if item.module is request.module and hasattr(item, "callspec")]
    wanted = sorted({item.callspec.params["preset"] for item in mine if "preset" in item.callspec.params})
    out = tmp_path_factory.mktemp("paper_presets")
    runs = [(preset, ["-m", f"experiment={preset}", "smoke=true", "progress=false", f"hydra.sweep.dir={out / preset}"])
            for preset in wanted]
    run_in_one_process(runs, out)  # writes out/exit_codes.json, read by each test
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_in_smoke_mode(preset: str, smoke_sweep: Path) -> None:
    codes = json.loads((smoke_sweep / "exit_codes.json").read_text(encoding="utf-8"))
    assert codes[preset] == 0, (smoke_sweep / f"{preset}.err").read_text(encoding="utf-8")[-2000:]
    sweep = OmegaConf.load(ROOT / "conf" / "experiment" / f"{preset}.yaml").hydra.sweeper.params
    jobs = 1
    for values in sweep.values():
        jobs *= len(str(values).split(","))
    tables = [read_records(p) for p in sorted((smoke_sweep / preset).glob("*/results.csv"))]
    assert len(tables) == jobs  # every configuration of the preset ran
    rows = pd.concat(tables)
    assert set(rows["model"]).issubset({"tiny_sd", "tiny_sdxl_turbo", "tiny_flux"})
    assert '"paper_preset":"' + preset + '"' in rows["config"].iloc[0]
    assert (rows["status"] == "ok").any()
    assert not (rows["status"] == "failed").any(), rows[rows["status"] == "failed"][["inverter", "reason"]].head()
    # Every inverter the preset lists ran: ok rows, or (none ok) each row's recorded reason names why not.
    listed = set(str(sweep["inverter"]).split(","))
    method = rows["inverter"].astype(str).str.split("+").str[0]  # edit rows: <inverter>+<editor>
    assert set(method) == listed, f"{preset}: rows' inverters {sorted(set(method))} != the preset's {sorted(listed)}"
    for name in sorted(listed):
        mine = rows[method == name]
        if (mine["status"] == "ok").any():
            continue
        reasons = mine["reason"].fillna("").astype(str).str.strip()
        assert (reasons != "").all(), f"{preset}: {name} has no ok row and no reason: {mine[['metric', 'status']].head()}"


def test_without_a_gpu_a_preset_stops_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=paper_recon_flux", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "run.py: device=cuda: no CUDA device on this machine; add smoke=true to run this preset on its tiny model "
        "on the CPU")


def test_smoke_arguments_add_the_stand_ins_and_keep_the_users_own(tmp_path: Path) -> None:
    conf = ROOT / "conf"
    args, error = smoke_arguments(["experiment=paper_recon_flux", "smoke=true", "max_images=3"], conf)
    assert error is None
    assert "model=tiny_flux" in args and "device=cpu" in args
    assert "max_images=1" not in args and "max_images=3" in args  # the user's value wins over the preset's 1
    assert smoke_arguments(["smoke=true"], conf)[1].startswith("run.py: smoke=true needs exactly one experiment=")
    assert "has no smoke_overrides" in smoke_arguments(["experiment=world_flow", "smoke=true"], conf)[1]
    assert smoke_arguments(["experiment=paper_recon_flux"], conf) == (["experiment=paper_recon_flux"], None)
