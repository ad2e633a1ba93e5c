"""Measure what the resumable, cached, sharded loop buys, side by side in one run, and print it.

    python scripts/bench_sweeps.py --out /tmp/bench_sweeps            # everything (~15 min on 2 cores)
    python scripts/bench_sweeps.py --out /tmp/bench_sweeps --only resume,dp

Parts (each a set of ``run.py`` subprocesses on a quiet machine; run nothing else meanwhile):

- ``resume``: a tiny sweep (tiny_sd, ddim + fixed_point3, the 6 sample images) run clean; the
  same command again (nothing recomputed, its time against the first); the same sweep killed with
  SIGKILL mid-run and re-run with the same command: its table against the clean one (every
  non-timing value) and duplicate keys;
- ``dp``: one config on the world UNet with 2 data-parallel processes (accelerate, gloo, one
  thread each) against 1 process (two threads): equality of every non-timing value, wall ratio;
- ``cache``: ``experiment=world_euler4`` (every inverter) with the shared cache against
  ``cache=false``: the time outside inversion and reconstruction, summed over the jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.records import TIMING_METRICS, RESULTS_FILE, read_records  # noqa: E402

TIMING = TIMING_METRICS
KEEP = ["unit_key", "model", "checkpoint", "schedule", "inverter", "image", "metric", "value", "status", "reason"]
TINY = ["model=tiny_sd", "inverter=ddim,fixed_point3", "dataset=sample", "progress=false"]


def env(threads: int | None = None) -> dict[str, str]:
    out = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads is not None:
        out["OMP_NUM_THREADS"] = str(threads)
    return out


def run(args: list[str], threads: int | None = None) -> float:
    """Seconds one command took (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env(threads), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.perf_counter() - start


def table(folder: Path) -> pd.DataFrame:
    """Every results.csv under ``folder``, in job order, non-timing columns only."""
    frames = [read_records(p) for p in sorted(folder.rglob(RESULTS_FILE))]
    df = pd.concat(frames, ignore_index=True)[KEEP].copy()
    df.loc[df["metric"].isin(TIMING), "value"] = 0.0
    return df.reset_index(drop=True)


def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(a, b)
        return True
    except AssertionError as err:
        print(f"    differs: {str(err).splitlines()[0]}")
        return False


def timings(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("timings*.json"))]


def part_resume(out: Path) -> None:
    py = [sys.executable, "run.py", "-m", *TINY]
    clean, killed = out / "resume_clean", out / "resume_killed"
    first = run([*py, f"hydra.sweep.dir={clean}"])
    again = run([*py, f"hydra.sweep.dir={clean}"])
    recomputed = sum(t["computed"] for t in timings(clean))
    print(f"resume: clean sweep {first:.1f} s; same command again {again:.1f} s "
          f"(ratio {again / first:.3f}), units recomputed {recomputed}")
    proc = subprocess.Popen([*py, f"hydra.sweep.dir={killed}"], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = killed / "0" / RESULTS_FILE
    while proc.poll() is None and not (target.exists() and read_records(target)["unit_key"].nunique() >= 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = sum(read_records(p)["unit_key"].nunique() for p in killed.rglob(RESULTS_FILE))
    raw = target.read_bytes()
    torn = not raw.endswith(b"\n")
    rerun = run([*py, f"hydra.sweep.dir={killed}"])
    after = pd.concat([read_records(p) for p in killed.rglob(RESULTS_FILE)])
    dups = int(after.duplicated(["unit_key", "metric"]).sum())
    equal = same(table(killed), table(clean))
    print(f"resume: killed (SIGKILL) with {before} unit(s) written, last line torn: {torn}; re-run {rerun:.1f} s; "
          f"final table equals the clean run's (non-timing): {equal}; duplicate keys: {dups}")


def part_dp(out: Path) -> None:
    args = ["model=world_sd", "schedule=euler4_trailing", "inverter=gnri_official", "dataset=world", "progress=false"]
    one = run([sys.executable, "run.py", *args, f"hydra.run.dir={out / 'dp_one'}"], threads=2)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "run.py"]
    two = run([*launch, *args, f"hydra.run.dir={out / 'dp_two'}"], threads=1)
    equal = same(table(out / "dp_two"), table(out / "dp_one"))
    print(f"dp: 1 process (2 threads) {one:.1f} s; 2 processes (1 thread each) {two:.1f} s; "
          f"wall ratio 2/1 = {two / one:.3f}; every non-timing value equal: {equal}")


def outside_inversion(folder: Path) -> tuple[float, float, float]:
    """Summed over jobs: wall of the loop, preparation (encode, ceiling, prompts), and the
    loop's time outside timed inversion + reconstruction."""
    wall = sum(t["wall_s"] for t in timings(folder))
    prepare = sum(t.get("prepare_s", 0.0) for t in timings(folder))
    rows = pd.concat([read_records(p) for p in folder.rglob(RESULTS_FILE)])
    timed = rows[rows["metric"].isin(["time_invert_s", "time_reconstruct_s"]) & (rows["status"] == "ok")]
    return wall, prepare, wall - float(timed["value"].sum())


def part_cache(out: Path, max_images: int) -> None:
    py = [sys.executable, "run.py", "-m", "experiment=world_euler4", "progress=false", f"dataset.max_images={max_images}"]
    with_cache = run([*py, f"hydra.sweep.dir={out / 'cache_on'}"])
    without = run([*py, "cache=false", f"hydra.sweep.dir={out / 'cache_off'}"])
    on, off = outside_inversion(out / "cache_on"), outside_inversion(out / "cache_off")
    jobs = len(list((out / "cache_on").rglob(RESULTS_FILE)))
    print(f"cache: world_euler4, {jobs} inverters x {max_images} images; command {with_cache:.1f} s with, "
          f"{without:.1f} s without")
    print(f"cache: preparation (encode, VAE ceiling, prompts) {on[1]:.2f} s with / {off[1]:.2f} s without "
          f"(ratio {on[1] / off[1]:.3f}); loop time outside timed inversion+reconstruction {on[2]:.1f} / {off[2]:.1f} s "
          f"(ratio {on[2] / off[2]:.3f})")
    equal = same(table(out / "cache_on"), table(out / "cache_off"))
    print(f"cache: every non-timing value equal with and without: {equal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default="resume,dp,cache")
    parser.add_argument("--max-images", type=int, default=8, help="world images per job in the cache part")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {"resume": lambda: part_resume(args.out), "dp": lambda: part_dp(args.out),
             "cache": lambda: part_cache(args.out, args.max_images)}
    for name in args.only.split(","):
        parts[name]()


if __name__ == "__main__":
    main()
