"""Aggregate benchmark run folders into one table and plots.

Usage: python scripts/aggregate.py multirun/2026-01-01/12-00-00 [more dirs or results.csv ...]
           --out reports/sweep [--title "..."] [--sweep-param max_iters] [--reference ddim]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from eval.report.aggregate import aggregate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Aggregate results.csv files (e.g. a Hydra multirun dir).")
    parser.add_argument("paths", nargs="+", help="run folders (searched recursively) or results.csv files")
    parser.add_argument("--out", required=True, help="output folder for the combined table, tables and plots")
    parser.add_argument("--title", default=None, help="heading of the Markdown table")
    parser.add_argument(
        "--sweep-param", default=None, help="inverter hyperparameter swept across runs: draws convergence.png"
    )
    parser.add_argument(
        "--reference", default=None,
        help="method (label or inverter name) every method is compared with, image by image; default: the runs' "
             "configured reference, else ddim if present, else none",
    )
    args = parser.parse_args(argv)
    try:
        out = aggregate(args.paths, args.out, args.title, args.sweep_param, args.reference)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in [out.combined, *out.tables, *out.plots]:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
