"""The one tidy results table, its provenance, and the logger contract.

Every number the benchmark produces is one row of a long table (``results.csv`` in the run
folder; :func:`read_records` loads it): one row per model x schedule x inverter x image x metric.
Tables, plots and W&B logs are all derived from it.

Columns (:data:`COLUMNS`, in this order):

- ``run_id``: one harness call (one Hydra job; a resumed job adds rows under a new id);
  ``unit_key``: the content key of the unit of work the row belongs to
  (:func:`eval.settings.unit_key`: checkpoint identity, schedule, inverter and hyperparameters,
  task, metric set, seed, guidance, the item's index, image hash and caption); ``model``,
  ``schedule``, ``inverter``: the config names (``conf/<group>/<name>.yaml``); ``checkpoint``:
  what was loaded (:mod:`eval.identity`: hub id@revision, folder@content hash, or ``(code)``);
  ``adapter``: the adapter's own ``name``;
- ``image``: the dataset entry id (path relative to the dataset folder, or COCO file_name);
  ``caption``: the prompt used for inversion and reconstruction (line breaks become spaces:
  a row is one line, so a torn last line is always detectable);
- ``metric``, ``value`` (float; NaN unless status is ok), ``status`` (:data:`STATUSES`),
  ``reason`` (empty when ok, or a warning about the input such as a truncated caption), ``higher_is_better`` (bool);
- run settings: ``num_steps`` (grid steps actually inverted, after ``strength``),
  ``guidance_scale`` (inversion/reconstruction CFG on UNets; FLUX's guidance embedding),
  ``true_cfg_scale`` (FLUX's true classifier-free guidance, 1: off), ``seed``, ``batch_size`` (images inverted
  together in one network call per evaluation; the per-image times and NFE of a batch row are
  explained with those metrics below);
- provenance (:func:`provenance`, identical on every row of a run, also in
  ``provenance.json``): ``git_commit`` (``<sha>``, ``<sha>-dirty``, or ``unknown``), ``torch_version``,
  ``diffusers_version``, ``transformers_version``, ``device``, ``dtype``, and JSON strings
  ``inverter_params`` (the inverter's hyperparameters), ``schedule_params`` (the ScheduleSpec
  fields), ``config`` (the full resolved config) and ``machine`` (CPU model, cores, torch threads,
  load average when the run set up: :mod:`eval.machine`; plus ``libraries``, the versions of the
  metric libraries whose behaviour moves scores, :data:`METRIC_LIBRARIES`: torchmetrics changed SSIM
  in 2024, see :func:`eval.metrics.masked.pie_ssim`). ``provenance.json`` also has them at top level
  (``torchmetrics_version``, ``lpips_version``, ``open_clip_version``); the table's columns do not change.

Statuses: ``ok``; ``failed`` (the method or pipeline raised, or diverged: a non-finite latent,
on a valid input); ``skipped`` (not run: the method does not apply here, it raised ValueError,
or the dataset entry is unusable: unreadable image, missing caption); ``unavailable`` (the
metric cannot give a real number on this machine, e.g. no real weights). A failed or skipped
image still has one row per expected metric, so counts line up per metric.

Metrics the harness itself computes (:data:`HARNESS_METRICS`); image metrics from
``eval.metrics`` (psnr, ...) add their own rows, comparing the decoded reconstruction with the
input image on [0, 1]:

- ``psnr_vae_ceiling``: PSNR of decode(encode(x)) vs x, the best any inversion can reach;
- ``psnr_gap_to_vae``: ``psnr_vae_ceiling - psnr`` of the reconstruction (dB; 0 is perfect);
- ``latent_rmse``: RMS of reconstructed latent minus encoded latent (latent units);
- ``residual_rms_mean`` / ``residual_rms_max``: mean / max over steps of the per-step RMS of
  ``r(z_{i+1}) = sample_step(pred(z_{i+1})) - z_i`` along the inversion (gnri.core.step_residuals);
  ``unavailable`` for a method that regenerates with its own sampler (EDICT, edit-friendly DDPM,
  RF-Solver, FireFlow, ...), whose inversion the shared step's residual does not describe;
- ``nfe_forward`` / ``nfe_backward``: network forward / backward (VJP) passes of one inversion
  (CFG counts 2); ``nfe_forward_reconstruct``: forward passes of one reconstruction. In a batch
  every image is in every call, so these are the batch's calls (a per-image stopping rule that
  stops one image early does not shorten the batch);
- ``time_invert_s`` / ``time_reconstruct_s``: median wall seconds over ``repeats``, after warm-up;
  per image: a batch's time divided by its number of images;
- ``peak_memory_mb``: peak memory during one inversion (CUDA allocator peak; CPU: process RSS),
  of the whole batch;
- ``peak_memory_extra_mb``: ``peak_memory_mb`` minus plain generation's peak (the shared sampler
  from the same latent, measured the same way in its own pass): the method's own extra memory;
- ``compile_s``: seconds torch.compile spent compiling the network so far in the run (warm-up
  included; 0 without ``model.compile``), never part of a timed call;
- ``time_network_call_s`` / ``time_network_backward_s``: the bare network (the diffusers module
  on inputs prepared once) per forward pass / per backward pass, timed in the same run the same
  way (:func:`eval.timing.bare_network_times`, once per run and batch shape: one call on the
  whole batch);
- ``time_network_forward_in_run_s`` / ``time_network_backward_in_run_s``: seconds spent inside
  the network's forward / backward passes during the timed inversion itself, clocked by
  :class:`gnri.core.CountingDenoiser` on the same calls (CPU: ``perf_counter``; CUDA: event pairs
  read after the run), median over ``repeats``, per image as ``time_invert_s``;
- ``overhead_ratio``: inversion time / in-run network time (forward + backward), both from the
  same repeat, median over repeats: 1 is the network alone, the rest is the method's and the
  harness's own cost; it cannot be below 1 (up to clock resolution);
- ``non_network_share``: ``1 - in-run network time / inversion time``, the share of the timed
  inversion spent outside the network;
- ``overhead_ratio_bare``: ``batch time / (nfe_forward x call + nfe_backward x backward)`` with the
  bare network's times above, measured apart from the method (what an ideal loop around this
  network would cost); it may read below 1 where the bare clock and the run disagree;
- ``latent_mean`` / ``latent_var`` / ``latent_ks_stat``: how Gaussian the inverted latent is
  (ideal 0 / 1 / 0; Kolmogorov-Smirnov statistic against N(0, 1) over its values): the
  paper's "in-distribution" claim made measurable (:mod:`eval.metrics.gaussianity`);
- ``kept_latents``: the size of what reconstruction replays, in latents: the inverted latent plus
  every tensor the result carries for it (a sampler's bound state: EDICT's second latent,
  edit-friendly's noise maps, a stored trajectory; null-text's per-step embeddings), the run's own
  prompt embeddings not counted, divided by the latent's size (:func:`eval.metrics.latent.kept_latents`;
  1 for a single-latent method, lower is better);
- ``exact_by_construction``: 1 when the method declares reconstruction exact by construction
  (``@inverter_info(exact_reconstruction=True)``: EDICT, edit-friendly DDPM, FTEdit), else 0: read
  ``psnr`` beside it, an exact method pays in ``kept_latents`` instead.

Loggers (``conf/logger/*.yaml``, built by run.py) satisfy :class:`RunLogger`.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

import pandas as pd

from eval.machine import machine_state
# name -> higher_is_better of the metrics the harness computes itself (documented above), the clock/memory
# ones among them, and the latent's Gaussianity rows: re-exported from the one table of diagnostics.
from eval.metrics.diagnostics import GAUSSIANITY_ROWS as GAUSSIANITY_ROWS
from eval.metrics.diagnostics import HARNESS_METRICS as HARNESS_METRICS
from eval.metrics.diagnostics import TIMING_METRICS as TIMING_METRICS

STATUSES = ("ok", "failed", "skipped", "unavailable")
PROVENANCE_COLUMNS = (
    "git_commit", "torch_version", "diffusers_version", "transformers_version", "device", "dtype",
    "inverter_params", "schedule_params", "config", "machine",
)
COLUMNS = (
    "run_id", "unit_key", "model", "checkpoint", "schedule", "inverter", "adapter", "image", "caption", "metric",
    "value", "status", "reason", "higher_is_better", "num_steps", "guidance_scale", "true_cfg_scale", "seed", "batch_size",
    *PROVENANCE_COLUMNS,
)
RESULTS_FILE = "results.csv"
PROVENANCE_FILE = "provenance.json"


@dataclass(frozen=True)
class Unavailable:
    """A metric value that cannot be a number for this item here, and why (status ``unavailable``)."""

    reason: str


class RunLogger(Protocol):
    """What a logger config builds. ``log_rows`` gets each image's rows as they finish;
    ``finish`` gets the whole table, the run folder and the summary Markdown once, at the end
    (also after an interruption, with the rows kept so far)."""

    def log_rows(self, rows: pd.DataFrame) -> None: ...

    def finish(self, records: pd.DataFrame, run_dir: Path, summary_markdown: str) -> None: ...


def new_run_id() -> str:
    """A sortable unique id: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return f"{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def git_commit(repo: Path | None = None) -> str:
    """HEAD's sha of the project checkout, ``-dirty`` with uncommitted changes or new
    (not git-ignored) files; ``unknown`` outside a git checkout."""
    cwd = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


