"""Issue 14's two ablation plots from ``scripts/bench_gnri.py --suite ablation`` tables.

    python scripts/plot_ablation.py results/bench_gnri/ablation_world_sd.txt results/bench_gnri/ablation_world_flux.txt

``--runs SWEEP...`` prints the jobs of harness sweeps (``run.py -m experiment=gnri_ablation*``)
as one markdown table instead. Writes ``ablation_lam.png`` (gap to the VAE ceiling against ``lam``, one line per model and grid:
the shape of the paper's Fig. C2) and ``ablation_iters.png`` (gap and median per-step residual
against Newton iterations) next to the first table. Each table block starts with a line
``N steps (kind...)``; rows are ``gnri[lam=...]`` and ``gnri[iters=...]``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEADER = re.compile(r"^(\d+) steps \(([^)]*)\)")


def read_blocks(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{setting: {method: {"gap": dB, "res_med": residual}}}`` of one bench table file."""
    model = next((ln.split()[1] for ln in path.read_text().splitlines() if ln.startswith("model ")), path.stem)
    blocks: dict[str, dict[str, dict[str, float]]] = {}
    current = None
    for line in path.read_text().splitlines():
        head = HEADER.match(line)
        if head:
            current = f"{model}, {head.group(1)} steps ({head.group(2)})"
            blocks[current] = {}
            continue
        parts = line.split()
        if current is None or len(parts) != 11 or parts[0] == "method":
            continue
        blocks[current][parts[0]] = {"gap": float(parts[6]), "res_med": float(parts[2])}
    return blocks


SKIP = ("experiment=", "warmup=", "progress=", "time_network=", "hydra.")


def tabulate_runs(sweeps: list[Path]) -> str:
    """A markdown table of harness sweeps (``run.py -m experiment=gnri_ablation*``): one row per job,
    its overrides, the mean gap to the VAE ceiling and PSNR over images, and the median over images
    of each image's mean per-step residual (``residual_rms_mean``)."""
    import pandas as pd
    import yaml

    lines = ["| sweep | job overrides | images ok | PSNR (dB) | gap to VAE (dB) | median residual |",
             "|---|---|---|---|---|---|"]
    for sweep in sweeps:
        for job in sorted((p for p in sweep.iterdir() if (p / "results.csv").exists()), key=lambda p: int(p.name)):
            overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
            shown = " ".join(o for o in overrides if not o.startswith(SKIP))
            rows = pd.read_csv(job / "results.csv")
            ok = rows[rows["status"] == "ok"]

            def metric(name: str) -> pd.Series:
                return ok[ok["metric"] == name]["value"]

            lines.append(f"| {sweep.name} | {shown} | {metric('psnr').size} | {metric('psnr').mean():.2f} | "
                         f"{metric('psnr_gap_to_vae').mean():.2f} | {metric('residual_rms_mean').median():.2e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", type=Path)
    parser.add_argument("--runs", nargs="+", type=Path, default=None,
                        help="harness sweep folders: print their jobs as one markdown table instead")
    args = parser.parse_args(argv)
    if args.runs:
        print(tabulate_runs(args.runs))
        return 0
    blocks: dict[str, dict[str, dict[str, float]]] = {}
    for path in args.tables:
        blocks.update(read_blocks(path))
    out = args.tables[0].parent

    fig, ax = plt.subplots(figsize=(6, 4))
    for setting, rows in blocks.items():
        lams = [(float(m[len("gnri[lam="):-1]), r["gap"]) for m, r in rows.items()
                if m.startswith("gnri[lam=") and not m.endswith("xD]")]
        if not lams:
            continue
        lams.sort()
        xs = [max(v, 1e-3) for v, _ in lams]  # lam = 0 drawn at 1e-3 on the log axis
        line = ax.plot(xs, [g for _, g in lams], marker="o", label=setting)[0]
        if "gnri[lam=0.1xD]" in rows:
            ax.plot([102.4], [rows["gnri[lam=0.1xD]"]["gap"]], marker="s", color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("lam (0 drawn at 1e-3; square: 0.1 x D = 102.4)")
    ax.set_ylabel("gap to the VAE ceiling (dB)")
    ax.set_title("GNRI (paper variant): guidance weight")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ablation_lam.png", dpi=120)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for setting, rows in blocks.items():
        its = [(int(m[len("gnri[iters="):-1]), r) for m, r in rows.items() if m.startswith("gnri[iters=")]
        if "gnri[lam=0.1]" in rows and its:  # the defaults: 2 iterations
            its.append((2, rows["gnri[lam=0.1]"]))
        its.sort(key=lambda kv: kv[0])
        if not its:
            continue
        ax1.plot([k for k, _ in its], [r["gap"] for _, r in its], marker="o", label=setting)
        ax2.plot([k for k, _ in its], [r["res_med"] for _, r in its], marker="o", label=setting)
    ax1.set_xlabel("Newton iterations per step")
    ax1.set_ylabel("gap to the VAE ceiling (dB)")
    ax2.set_xlabel("Newton iterations per step")
    ax2.set_ylabel("median per-step residual")
    ax2.set_yscale("log")
    ax1.legend(fontsize=7)
    fig.suptitle("GNRI (paper variant): iterations")
    fig.tight_layout()
    fig.savefig(out / "ablation_iters.png", dpi=120)
    print(f"wrote {out / 'ablation_lam.png'} and {out / 'ablation_iters.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
