"""The benchmark loop: one model x schedule x inverter over a dataset -> the tidy table.

Plain arguments only (no Hydra). Per image, batch size 1, in this order:

1. load and fit the image (:mod:`eval.data`: RGB [0, 1], cover-resize + center-crop to the
   adapter's ``image_size()``), encode it and the caption, build the grid (untimed);
   decode(encode(x)) gives the VAE ceiling;
2. warm-up: before the first timed image, ``warmup`` untimed inversions + reconstructions;
3. invert (timed; median of ``repeats``; peak memory; NFE of one inversion counted by
   :class:`gnri.core.CountingDenoiser`) under ``torch.no_grad()`` (an inverter that needs
   gradients enables them itself);
4. reconstruct with :func:`gnri.core.reconstruct` (timed and counted separately);
5. untimed: per-step residuals (:func:`gnri.core.step_residuals`), decode, metrics, how
   Gaussian the inverted latent is, and (with ``out_dir``) the source and reconstruction PNGs.

Failures never stop the sweep: they become rows (see :mod:`eval.records` for statuses). An
inverter raising ValueError (it does not apply here) gives ``skipped``; any other exception or
a non-finite latent gives ``failed``. Rows are appended to ``<out_dir>/results.csv`` as each
image finishes, so an interrupted sweep (KeyboardInterrupt, re-raised) keeps finished images.
A model that could not be built is passed as :class:`BrokenAdapter`: every image fails with why.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from eval.data import Entry
from eval.metrics.base import ImageMetric
from eval.metrics.gaussianity import LatentGaussianity
from eval.metrics.latent import latent_rmse
from eval.metrics.psnr import psnr
from eval.records import (
    GAUSSIANITY_ROWS,
    HARNESS_METRICS,
    RESULTS_FILE,
    RunInfo,
    append_rows,
    new_run_id,
    provenance,
    to_frame,
    write_provenance,
)
from eval.report.plots import save_run_images
from eval.timing import PeakMemory, time_call
from gnri.core import (
    Conditioning,
    CountingDenoiser,
    Grid,
    InversionResult,
    Tensor,
    reconstruct,
    step_residuals,
)
from gnri.images import fit_to_size, load_image
from gnri.models.base import ModelAdapter, ScheduleSpec

log = logging.getLogger(__name__)
# An inverter with its hyperparameters bound: (denoiser, x0, grid, cond) -> InversionResult.
Inverter = Callable[..., InversionResult]


class _Skip(Exception):
    """The entry or method does not apply: rows get status ``skipped`` with this reason."""


class _Fail(Exception):
    """The method diverged (or the model could not be built): rows get status ``failed``."""


@dataclass
class _Image:
    """Everything about one image that precedes inversion (all untimed)."""

    pixels: Tensor
    latent: Tensor
    ceiling: Tensor
    cond: Conditioning
    grid: Grid


@dataclass
class _Run:
    """Per-run state shared across images."""

    adapter: ModelAdapter
    schedule: ScheduleSpec
    inverter: Inverter
    metrics: Sequence[ImageMetric]
    guidance_scale: float
    seed: int
    warmup: int
    repeats: int
    warmed: bool = False
    denoiser: Any = None
    unavailable: dict[str, str] = field(default_factory=dict)
    image_dir: Path | None = None  # where source/reconstruction PNGs go (the run folder)


@dataclass
class BrokenAdapter:
    """Stands in for a model that could not be built, so a sweep records it and goes on:
    every image of its run gets ``failed`` rows naming ``error``."""

    name: str
    error: BaseException
    family: str = "vp"
    guidance_distilled: bool = False

    def image_size(self) -> tuple[int, int]:
        cause = self.error.__cause__ or self.error  # unwrap Hydra's InstantiationException
        raise _Fail(f"model {self.name} could not be built: {type(cause).__name__}: {_one_line(cause)}")

    def __getattr__(self, attr: str) -> Any:
        raise AttributeError(f"BrokenAdapter {self.name} has no {attr}")


def evaluate(
    adapter: ModelAdapter,
    schedule: ScheduleSpec,
    inverter: Inverter,
    inverter_name: str,
    dataset: Sequence[Entry],
    metrics: Sequence[ImageMetric],
    *,
    model_name: str | None = None,
    schedule_name: str | None = None,
    seed: int = 0,
    guidance_scale: float = 1.0,
    warmup: int = 1,
    repeats: int = 1,
    max_images: int | None = None,
    out_dir: str | Path | None = None,
    inverter_params: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    progress: bool = True,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Run ``inverter`` on every dataset entry; return the tidy table (:data:`eval.records.COLUMNS`).

    ``inverter`` is called as ``inverter(denoiser, x0, grid, cond)``. ``model_name`` and
    ``schedule_name`` default to ``adapter.name`` and ``schedule.kind``. ``on_rows`` receives
    each image's rows as they finish (a logger). With ``out_dir``, rows are appended to
    ``results.csv`` there and ``provenance.json`` is written first.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got {warmup} and {repeats}")
    run = _Run(adapter, schedule, inverter, metrics, guidance_scale, seed, warmup, repeats)
    run.unavailable = _unavailable(metrics)
    run.image_dir = None if out_dir is None else Path(out_dir)
    entries = list(dataset)[:max_images] if max_images is not None else list(dataset)
    num_steps, device, dtype, setup_error = _probe(run)
    info = RunInfo(
        run_id=run_id or new_run_id(), model=model_name or adapter.name,
        schedule=schedule_name or schedule.kind, inverter=inverter_name, adapter=adapter.name,
        num_steps=num_steps, guidance_scale=guidance_scale, seed=seed,
        provenance=provenance(device, dtype, inverter_params, asdict(schedule), config),
    )
    results = None
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_provenance(Path(out_dir), info)
        results = Path(out_dir) / RESULTS_FILE
    all_rows: list[dict[str, Any]] = []
    desc = f"{info.model}/{info.schedule}/{inverter_name}"
    for entry in tqdm(entries, desc=desc, disable=not progress, unit="img"):
        rows = _rows_for(run, info, entry, setup_error)
        if results is not None:
            append_rows(results, rows)
        all_rows.extend(rows)
        if on_rows is not None:
            try:
                on_rows(to_frame(rows))
            except Exception:  # noqa: BLE001 - a logger never stops the benchmark
                log.exception("logger failed on the rows of %s", entry.image_id)
    return to_frame(all_rows)


def _unavailable(metrics: Sequence[ImageMetric]) -> dict[str, str]:
    """Metric name -> why it cannot run here (a raising check counts as a reason too)."""
    out = {}
    for metric in metrics:
        try:
            reason = metric.unavailable_reason()
        except Exception as err:  # noqa: BLE001
            reason = f"availability check raised {type(err).__name__}: {_one_line(err)}"
        if reason is not None:
            out[metric.name] = reason
    return out


def _probe(run: _Run) -> tuple[int, str, str, tuple[str, str] | None]:
    """Steps, device and dtype from a blank image; a setup error marks every image's rows
    (ValueError, e.g. a schedule kind the model does not support: skipped; else failed)."""
    try:
        blank = torch.zeros(1, 3, *run.adapter.image_size())
        with torch.no_grad():
            latent = run.adapter.encode_images(blank)
            grid = run.adapter.grid(run.schedule, tuple(latent.shape))
        run.denoiser = run.adapter.denoiser()
    except _Fail as err:
        return 0, "unknown", "unknown", ("failed", str(err))
    except ValueError as err:
        return 0, "unknown", "unknown", ("skipped", f"does not apply: {_one_line(err)}")
    except Exception as err:  # noqa: BLE001 - recorded on every row instead
        log.exception("setup failed")
        return 0, "unknown", "unknown", ("failed", f"setup {type(err).__name__}: {_one_line(err)}")
    device = getattr(run.adapter, "device", latent.device)
    dtype = getattr(run.adapter, "dtype", latent.dtype)
    return grid.num_steps, str(device), str(dtype).removeprefix("torch."), None


def _rows_for(
    run: _Run, info: RunInfo, entry: Entry, setup_error: tuple[str, str] | None
) -> list[dict[str, Any]]:
    """All rows of one entry; every exception except KeyboardInterrupt becomes rows."""
    status, reason, values = "ok", "", {}
    try:
        if setup_error is not None:
            status, reason = setup_error
        else:
            values = _measure(run, entry)
    except _Skip as err:
        status, reason = "skipped", str(err)
    except _Fail as err:
        status, reason = "failed", str(err)
    except Exception as err:  # noqa: BLE001 - a sweep must survive any one image
        log.exception("image %s failed", entry.image_id)
        status, reason = "failed", f"{type(err).__name__}: {_one_line(err)}"
    names = [m.name for m in run.metrics] + list(HARNESS_METRICS)
    better = {m.name: m.higher_is_better for m in run.metrics} | HARNESS_METRICS
    rows = []
    for name in names:
        row_status, row_reason = status, reason
        if name in run.unavailable:
            row_status, row_reason = "unavailable", run.unavailable[name]
        elif status == "ok" and isinstance(values.get(name), str):
            row_status, row_reason = "failed", values[name]
        value = values.get(name, math.nan) if row_status == "ok" else math.nan
        rows.append(info.row(entry.image_id, entry.caption, name, value, row_status, row_reason, better[name]))
    return rows


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _prepare(run: _Run, entry: Entry) -> _Image:
    if entry.problem is not None:
        raise _Skip(entry.problem)
    try:
        pixels = fit_to_size(load_image(entry.path), run.adapter.image_size())[None]  # type: ignore[arg-type]
    except (OSError, ValueError) as err:
        raise _Skip(f"cannot read image {entry.image_id}: {_one_line(err)}") from None
    with torch.no_grad():
        latent = run.adapter.encode_images(pixels)
        ceiling = run.adapter.decode_latents(latent)
        cond = run.adapter.encode_prompts([entry.caption or ""], guidance_scale=run.guidance_scale)
        grid = run.adapter.grid(run.schedule, tuple(latent.shape))
    return _Image(pixels.to(ceiling.device), latent, ceiling, cond, grid)


def _invert(run: _Run, denoiser: Any, img: _Image) -> InversionResult:
    try:
        with torch.no_grad():
            return run.inverter(denoiser, img.latent, img.grid, img.cond)
    except ValueError as err:
        raise _Skip(f"does not apply: {_one_line(err)}") from None


def _measure(run: _Run, entry: Entry) -> dict[str, float | str]:
    """Every metric value of one image (a str value is that metric's failure reason)."""
    torch.manual_seed(run.seed)
    img = _prepare(run, entry)
    device = img.latent.device
    counting = CountingDenoiser(run.denoiser)
    recon = functools.partial(_reconstruct, counting, grid=img.grid, cond=img.cond)
    if not run.warmed:
        for _ in range(run.warmup):
            recon(_invert(run, counting, img))
        run.warmed = True

    def invert_once() -> InversionResult:
        counting.counter.reset()
        return _invert(run, counting, img)

    with PeakMemory(device) as memory:
        inverted = time_call(invert_once, device, run.repeats)
    result: InversionResult = inverted.value  # type: ignore[assignment]
    nfe_forward, nfe_backward = counting.counter.forward, counting.counter.backward
    _check_finite(result.z, "inversion")

    def reconstruct_once() -> Tensor:
        counting.counter.reset()
        return recon(result)

    rebuilt = time_call(reconstruct_once, device, run.repeats)
    z_rec: Tensor = rebuilt.value  # type: ignore[assignment]
    _check_finite(z_rec, "reconstruction")
    with torch.no_grad():
        residuals = step_residuals(run.denoiser, result, img.grid, img.cond)[:, 0]
        decoded = run.adapter.decode_latents(z_rec)
    if run.image_dir is not None:
        save_run_images(run.image_dir, entry.image_id, img.pixels, decoded)
    ceiling = psnr(img.ceiling, img.pixels)[0].item()
    normality = LatentGaussianity()(result.z)
    values: dict[str, float | str] = {
        "psnr_vae_ceiling": ceiling,
        "psnr_gap_to_vae": ceiling - psnr(decoded, img.pixels)[0].item(),
        "latent_rmse": latent_rmse(z_rec, img.latent)[0].item(),
        "residual_rms_mean": residuals.mean().item(),
        "residual_rms_max": residuals.max().item(),
        "nfe_forward": nfe_forward,
        "nfe_backward": nfe_backward,
        "nfe_forward_reconstruct": counting.counter.forward,
        "time_invert_s": inverted.median_s,
        "time_reconstruct_s": rebuilt.median_s,
        "peak_memory_mb": memory.mb,
        **{name: normality[name][0].item() for name in GAUSSIANITY_ROWS},
    }
    values.update(_image_metrics(run, decoded, img.pixels, entry.caption))
    return values


def _reconstruct(denoiser: Any, result: InversionResult, grid: Grid, cond: Conditioning) -> Tensor:
    with torch.no_grad():
        return reconstruct(denoiser, result, grid, cond)


def _check_finite(z: Tensor, stage: str) -> None:
    if not bool(torch.isfinite(z).all()):
        raise _Fail(f"diverged: non-finite latent after {stage}")


def _image_metrics(
    run: _Run, decoded: Tensor, pixels: Tensor, caption: str | None
) -> dict[str, float | str]:
    """Each available metric's value, or its failure reason (one metric never sinks the rest)."""
    out: dict[str, float | str] = {}
    for metric in run.metrics:
        if metric.name in run.unavailable:
            continue
        try:
            with torch.no_grad():
                out[metric.name] = float(metric(decoded, pixels, [caption or ""])[0].item())
        except Exception as err:  # noqa: BLE001
            log.exception("metric %s failed", metric.name)
            out[metric.name] = f"{type(err).__name__}: {_one_line(err)}"
    return out
