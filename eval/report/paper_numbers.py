"""The paper's numbers beside ours: ``results/paper_numbers.csv`` and the report's comparison.

``results/paper_numbers.csv`` holds every number of the GNRI paper (and of third-party
reproductions) we could source, one source per row; its header comment documents the columns.
A value is stored as the source prints it, with ``scale``: the source prints (our value) x
``scale`` (1000 for "LPIPS x10^3", 0.01 for a CLIP score printed as a cosine). Comparisons are in
the project's units: ``paper = value / scale``, ``paper_error = reading_error / |scale|``,
``difference = ours - paper``.

A run is compared when its resolved config sets ``paper_preset`` (``conf/config.yaml``;
``conf/experiment/paper_*.yaml`` set it): each (model, setting, method) group of the report is
matched with the rows whose ``preset`` lists that name, on the metric, the method (the
inverter's config name: ``gnri+prompt_swap`` matches ``gnri``, ``gnri_official`` counts as
``gnri``; :data:`METHOD_ALIASES`) and the row's ``params`` (each ``k=v`` must equal the run's
inverter hyperparameter). The model is not matched: a preset may run on a stand-in
(``model=world_sd``), and the comparison says which checkpoint the paper used.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from eval.report.markdown import markdown_table
from eval.report.summary_stats import MIN_N_FOR_INTERVAL, VAE_ROW, label_methods, parse_params, summarize, vae_ceiling

NUMBERS_FILE = Path(__file__).resolve().parents[2] / "results" / "paper_numbers.csv"
COLUMNS = ("source_id", "preset", "model", "method", "params", "metric", "value", "reading_error", "scale",
           "dataset", "source", "tag", "notes")
METHOD_ALIASES = {"gnri_official": "gnri"}  # the public code's GNRI is the paper's GNRI
PRESET_KEY = "paper_preset"
COMPARISON_COLUMNS = ("model", "setting", "method", "metric", "ours", "ours_ci95", "n", "paper", "paper_error",
                      "difference", "preset", "paper_model", "source_id", "tag", "source")


def load_paper_numbers(path: str | Path | None = None) -> pd.DataFrame:
    """The numbers file (``#`` lines are comments), checked: one-line ValueError naming what is wrong."""
    file = Path(path) if path is not None else NUMBERS_FILE
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ValueError(f"paper numbers: cannot read {file}: {err.strerror or err}") from None
    body = "\n".join(line for line in lines if not line.startswith("#"))
    try:
        df = pd.read_csv(io.StringIO(body), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"paper numbers: {file} is not a CSV table: {str(err).splitlines()[0]}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"paper numbers: {file} lacks column(s) {', '.join(missing)}")
    for col in ("value", "reading_error", "scale"):
        num = pd.to_numeric(df[col], errors="coerce").astype(float)
        bad = ~num.map(math.isfinite)
        if col == "scale":
            bad |= num == 0
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(f"paper numbers: {file} row {i + 1}: {col}={df[col].iloc[i]!r} is not a finite number"
                             + (" (non-zero)" if col == "scale" else ""))
        df[col] = num.astype(float)
    return df


def parse_row_params(text: str) -> dict[str, str]:
    """``"k=v;k2=v2"`` -> ``{"k": "v", "k2": "v2"}`` (empty -> {})."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text).split(";"))):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out


def method_base(label: str) -> str:
    """A report method label -> the inverter it compares as: ``gnri_official[n_iters=1]+p2p`` -> ``gnri``."""
    base = str(label).split("[", 1)[0].split("+", 1)[0]
    return METHOD_ALIASES.get(base, base)


def run_preset(config: Any) -> str | None:
    """``paper_preset`` of a run's resolved config (the ``config`` column's JSON), None if unset."""
    if isinstance(config, str):
        try:
            config = json.loads(config) if config else {}
        except json.JSONDecodeError:
            return None
    value = config.get(PRESET_KEY) if isinstance(config, dict) else None
    return str(value) if value not in (None, "") else None


def _same(value: Any, wanted: str) -> bool:
    return str(value) == wanted or (isinstance(value, (int, float)) and _num(wanted) == float(value))


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _matches(row: pd.Series, preset: str, metric: str, method: str, params: dict[str, Any]) -> bool:
    if preset not in [p.strip() for p in str(row["preset"]).split(";")] or row["metric"] != metric:
        return False
    if row["method"] != method and row["method"] != method_base(method):
        return False
    return all(k in params and _same(params[k], v) for k, v in parse_row_params(row["params"]).items())


def _group_info(labelled: pd.DataFrame) -> dict[tuple[str, str, str], tuple[str | None, dict[str, Any]]]:
    """(model, setting, method) -> (paper preset, inverter hyperparameters) from the group's first row."""
    info = {}
    cols = [c for c in ("config", "inverter_params") if c in labelled.columns]
    for key, block in labelled.groupby(["model", "setting", "method"], sort=False):
        first = block.iloc[0]
        preset = run_preset(first["config"]) if "config" in cols else None
        params = parse_params(first["inverter_params"]) if "inverter_params" in cols else {}
        info[tuple(key)] = (preset, params)
    return info


def paper_comparison(records: pd.DataFrame, numbers: pd.DataFrame | None = None,
                     preset: str | None = None) -> pd.DataFrame:
    """One row per (report group, metric, matching paper row): ours (mean, ci95, n), the paper's
    value and error in our units, and the difference. ``preset`` overrides the runs' own
    ``paper_preset``; a group with neither is not compared. Empty when nothing matches."""
    if records.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    labelled = label_methods(records)
    info = _group_info(labelled)
    if preset is None and not any(p for p, _ in info.values()):
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    numbers = load_paper_numbers() if numbers is None else numbers
    summary = pd.concat([summarize(records), vae_ceiling(labelled)], ignore_index=True)
    out = []
    for s in summary.itertuples(index=False):
        key = (s.model, s.setting, s.method)
        group_preset, params = info.get(key, (None, {}))
        if s.method == VAE_ROW:  # the ceiling row belongs to whichever preset its model x setting runs
            group_preset = next((p for (m, st, _), (p, _) in info.items() if (m, st) == key[:2] and p), None)
        name = preset or group_preset
        if name is None or not math.isfinite(s.mean):
            continue
        for _, row in numbers.iterrows():
            if not _matches(row, name, s.metric, s.method, params):
                continue
            paper, err = row["value"] / row["scale"], row["reading_error"] / abs(row["scale"])
            out.append({"model": s.model, "setting": s.setting, "method": s.method, "metric": s.metric,
                        "ours": s.mean, "ours_ci95": s.ci95, "n": int(s.n), "paper": paper, "paper_error": err,
                        "difference": s.mean - paper, "preset": name, "paper_model": row["model"],
                        "source_id": row["source_id"], "tag": row["tag"], "source": row["source"]})
    return pd.DataFrame(out, columns=COMPARISON_COLUMNS)


def _fmt(value: float, ref: Iterable[float] = ()) -> str:
    if not math.isfinite(value):
        return "n/a"
    scale = max([abs(value), *[abs(r) for r in ref if math.isfinite(r)]])
    return f"{value:.2f}" if scale >= 1 else f"{value:.4g}"


def comparison_markdown(comparison: pd.DataFrame) -> str:
    """Markdown section: per model x setting, ours, the paper's value +- its error, the difference."""
    if comparison.empty:
        return ""
    parts = ["## The paper's numbers beside ours\n"]
    for (model, setting, preset), block in comparison.groupby(["model", "setting", "preset"], sort=False):
        body = []
        for r in block.itertuples(index=False):
            shown = math.isfinite(r.ours_ci95) and r.n >= MIN_N_FOR_INTERVAL  # as the main table: no t interval below 3
            ours = _fmt(r.ours, [r.paper]) + (f" ± {_fmt(r.ours_ci95, [r.paper])}" if shown else "")
            paper = f"{_fmt(r.paper, [r.ours])} ± {_fmt(r.paper_error, [r.paper, r.ours])}"
            body.append([r.method, r.metric, ours, str(r.n), paper, _fmt(r.difference, [r.paper, r.ours]),
                         f"{r.paper_model} · {r.source_id} ({r.tag})"])
        header = ["method", "metric", "ours", "n", "paper", "difference", "paper model · source"]
        parts += [f"### {model} · {setting} · preset `{preset}`\n", markdown_table(header, body), ""]
    parts.append("`paper`: the source's value in this report's units (its printed value / its scale, "
                 "results/paper_numbers.csv) ± its reading error; `difference` = ours - paper. The paper's "
                 "model, data and metric implementations may differ from this run's (see each row's notes).")
    return "\n".join(parts) + "\n"


def add_paper_columns(wide: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """The wide paper table with ``<metric>_paper`` and ``<metric>_difference`` columns (the first
    matching source per row and metric; every source is in the comparison table)."""
    out = wide.copy()
    if comparison.empty:
        return out
    first = comparison.drop_duplicates(["model", "setting", "method", "metric"])
    for metric, block in first.groupby("metric", sort=False):
        lookup = {(r.model, r.setting, r.method): (r.paper, r.difference) for r in block.itertuples(index=False)}
        keys = list(zip(out["model"], out["setting"], out["method"]))
        out[f"{metric}_paper"] = [lookup.get(k, (math.nan, math.nan))[0] for k in keys]
        out[f"{metric}_difference"] = [lookup.get(k, (math.nan, math.nan))[1] for k in keys]
    return out