# Metric libraries whose version moves scores: provenance key prefix -> distribution name. Read from
# the installed metadata (importlib.metadata), never imported; "not installed" when absent.
METRIC_LIBRARIES = {"torchmetrics": "torchmetrics", "lpips": "lpips", "open_clip": "open_clip_torch"}


def library_versions() -> dict[str, str]:
    """``{name: version}`` of :data:`METRIC_LIBRARIES` (``"not installed"`` when absent)."""
    return {name: _version(dist) for name, dist in METRIC_LIBRARIES.items()}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def to_json(value: Any) -> str:
    """Compact, key-sorted JSON; anything JSON cannot hold is written with ``str``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def provenance(
    device: str,
    dtype: str,
    inverter_params: Mapping[str, Any] | None = None,
    schedule_params: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The provenance columns of a run (:data:`PROVENANCE_COLUMNS`), all strings, plus
    ``<library>_version`` for each of :data:`METRIC_LIBRARIES` (``provenance.json`` only: the rows
    take :data:`PROVENANCE_COLUMNS`, where the same versions sit in ``machine``'s ``libraries``)."""
    libraries = library_versions()
    return {
        "git_commit": git_commit(),
        "torch_version": _version("torch"),
        "diffusers_version": _version("diffusers"),
        "transformers_version": _version("transformers"),
        "device": device,
        "dtype": dtype,
        "inverter_params": to_json(dict(inverter_params or {})),
        "schedule_params": to_json(dict(schedule_params or {})),
        "config": to_json(dict(config or {})),
        "machine": to_json({**machine_state(), "libraries": libraries}),
        **{f"{name}_version": version for name, version in libraries.items()},
    }


