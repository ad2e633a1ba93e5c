"""Batch 1 against batch B, side by side in one process, on the world models: PSNR and time per image.

    python scripts/bench_batching.py                       # B = 4, 8 images, a few inverters, both world models
    python scripts/bench_batching.py --batch 8 --images 16 --inverters ddim,gnri_official

For each model x inverter it runs :func:`eval.tasks.reconstruct.evaluate` at batch 1 and at batch B on the
same images (after one warm-up each) and prints the largest per-image PSNR difference and the
per-image time ratio (batch B / batch 1). Run it on a quiet machine: nothing else may share the
cores while it times (the run's ``machine`` column records the load).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.tasks.reconstruct import evaluate  # noqa: E402
from eval.metrics import build_metrics  # noqa: E402
from eval.world_data import world_adapter, world_dataset  # noqa: E402
from gnri.models.base import ScheduleSpec  # noqa: E402
from gnri.catalog import method_entry  # noqa: E402
from gnri.registry import schedule_fields  # noqa: E402

SETTINGS = {"world_sd": ("sd", "euler4_trailing"), "world_flux": ("flux", "flow4")}


def measure(model: str, inverter: str, batch: int, images: int) -> dict[str, float]:
    """Mean PSNR per image id and the mean per-image inversion time of one run."""
    family, schedule = SETTINGS[model]
    fn, params = method_entry(inverter)
    df = evaluate(world_adapter(family), ScheduleSpec(**schedule_fields(schedule)),
                  lambda d, x, g, c: fn(d, x, g, c, **params), inverter, world_dataset(max_images=images),
                  build_metrics(["psnr"]), warmup=1, progress=False, batch_size=batch, time_network=False,
                  model=model)
    ok = df[df["status"] == "ok"]
    psnr = ok[ok["metric"] == "psnr"].set_index("image")["value"]
    time = ok[ok["metric"] == "time_invert_s"]["value"].mean()
    return {"psnr": psnr, "time": time}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--models", default="world_sd,world_flux")
    parser.add_argument("--inverters", default="ddim,fixed_point3,gnri_official,gnri_aa,gnri")
    args = parser.parse_args()
    print(f"| model | inverter | max abs PSNR diff (dB) | time/image batch 1 (s) | batch {args.batch} (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for inverter in args.inverters.split(","):
            one = measure(model, inverter, 1, args.images)
            many = measure(model, inverter, args.batch, args.images)
            diff = (one["psnr"] - many["psnr"]).abs().max()
            print(f"| {model} | {inverter} | {diff:.4f} | {one['time']:.4f} | {many['time']:.4f} | "
                  f"{many['time'] / one['time']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
