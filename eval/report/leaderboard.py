"""A leaderboard per regime (model x setting): quality against cost, decided by paired verdicts.

Quality is the gap to the VAE ceiling (``psnr_gap_to_vae``, dB, lower is better); cost is NFE
(``nfe_forward + nfe_backward`` per image, mean) or the median ``time_invert_s``. Each method gets
its paired verdict against the reference (:mod:`eval.report.pairing`) and its place on two
quality-cost fronts: a method is on a front when no other method is both ``better`` on the gap by
the paired verdict between the two (every pair of methods on their shared images, Holm across
all pairs of the regime) and no more expensive. Left out of the fronts: exact-by-construction
methods (they keep more than one latent, :mod:`eval.report.fair`; marked ‡), methods without a
cost, and, on the time front, methods timed under load (†). Methods are listed by mean gap.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from eval.report.fair import EXACT_MARK, EXACT_NOTE, KEPT_HEADER, fair_columns, kept_cell
from eval.report.load import LOAD_MARK, UNDER_LOAD_NOTE
from eval.report.markdown import markdown_table
from eval.report.paired import BETTER, VERDICT_RULE
from eval.report.pairing import REGIME, loaded_methods, paired_verdicts, pairwise_verdicts, per_image_values
from eval.report.summary_stats import label_methods

GAP = "psnr_gap_to_vae"
NFE_PARTS = ("nfe_forward", "nfe_backward")
TIME = "time_invert_s"
COSTS = (("nfe", "NFE (forward + backward)"), ("time", "median inversion time (s)"))
MARKDOWN_FILE = "leaderboard.md"
PLOT_PREFIX = "leaderboard_"
FIGSIZE = (11.0, 4.5)
DPI = 120
BOARD_COLUMNS = ("model", "setting", "rank", "method", "gap", "n", "reference", "verdict", "ci_low", "ci_high",
                 "mean_diff", "nfe", "time", "under_load", "exact", "kept", "front_nfe", "front_time")


def pareto_front(costs: Mapping[str, float], better: Mapping[tuple[str, str], str]) -> list[str]:
    """Methods of ``costs`` (finite costs only) that no other method beats: ``better[(o, m)] == 'better'``
    with ``costs[o] <= costs[m]``. Sorted by cost."""
    finite = {m: c for m, c in costs.items() if c is not None and math.isfinite(c)}
    front = [m for m, c in finite.items()
             if not any(better.get((o, m)) == BETTER and co <= c for o, co in finite.items() if o != m)]
    return sorted(front, key=lambda m: (finite[m], m))


def _costs(labelled: pd.DataFrame) -> pd.DataFrame:
    """Per model x setting x method: ``nfe`` (mean per image of forward + backward), ``time`` (median
    inversion seconds), ``gap`` (mean) and ``n`` (images with a gap)."""
    ok = labelled[labelled["status"] == "ok"].assign(value=pd.to_numeric(labelled["value"], errors="coerce"))
    ok = ok[np.isfinite(ok["value"])]
    keys = [*REGIME, "method"]
    nfe = ok[ok["metric"].isin(NFE_PARTS)].groupby([*keys, "image"], sort=False)["value"].sum()
    nfe = nfe.groupby(level=keys, sort=False).mean()
    time = ok[ok["metric"] == TIME].groupby(keys, sort=False)["value"].median()
    gap = ok[ok["metric"] == GAP].groupby(keys, sort=False)["value"].agg(["mean", "count"])
    out = gap.rename(columns={"mean": "gap", "count": "n"})
    return out.join(nfe.rename("nfe")).join(time.rename("time")).reset_index()


def leaderboard(records: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """One row per regime x method with a gap (:data:`BOARD_COLUMNS`), listed by mean gap."""
    labelled = label_methods(records)
    costs = _costs(labelled) if not labelled.empty else pd.DataFrame()
    if costs.empty:
        return pd.DataFrame(columns=list(BOARD_COLUMNS))
    fair = fair_columns(labelled).set_index([*REGIME, "method"])
    loaded = loaded_methods(records)
    verdicts = paired_verdicts(records, reference, [GAP]).set_index([*REGIME, "method"])
    values = per_image_values(records)
    values = values[values["metric"] == GAP]
    boards = []
    for (model, setting), block in costs.groupby(list(REGIME), sort=False):
        block = block.sort_values(["gap", "method"], kind="stable").reset_index(drop=True)
        keys = [(model, setting, m) for m in block["method"]]
        block["rank"] = np.arange(1, len(block) + 1)
        block["exact"] = [bool(fair.loc[k, "exact"]) if k in fair.index else False for k in keys]
        block["kept"] = [float(fair.loc[k, "kept"]) if k in fair.index else math.nan for k in keys]
        block["under_load"] = [k in loaded for k in keys]
        for col in ("reference", "verdict", "ci_low", "ci_high", "mean_diff"):
            block[col] = [verdicts.loc[k, col] if k in verdicts.index else None for k in keys]
        here = values[(values["model"] == model) & (values["setting"] == setting)]
        better = pairwise_verdicts(here, GAP)
        ranked = block[~block["exact"]]
        nfe_front = pareto_front(dict(zip(ranked["method"], ranked["nfe"])), better)
        timed = ranked[~ranked["under_load"]]
        time_front = pareto_front(dict(zip(timed["method"], timed["time"])), better)
        block["front_nfe"] = block["method"].isin(nfe_front)
        block["front_time"] = block["method"].isin(time_front)
        boards.append(block)
    return pd.concat(boards, ignore_index=True)[list(BOARD_COLUMNS)]


def regime_slug(model: str, setting: str) -> str:
    """A file-name-safe ``<model>_<setting>``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model}_{setting}").strip("-")