@dataclass(frozen=True)
class RunInfo:
    """The columns shared by every row of one run; :meth:`row` adds the per-row ones."""

    run_id: str
    model: str
    schedule: str
    inverter: str
    adapter: str
    num_steps: int
    guidance_scale: float
    seed: int
    provenance: dict[str, str] = field(default_factory=dict)
    checkpoint: str = ""  # what was loaded (eval.identity label); empty: unknown
    batch_size: int = 1  # images per inversion call (reconstruct task); 1 elsewhere
    true_cfg_scale: float = 1.0  # FLUX's true classifier-free guidance (1: off)

    def row(
        self, image: str, caption: str | None, metric: str, value: float, status: str,
        reason: str, higher_is_better: bool, unit_key: str = "",
    ) -> dict[str, Any]:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        return {
            "run_id": self.run_id, "unit_key": unit_key, "model": self.model, "checkpoint": self.checkpoint,
            "schedule": self.schedule, "inverter": self.inverter, "adapter": self.adapter, "image": image,
            "caption": one_line(caption or ""), "metric": metric,
            "value": float(value) if status == "ok" else math.nan, "status": status,
            "reason": one_line(reason), "higher_is_better": bool(higher_is_better),
            "num_steps": self.num_steps, "guidance_scale": self.guidance_scale,
            "true_cfg_scale": self.true_cfg_scale, "seed": self.seed,
            "batch_size": self.batch_size, **{k: self.provenance.get(k, "") for k in PROVENANCE_COLUMNS},
        }


