"""Paired comparisons from the tidy results table: every method against a reference, or every pair.

A *regime* is a model x setting (:func:`eval.report.summary_stats.label_methods`: the schedule plus
whatever differs, guidance included). Within it, a method's value on an image is paired with
another's on the same image (pair key: image, caption, guidance), using ok, finite rows only (a
failed image has no pair: the failure rate column counts it). A method is its label (inverter
plus varying hyperparameters; edit runs' inverter is ``inverter+editor``). Statistics and the
verdict rule: :mod:`eval.report.paired`.

The reference is a method label or an inverter name (:func:`reference_map`): an edit method is
compared with the reference inverter under the same editor.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from eval.records import TIMING_METRICS
from eval.report.load import under_load
from eval.report.paired import BETTER, LOADED, WORSE, PairedResult, holm, paired_test, verdict
from eval.report.summary_stats import add_failure_rate, add_total_time, label_methods

REGIME = ("model", "setting")
PAIR_KEYS = ("image", "caption", "guidance_scale", "true_cfg_scale")
DEFAULT_REFERENCE = "ddim"  # used when neither the caller nor the runs' config names one
CONFIG_KEY = "reference"
MEMORY_PREFIX = "peak_memory"  # measured in the timing pass, but not a clock: load does not change it
VERDICT_COLUMNS = ("model", "setting", "method", "reference", "metric", "higher_is_better", "n_pairs", "mean_diff",
                   "ci_low", "ci_high", "p_value", "p_holm", "verdict", "under_load")


def is_timing(metric: str) -> bool:
    """True for clock metrics (seconds and ratios of seconds), whose verdicts need an unloaded machine."""
    return metric.startswith("time_") or (metric in TIMING_METRICS and not metric.startswith(MEMORY_PREFIX))


def editor_of(inverter: str) -> str:
    """The editor of an edit run's ``inverter+editor`` name ('' for reconstruction)."""
    return str(inverter).split("+", 1)[1] if "+" in str(inverter) else ""