def _fmt(x: float, spec: str) -> str:
    return format(x, spec) if x is not None and math.isfinite(float(x)) else "n/a"


def plot_regime(board: pd.DataFrame, path: str | Path) -> Path:
    """Gap against NFE and against median time for one regime's rows of :func:`leaderboard`: every
    method a point, each front a step line with its members labelled; exact-by-construction methods
    hollow and ‡; methods timed under load left off the time panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COSTS), figsize=FIGSIZE)
    for ax, (cost, label) in zip(np.atleast_1d(axes), COSTS):
        rows = board[np.isfinite(board[cost].astype(float)) & ~(board["under_load"] & (cost == "time"))]
        solid, hollow = rows[~rows["exact"]], rows[rows["exact"]]
        ax.scatter(solid[cost], solid["gap"], color="tab:blue", zorder=3)
        ax.scatter(hollow[cost], hollow["gap"], facecolors="none", edgecolors="tab:blue", zorder=3)
        front = rows[rows[f"front_{cost}"]].sort_values(cost)
        if not front.empty:
            envelope = np.minimum.accumulate(front["gap"].to_numpy(dtype=float))  # members tied by the paired test
            ax.step(front[cost], envelope, where="post", color="tab:red", lw=1.5, label="front")
            for r in front.itertuples(index=False):
                ax.annotate(r.method, (getattr(r, cost), r.gap), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for r in rows[rows["exact"]].itertuples(index=False):
            ax.annotate(f"{r.method} {EXACT_MARK}", (getattr(r, cost), r.gap), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color="gray")
        if len(rows) and (rows[cost].astype(float) > 0).all():
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("gap to VAE ceiling (dB), lower is better")
        ax.grid(alpha=0.3)
        if not front.empty:
            ax.legend(loc="upper right", fontsize=8)
    model, setting = board["model"].iloc[0], board["setting"].iloc[0]
    fig.suptitle(f"{model} · {setting}: quality against cost")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def leaderboard_markdown(board: pd.DataFrame, reference: str | None, plots: Mapping[tuple[str, str], str] | None = None,
                         title: str | None = None) -> str:
    """The leaderboard as Markdown: one table per regime (and its plot, ``plots[(model, setting)]``)."""
    parts = [f"# {title or 'Leaderboard'}", ""]
    if board.empty:
        return "\n".join(parts + ["No method has a gap to the VAE ceiling.", ""])
    any_load = any_exact = False
    for (model, setting), block in board.groupby(list(REGIME), sort=False):
        body = []
        for r in block.itertuples(index=False):
            any_load |= bool(r.under_load)
            any_exact |= bool(r.exact)
            has_verdict = isinstance(r.verdict, str)
            is_ref = r.method in set(block["reference"].dropna())
            verdict = r.verdict if has_verdict else ("reference" if is_ref else "—")
            if has_verdict and math.isfinite(float(r.ci_low)):
                interval = f"[{_fmt(r.ci_low, '+.2f')}, {_fmt(r.ci_high, '+.2f')}]"
                verdict = f"{verdict} ({_fmt(r.mean_diff, '+.2f')} {interval})"
            body.append([str(r.rank), f"{r.method} {EXACT_MARK}" if r.exact else r.method, _fmt(r.gap, ".2f"), verdict,
                         _fmt(r.nfe, ".4g"), _fmt(r.time, ".3g") + (f" {LOAD_MARK}" if r.under_load else ""),
                         "✓" if r.front_nfe else "", "✓" if r.front_time else "", kept_cell(r.kept), str(int(r.n))])
        refs = ", ".join(f"`{x}`" for x in dict.fromkeys(block["reference"].dropna())) or "none"
        header = ["#", "method", "gap to VAE (dB) ↓", f"vs {refs} (gap Δ)", "NFE", "median invert (s)",
                  "NFE front", "time front", KEPT_HEADER, "n"]
        parts += [f"## {model} · {setting}", "", markdown_table(header, body), ""]
        if plots and (model, setting) in plots:
            parts += [f"![{model} · {setting}]({plots[(model, setting)]})", ""]
    parts.append("`#`: order by mean gap to the VAE ceiling. A method is on a front when no other method is both "
                 "better on the gap by the paired verdict between the two (every pair on its shared images, Holm "
                 "across all pairs of the regime) and no more expensive (NFE: forward + backward passes per image; "
                 "time: median inversion seconds).")
    if any_exact:
        parts.append(f"{EXACT_NOTE}; left out of the fronts.")
    if any_load:
        parts.append(f"{LOAD_MARK} {UNDER_LOAD_NOTE}: left out of the time front.")
    parts += [VERDICT_RULE, ""]
    return "\n".join(parts)


def write_leaderboard(records: pd.DataFrame, out_dir: str | Path, reference: str | None,
                      title: str | None = None) -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` and ``leaderboard_<regime>.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    board = leaderboard(records, reference)
    plots: dict[tuple[str, str], str] = {}
    paths = []
    for (model, setting), block in board.groupby(list(REGIME), sort=False):
        path = plot_regime(block, out / f"{PLOT_PREFIX}{regime_slug(model, setting)}.png")
        plots[(model, setting)] = path.name
        paths.append(path)
    md, csv = out / MARKDOWN_FILE, out / "leaderboard.csv"
    md.write_text(leaderboard_markdown(board, reference, plots, title), encoding="utf-8")
    board.to_csv(csv, index=False)
    return [md, csv, *paths]