def one_line(text: str) -> str:
    """``text`` with every line break (and run of whitespace around it) made one space."""
    return " ".join(text.split()) if ("\n" in text or "\r" in text) else text


def label_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``model`` made ``<model> (<checkpoint>)`` wherever one model name covers rows
    of more than one checkpoint, so two checkpoints run under one config name are never averaged
    into one row (rows of one checkpoint keep their name as it is)."""
    if df.empty or "checkpoint" not in df.columns:
        return df
    named = df["checkpoint"].astype(str).ne("")
    counts = df[named].groupby("model")["checkpoint"].nunique()
    mixed = set(counts[counts > 1].index)
    if not mixed:
        return df
    out = df.copy()
    hit = out["model"].isin(mixed) & named
    out.loc[hit, "model"] = out.loc[hit, "model"].astype(str) + " (" + out.loc[hit, "checkpoint"].astype(str) + ")"
    return out


def to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with exactly :data:`COLUMNS`."""
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a CSV, writing the header only when the file is new."""
    if rows:
        to_frame(rows).to_csv(path, mode="a", header=not path.exists(), index=False)


def read_records(path: str | Path) -> pd.DataFrame:
    """Load a ``results.csv`` or a gzipped ``results_all.csv.gz`` (or an empty table if it has no
    rows yet); text stays text.

    A last line without its line break (a write cut short by a kill) is dropped, never parsed:
    rows never contain line breaks (:func:`one_line`), so only a torn line lacks one. Columns
    this version added (``unit_key``, ``checkpoint``) are empty in older files, ``batch_size`` and
    ``true_cfg_scale`` are 1.
    """
    file = Path(path)
    if not file.exists() or file.stat().st_size == 0:
        return to_frame([])
    data = file.read_bytes()
    if file.suffix == ".gz":  # a committed results_all.csv.gz (results/<folder>/)
        data = gzip.decompress(data)
    text = data.decode("utf-8", errors="replace")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if text.count("\n") < 2:  # a header alone, or nothing whole
        return to_frame([])
    df = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values={"value": ["", "nan", "NaN"]})
    for column in ("unit_key", "checkpoint", "machine"):
        if column not in df.columns:
            df[column] = ""
    if "batch_size" not in df.columns:
        df["batch_size"] = 1
    if "true_cfg_scale" not in df.columns:
        df["true_cfg_scale"] = 1.0
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["higher_is_better"] = df["higher_is_better"].astype(str).str.lower().eq("true")
    return df


def write_provenance(run_dir: Path, info: RunInfo) -> Path:
    """Write the run's identity and provenance as ``provenance.json``; returns its path."""
    data = {
        "run_id": info.run_id, "model": info.model, "checkpoint": info.checkpoint, "schedule": info.schedule,
        "inverter": info.inverter, "adapter": info.adapter, "num_steps": info.num_steps,
        "guidance_scale": info.guidance_scale, "seed": info.seed, **info.provenance,
    }
    for key in ("inverter_params", "schedule_params", "config", "machine"):
        if isinstance(data.get(key), str) and data[key]:
            data[key] = json.loads(data[key])
    path = run_dir / PROVENANCE_FILE
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path
