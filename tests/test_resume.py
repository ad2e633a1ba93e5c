"""Resume by content key: finished units are skipped, torn lines and partial units dropped,
other settings' rows set aside, keys follow content (not names), and a real kill -9 loses at
most the unit in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from baselines import ddim
from eval.data import Entry, sample_dataset
from eval.tasks.reconstruct import evaluate
from eval.identity import Checkpoint
from eval.metrics import build_metrics
from eval.records import TIMING_METRICS, HARNESS_METRICS, RESULTS_FILE, read_records
from eval.settings import RunSettings
from eval.store import PREVIOUS_FILE, STALE_FILE, ResultsStore
from eval.units import plan_units
from gnri.models.base import ScheduleSpec
from test_harness import ScriptedInverter, ToyAdapter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMING = TIMING_METRICS
NON_TIMING_COLUMNS = ["unit_key", "model", "checkpoint", "schedule", "inverter", "image", "caption", "metric",
                      "value", "status", "reason"]


def _run(tmp: Path, inverter, **kwargs) -> pd.DataFrame:
    options = {"warmup": 0, "progress": False} | kwargs
    return evaluate(ToyAdapter(), ScheduleSpec(num_steps=3), inverter, "scripted", sample_dataset()[:3],
                    build_metrics(["psnr"]), out_dir=tmp, **options)


def non_timing(df: pd.DataFrame) -> pd.DataFrame:
    """The rows' non-timing values, in order (timing rows keep their status, not their value)."""
    out = df[NON_TIMING_COLUMNS].copy()
    out.loc[out["metric"].isin(TIMING), "value"] = 0.0
    return out.reset_index(drop=True)


def test_a_finished_run_recomputes_nothing(tmp_path: Path) -> None:
    first_inverter = ScriptedInverter()
    first = _run(tmp_path, first_inverter)
    assert first_inverter.calls == 3 and first["unit_key"].nunique() == 3
    again = ScriptedInverter()
    second = _run(tmp_path, again)
    assert again.calls == 0
    pd.testing.assert_frame_equal(non_timing(first), non_timing(second))
    assert len(read_records(tmp_path / RESULTS_FILE)) == len(first)


def test_resume_false_starts_afresh_and_keeps_the_old_table(tmp_path: Path) -> None:
    _run(tmp_path, ScriptedInverter())
    again = ScriptedInverter()
    _run(tmp_path, again, resume=False)
    assert again.calls == 3
    assert (tmp_path / PREVIOUS_FILE).is_file()
    assert read_records(tmp_path / RESULTS_FILE)["unit_key"].nunique() == 3


def test_an_interrupted_run_resumes_the_rest(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, ScriptedInverter({2: "interrupt"}))
    assert read_records(tmp_path / RESULTS_FILE)["unit_key"].nunique() == 1
    rest = ScriptedInverter()
    resumed = _run(tmp_path, rest)
    assert rest.calls == 2
    clean = _run(tmp_path / "clean", ScriptedInverter())
    pd.testing.assert_frame_equal(non_timing(resumed), non_timing(clean))


def test_a_torn_last_line_is_dropped_never_parsed(tmp_path: Path) -> None:
    _run(tmp_path, ScriptedInverter())
    path = tmp_path / RESULTS_FILE
    text = path.read_text(encoding="utf-8")
    whole = read_records(path)
    rows_per_unit = len(whole) // 3
    lines = text.splitlines(keepends=True)
    cut = 1 + 2 * rows_per_unit + 5  # header, two whole units, five whole rows of the third
    path.write_text("".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2], encoding="utf-8")
    torn = read_records(path)
    assert len(torn) == 2 * rows_per_unit + 5  # the half line is not a row
    assert torn["value"].dtype.kind == "f"
    rerun = ScriptedInverter()
    table = _run(tmp_path, rerun)
    assert rerun.calls == 1  # only the unit whose rows were incomplete
    assert not table.duplicated(["unit_key", "metric"]).any() and table["unit_key"].nunique() == 3


