"""Train every model of the embedded world from one seed, assemble the folders and measure them.

    nice -n 10 python -m scripts.world.train_all --seed 0 [--work /tmp/gnri_world]

Stages (each a module of this folder, run as a subprocess with OMP_NUM_THREADS (default 2) and
passive OpenMP waiting): manifests; the autoencoder and the CLIP model side by side; encoding
the training set to latents once; the UNet and the flow transformer side by side; assembling
``datasets/world/{sd,flux,clip}``; measuring them into ``datasets/world/metrics.json``. Wall
and CPU seconds of every stage go to ``datasets/world/training.json``. ``--quick`` runs a few
steps of everything (a smoke test of the whole chain, not for committing). ``--sequential``
runs the pairs one after the other. ``--resume`` keeps the work folder, skips the stages that
finished (they left ``record-<stage>.json``) and lets the UNet and flow stages continue from
their last checkpoint; without it the work folder is emptied first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scripts.world.common import DEFAULT_WORK, ROOT, WORLD_DIR, records

RECORD = {"train_vae": "vae", "train_clip": "clip", "latents": "latents", "train_unet": "unet", "train_flow": "flow"}
QUICK = {"train_vae": ["--steps", "4", "--eval-every", "1000"], "train_clip": ["--steps", "4", "--eval-every", "1000"],
         "latents": ["--n", "500"], "train_unet": ["--steps", "4"], "train_flow": ["--steps", "4"],
         "measure": ["--n-gen", "4", "--no-write"]}


def launch(stage: str, args: list[str], work: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    env.setdefault("OMP_NUM_THREADS", "2")
    out = (work / f"{stage}.out").open("w")
    return subprocess.Popen([sys.executable, "-m", f"scripts.world.{stage}", *args], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT)


def run(stages: list[str], common: dict[str, list[str]], work: Path, quick: bool, parallel: bool) -> float:
    """Run ``stages`` (side by side if ``parallel``) except those already recorded as finished;
    raise naming the first that fails. Returns wall seconds."""
    t0 = time.time()
    procs = []
    for s in stages:
        if s in RECORD and (work / f"record-{RECORD[s]}.json").is_file():
            continue
        p = launch(s, common.get(s, []) + (QUICK.get(s, []) if quick else []), work)
        if not parallel:
            p.wait()
        procs.append((s, p))
    for s, p in procs:
        if p.wait() != 0:
            raise SystemExit(f"stage {s} failed (exit {p.returncode}); see {work / (s + '.out')}")
    return time.time() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--out", type=Path, default=WORLD_DIR)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sequential", action="store_true")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    if args.work.exists() and not args.resume:
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out if not args.quick else args.work / "world"
    seed, work = ["--seed", str(args.seed)], ["--work", str(args.work)]
    common = {"make_manifests": seed + ["--out", str(out / "manifests")],
              "train_vae": seed + work, "train_clip": seed + work, "latents": seed + work,
              "train_unet": seed + work, "train_flow": seed + work,
              "assemble": work + ["--out", str(out)], "measure": ["--world", str(out)]}
    walls = {}
    t0 = time.time()
    for group in (["make_manifests"], ["train_vae", "train_clip"], ["latents"], ["train_unet", "train_flow"],
                  ["assemble"]):
        walls["+".join(group)] = round(run(group, common, args.work, args.quick, not args.sequential), 1)
        print(f"{'+'.join(group)}: {walls['+'.join(group)]:.0f} s", flush=True)
    train_wall = time.time() - t0
    rec = records(args.work)
    cpu = sum(v.get("cpu_seconds", 0.0) for v in rec.values())
    summary = {"seed": args.seed, "stage_wall_seconds": walls, "training_wall_seconds": round(train_wall, 1),
               "training_cpu_seconds": round(cpu, 1), "threads": int(os.environ.get("OMP_NUM_THREADS", "2")),
               "stages": rec}
    (out / "training.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"training: {train_wall:.0f} s wall, {cpu:.0f} s cpu", flush=True)
    walls["measure"] = round(run(["measure"], common, args.work, args.quick, False), 1)
    print((args.work / "measure.out").read_text()[-3000:])


if __name__ == "__main__":
    main()