def per_image_values(records: pd.DataFrame) -> pd.DataFrame:
    """One row per regime x method x metric x pair key: ``value`` (mean of ok, finite rows),
    ``inverter``, ``higher_is_better`` and ``under_load`` (any row timed under load). Derived
    metrics (``time_total_s``, ``failure_rate``) included."""
    df = add_failure_rate(add_total_time(label_methods(records)))
    df = df.assign(under_load=under_load(df).to_numpy())
    value = pd.to_numeric(df["value"], errors="coerce")
    df = df[(df["status"] == "ok") & np.isfinite(value)].assign(value=value)
    keys = [c for c in PAIR_KEYS if c in df.columns]
    df = df.assign(**{k: df[k].astype(str) for k in keys})
    group = [*REGIME, "method", "metric", *keys]
    cols = [*group, "value", "inverter", "higher_is_better", "under_load"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    out = df.groupby(group, sort=False).agg(value=("value", "mean"), inverter=("inverter", "first"),
                                            higher_is_better=("higher_is_better", "first"),
                                            under_load=("under_load", "any")).reset_index()
    out["pair"] = out[keys[0]].str.cat([out[k] for k in keys[1:]], sep="\x1f") if keys else ""
    return out


def loaded_methods(records: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(model, setting, method) of every method with a timing row timed under load (:mod:`eval.report.load`)."""
    df = label_methods(records)
    if df.empty:
        return set()
    flag = under_load(df) & df["metric"].astype(str).map(is_timing)
    return {tuple(map(str, k)) for k in df.loc[flag, ["model", "setting", "method"]].drop_duplicates()
            .itertuples(index=False)}


def configured_reference(records: pd.DataFrame) -> str | None:
    """The most common ``reference`` of the runs' config JSON column, or None."""
    if "config" not in records.columns:
        return None
    names: Counter[str] = Counter()
    for text, count in records["config"].dropna().value_counts().items():
        try:
            value = json.loads(text).get(CONFIG_KEY) if isinstance(text, str) else None
        except (json.JSONDecodeError, AttributeError):
            value = None
        if value:
            names[str(value)] += int(count)
    return names.most_common(1)[0][0] if names else None


def resolve_reference(records: pd.DataFrame, requested: str | None = None) -> str | None:
    """``requested``, else the runs' configured reference, else :data:`DEFAULT_REFERENCE` if one of
    the runs' inverters is it, else None (no paired verdicts)."""
    if requested:
        return requested
    configured = configured_reference(records)
    if configured:
        return configured
    names = {str(i).split("+", 1)[0] for i in records.get("inverter", pd.Series(dtype=str)).dropna().unique()}
    return DEFAULT_REFERENCE if DEFAULT_REFERENCE in names else None


def reference_map(methods: dict[str, str], reference: str | None) -> dict[str, str]:
    """method label -> its reference label within one regime (``methods``: label -> inverter column).
    An exact label match serves every method; else the labels whose inverter (or inverter without
    the editor) is ``reference``, the one with the method's editor first, or the only one. Methods
    without a unique reference are left out."""
    if not reference:
        return {}
    if reference in methods:
        return {m: reference for m in methods if m != reference}
    candidates = [m for m, inv in methods.items() if inv == reference or str(inv).split("+", 1)[0] == reference]
    out = {}
    for method, inverter in methods.items():
        same = [c for c in candidates if editor_of(methods[c]) == editor_of(inverter)]
        pick = same if len(same) == 1 else candidates if len(candidates) == 1 else []
        if pick and pick[0] != method and method not in candidates:
            out[method] = pick[0]
    return out


def compare_pairs(values: pd.DataFrame, pairs: Sequence[tuple[str, str]], metric: str) -> list[dict]:
    """Paired comparisons of one regime x metric block of :func:`per_image_values`, one dict per
    ``(method, other)`` pair, Holm-corrected across ``pairs`` (load-marked time comparisons excluded)."""
    wide = values.pivot_table(index="pair", columns="method", values="value", aggfunc="mean")
    loaded = values.groupby("method")["under_load"].any().to_dict()
    higher = bool(values["higher_is_better"].iloc[0])
    results: list[PairedResult] = []
    blocked: list[bool] = []
    for method, other in pairs:
        both = wide[[method, other]].dropna() if {method, other} <= set(wide.columns) else wide.iloc[:0, :0]
        diff = (both[method] - both[other]).to_numpy() if len(both.columns) else np.array([])
        results.append(paired_test(diff))
        blocked.append(is_timing(metric) and bool(loaded.get(method) or loaded.get(other)))
    adjusted = holm([np.nan if b else r.p for r, b in zip(results, blocked)])
    rows = []
    for (method, other), r, p_holm, b in zip(pairs, results, adjusted, blocked):
        rows.append({"method": method, "reference": other, "metric": metric, "higher_is_better": higher,
                     "n_pairs": r.n, "mean_diff": r.mean, "ci_low": r.low, "ci_high": r.high, "p_value": r.p,
                     "p_holm": p_holm, "verdict": LOADED if b else verdict(r, p_holm, higher), "under_load": b})
    return rows


def _regimes(values: pd.DataFrame, metrics: Iterable[str] | None) -> Iterable[tuple[tuple, pd.DataFrame]]:
    if metrics is not None:
        values = values[values["metric"].isin(list(metrics))]
    return values.groupby(list(REGIME), sort=False)


def paired_verdicts(records: pd.DataFrame, reference: str | None, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Every method against ``reference`` per regime and metric (all metrics, or ``metrics``):
    :data:`VERDICT_COLUMNS`. Empty without a reference or when no regime has it."""
    values = per_image_values(records)
    rows = []
    for (model, setting), block in _regimes(values, metrics):
        methods = block.drop_duplicates("method").set_index("method")["inverter"].astype(str).to_dict()
        refs = reference_map(methods, reference)
        if not refs:
            continue
        for metric, mblock in block.groupby("metric", sort=False):
            pairs = list(refs.items())
            rows += [{"model": model, "setting": setting, **row} for row in compare_pairs(mblock, pairs, metric)]
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def pairwise_verdicts(values: pd.DataFrame, metric: str) -> dict[tuple[str, str], str]:
    """(a, b) -> verdict of a against b for every pair of methods of one regime's
    :func:`per_image_values` block on ``metric`` (Holm across all pairs; both orders returned)."""
    block = values[values["metric"] == metric]
    methods = list(dict.fromkeys(block["method"]))
    pairs = list(combinations(methods, 2))
    out: dict[tuple[str, str], str] = {}
    if not pairs:
        return out
    flip = {BETTER: WORSE, WORSE: BETTER}
    for row in compare_pairs(block, pairs, metric):
        a, b = row["method"], row["reference"]
        out[(a, b)] = row["verdict"]
        out[(b, a)] = flip.get(row["verdict"], row["verdict"])
    return out