def test_keys_follow_content_not_names(tmp_path: Path) -> None:
    entries = sample_dataset()[:2]
    base = RunSettings(schedule=ScheduleSpec(num_steps=3), inverter="ddim", inverter_params={"timestep": "dst"},
                       model="sd15", checkpoint=Checkpoint("folder@abc", {"fingerprint": "abc"}))
    keys = [u.key for u in plan_units(base, entries)]
    assert len(set(keys)) == 2
    assert [u.key for u in plan_units(base.with_(model="renamed", warmup=5, out_dir=tmp_path), entries)] == keys
    other_weights = Checkpoint("folder@def", {"fingerprint": "def"})
    for changed in (base.with_(inverter_params={"timestep": "src"}), base.with_(seed=1), base.with_(checkpoint=other_weights),
                    base.with_(guidance_scale=2.0), base.with_(schedule=ScheduleSpec(num_steps=4))):
        assert [u.key for u in plan_units(changed, entries)] != keys
    copy = tmp_path / entries[0].image_id
    copy.write_bytes(entries[0].path.read_bytes())  # same bytes elsewhere: same key
    assert plan_units(base, [Entry(entries[0].image_id, copy, entries[0].caption)])[0].key == keys[0]
    copy.write_bytes(entries[1].path.read_bytes())  # other bytes under the same name: a new key
    assert plan_units(base, [Entry(entries[0].image_id, copy, entries[0].caption)])[0].key != keys[0]


def test_rows_of_other_settings_move_aside(tmp_path: Path) -> None:
    _run(tmp_path, ScriptedInverter(), seed=0)
    table = _run(tmp_path, ScriptedInverter(), seed=1)
    assert table["seed"].unique().tolist() == [1]
    assert read_records(tmp_path / STALE_FILE)["seed"].unique().tolist() == [0]


def test_rank_files_are_gathered_in_plan_order(tmp_path: Path) -> None:
    table = _run(tmp_path, ScriptedInverter())
    units = plan_units(RunSettings(schedule=ScheduleSpec(num_steps=3), inverter="scripted"), sample_dataset()[:3])
    rows_per_unit = len(table) // 3
    path = tmp_path / RESULTS_FILE
    frame = read_records(path)
    # as a 2-rank run would leave them: rank 1 holds the last unit, rank 0 the first two, and no results.csv
    frame.iloc[2 * rows_per_unit:].to_csv(tmp_path / "results.rank1.csv", index=False)
    frame.iloc[: 2 * rows_per_unit].to_csv(tmp_path / "results.rank0.csv", index=False)
    path.unlink()
    merged = ResultsStore(tmp_path).consolidate(units, rows_per_unit)
    pd.testing.assert_frame_equal(non_timing(merged), non_timing(table))
    assert not list(tmp_path.glob("results.rank*.csv"))


def _run_py(run_dir: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "run.py"), "model=tiny_sd", "inverter=ddim", "schedule.num_steps=2",
            "max_images=5", "warmup=0", "progress=false", f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_a_unit(proc: subprocess.Popen, results: Path) -> None:
    """Return once ``results`` holds a unit's rows, with ``proc`` still running."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and read_records(results)["unit_key"].nunique() >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be stopped:\n" + proc.communicate()[0][-2000:]


@pytest.mark.slow
def test_kill_9_mid_run_then_the_same_command_finishes_it(tmp_path: Path) -> None:
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    proc = _run_py(killed_dir)
    results = killed_dir / RESULTS_FILE
    _wait_for_a_unit(proc, results)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    sizes = read_records(results).groupby("unit_key").size()
    done_before = int((sizes == 1 + len(HARNESS_METRICS)).sum())  # psnr + the harness's rows: whole units
    assert 1 <= done_before < 5
    resumed = _run_py(killed_dir)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out[-2000:]
    assert f"resumed {done_before} of 5 units" in out
    clean = _run_py(clean_dir)
    assert clean.wait(timeout=300) == 0
    after, reference = read_records(results), read_records(clean_dir / RESULTS_FILE)
    assert not after.duplicated(["unit_key", "metric"]).any()
    pd.testing.assert_frame_equal(non_timing(after), non_timing(reference))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_end_in_one_line_with_the_summary_written(tmp_path: Path, sig: int) -> None:
    run_dir = tmp_path / "run"
    proc = _run_py(run_dir)
    _wait_for_a_unit(proc, run_dir / RESULTS_FILE)
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-2000:]
    assert "Traceback" not in out
    assert out.strip().splitlines()[-1].startswith("run.py: interrupted")
    assert "Interrupted: finished units only" in (run_dir / "summary.md").read_text()
    resume = f"to resume, run: python {ROOT / 'run.py'} model=tiny_sd inverter=ddim"  # the command as typed
    assert resume in out and out.strip().endswith(f"hydra.run.dir={run_dir}")
    assert resume in (run_dir / "summary.md").read_text()
