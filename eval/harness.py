"""The reconstruction loop: one model x schedule x inverter over a dataset -> the tidy table.

Plain arguments only (no Hydra): the adapter (or a factory that builds it), the inverter, the
dataset and the metrics (or a factory), with one :class:`~eval.settings.RunSettings`. The run is
a plan of units, one per image (:mod:`eval.units`), driven by :func:`eval.loop.run_units`:
finished units found in ``results.csv`` are skipped (resume by content key), the rest are
split across data-parallel ranks, and the model and metrics are built only when a unit is left
to compute. Per batch of images (``batch_size``, default 1), in this order:

1. load and fit the image (:mod:`eval.data`: RGB [0, 1], cover-resize + center-crop to the
   adapter's ``image_size()``), encode it and the caption, build the grid (untimed);
   decode(encode(x)) gives the VAE ceiling. Pixels, latent, ceiling and prompt embeddings come
   from the shared content-keyed cache (:mod:`eval.cache`) when a job of the sweep made them;
2. warm-up: before the first timed image, ``warmup`` untimed inversions + reconstructions;
   With ``batch_size`` B > 1 the prepared images are stacked: one network call per evaluation
   serves all B (their prompts encoded together; a stored-noise grid repeats the batch-1 noise
   for every image, so each image sees exactly what it sees alone);
3. invert (timed; median of ``repeats``; peak memory; NFE of one inversion counted by
   :class:`gnri.core.CountingDenoiser`, which also clocks the seconds spent inside the network
   during each timed repeat: the in-run rows of :mod:`eval.records`) under ``torch.no_grad()``
   (an inverter that needs gradients enables them itself);
4. reconstruct with :func:`gnri.core.reconstruct` (timed and counted separately);
5. untimed: per-step residuals (:func:`gnri.core.step_residuals`), decode, metrics, how
   Gaussian the inverted latent is, and (with ``out_dir``) the source and reconstruction PNGs.

Every row is one image's: a batch's times are divided by its size, its NFE and peak memory are
the batch's. Every inverter here is batch-separable (each image's iterates and per-image
stopping rules depend on that image alone; ``tests/test_batching.py`` checks each against batch
1); one that is not declares ``@inverter_info(batch_separable=False)`` (:mod:`gnri.catalog`) and runs image by image,
with ``batch_size`` 1 in its rows.

Failures never stop the sweep: they become rows (see :mod:`eval.records` for statuses). An
inverter raising ValueError (it does not apply here) gives ``skipped``; any other exception, a
non-finite latent or a non-finite decoded image gives ``failed``. A model that could not be
built is passed as :class:`BrokenAdapter`: every image fails with why.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from eval.cache import TensorCache, conditioning_from_tensors, conditioning_to_tensors
from eval.data import Entry
from eval.distributed import Shard
from eval.finite import check_finite, checked_result, diverged_reason
from eval.loop import run_units
from eval.machine import warn_if_loaded
from eval.metrics.base import ImageMetric
from eval.metrics.gaussianity import LatentGaussianity
from eval.metrics.latent import kept_latents, latent_rmse
from eval.metrics.psnr import psnr
from eval.records import (
    GAUSSIANITY_ROWS,
    HARNESS_METRICS,
    RunInfo,
    Unavailable,
    new_run_id,
    provenance,
    write_provenance,
)
from eval.settings import RunSettings, settings_from_kwargs
from eval.timing import (
    InRunNetwork,
    NetworkTimes,
    PeakMemory,
    bare_network_times,
    generation_peak_mb,
    memory_beyond_generation,
    time_call,
    time_with_network_clock,
)
from eval.units import Unit, plan_units
from eval.validate import task_refusal
from gnri.catalog import info_of
from gnri.core import (
    Conditioning,
    CountingDenoiser,
    Grid,
    InversionResult,
    Tensor,
    reconstruct,
    sample,
    step_residuals,
)
from gnri.images import fit_to_size, load_image
from gnri.models.base import ModelAdapter, ScheduleSpec

log = logging.getLogger(__name__)
# An inverter with its hyperparameters bound: (denoiser, x0, grid, cond) -> InversionResult.
Inverter = Callable[..., InversionResult]
AdapterSource = ModelAdapter | Callable[[], ModelAdapter]
MetricsSource = Sequence[ImageMetric] | Callable[[], Sequence[ImageMetric]]


class _Skip(Exception):
    """The entry or method does not apply: rows get status ``skipped`` with this reason."""


class _Fail(Exception):
    """The method diverged (or the model could not be built): rows get status ``failed``."""


@dataclass
class _Image:
    """Everything about one image that precedes inversion (all untimed); its prompt is encoded
    with its batch's (:func:`_stack`)."""

    pixels: Tensor
    latent: Tensor
    ceiling_psnr: float
    grid: Grid
    key: dict[str, Any] = field(default_factory=dict)  # the image's cache key fields


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


@dataclass
class RefusedAdapter(BrokenAdapter):
    """Stands in for a model the run's method does not apply to (its family or the task, known
    before loading): every image of the run gets ``skipped`` rows naming why; nothing loads."""

    def image_size(self) -> tuple[int, int]:
        raise _Skip(_one_line(self.error))


def is_adapter(obj: Any) -> bool:
    """An adapter (or BrokenAdapter) rather than a factory that builds one."""
    return isinstance(obj, BrokenAdapter) or (hasattr(obj, "denoiser") and hasattr(obj, "image_size"))


def cache_fields(settings: RunSettings, adapter: Any) -> dict[str, Any]:
    """What identifies the model's method-free work (encoding, prompts) in the shared cache."""
    checkpoint = settings.checkpoint.identity if settings.checkpoint is not None else {"adapter": adapter.name}
    return {"checkpoint": checkpoint, "device": str(getattr(adapter, "device", "cpu")),
            "dtype": str(getattr(adapter, "dtype", "unknown"))}


@dataclass
class _Run:
    """Per-run state shared across images; the model and metrics are built on first use."""

    settings: RunSettings
    adapter_source: AdapterSource
    inverter: Inverter
    metrics_source: MetricsSource
    cache: TensorCache
    shard: Shard
    stages: dict[str, float] = field(default_factory=lambda: {"setup_s": 0.0, "prepare_s": 0.0})
    adapter: Any = None
    metrics: Sequence[ImageMetric] = ()
    info: RunInfo | None = None
    setup_error: tuple[str, str] | None = None
    warmed: bool = False
    denoiser: Any = None
    unavailable: dict[str, str] = field(default_factory=dict)
    network: NetworkTimes | None = None  # the first measured; per batch size in ``networks``
    networks: dict[int, NetworkTimes] = field(default_factory=dict)
    generations: dict[int, float] = field(default_factory=dict)  # plain generation's peak MiB per batch size

    @property
    def metric_names(self) -> list[str]:
        if self.settings.metrics:
            return list(self.settings.metrics)
        return [m.name for m in self.metrics_source]  # type: ignore[union-attr]

    @property
    def batch_size(self) -> int:
        """Images per inversion call: the setting, or 1 for a method that is not batch-separable."""
        return self.settings.batch_size if batch_separable(self.inverter) else 1

    @property
    def expected_rows(self) -> int:
        return len(self.metric_names) + len(HARNESS_METRICS)

    def setup(self) -> RunInfo:
        """Build the model and metrics (once), probe steps/device/dtype, write provenance."""
        if self.info is not None:
            return self.info
        start = time.perf_counter()
        source = self.adapter_source
        self.adapter = source if is_adapter(source) else source()  # type: ignore[operator]
        source_metrics = self.metrics_source
        self.metrics = list(source_metrics if not callable(source_metrics) else source_metrics())
        built = [m.name for m in self.metrics]
        if self.settings.metrics and built != list(self.settings.metrics):
            raise ValueError(f"metrics built {built} differ from the settings' {list(self.settings.metrics)}")
        self.unavailable = _unavailable(self.metrics)
        num_steps, device, dtype, self.setup_error = _probe(self)
        s = self.settings
        checkpoint = s.checkpoint.label if s.checkpoint is not None else getattr(self.adapter, "name", "")
        self.info = RunInfo(
            run_id=s.run_id or new_run_id(), model=s.model or self.adapter.name, checkpoint=checkpoint,
            schedule=s.schedule_name or s.schedule.kind, inverter=s.inverter, adapter=self.adapter.name,
            num_steps=num_steps, guidance_scale=s.guidance_scale, seed=s.seed,
            provenance=provenance(device, dtype, s.inverter_params, asdict(s.schedule), s.config),
            batch_size=self.batch_size, true_cfg_scale=s.true_cfg_scale,
        )
        if s.batch_size > 1 and self.batch_size == 1:
            log.warning("inverter %s is not batch-separable: it runs image by image (batch_size 1 in its rows)",
                        s.inverter)
        if s.out_dir is not None and self.shard.is_main:
            Path(s.out_dir).mkdir(parents=True, exist_ok=True)
            write_provenance(Path(s.out_dir), self.info)
        self.stages["setup_s"] += time.perf_counter() - start
        return self.info


def evaluate(
    adapter: AdapterSource,
    schedule: ScheduleSpec,
    inverter: Inverter,
    inverter_name: str,
    dataset: Sequence[Entry],
    metrics: MetricsSource,
    settings: RunSettings | None = None,
    *,
    shard: Shard | None = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
    **fields: Any,
) -> pd.DataFrame:
    """Run ``inverter`` on every dataset entry; return the tidy table (:data:`eval.records.COLUMNS`).

    ``inverter`` is called as ``inverter(denoiser, x0, grid, cond)``. ``adapter`` and ``metrics``
    may be zero-argument factories, called only when an image is left to compute. ``settings``
    carries everything else; without it, ``fields`` are its fields (``model_name``, ``out_dir``,
    ``seed``, ``warmup``, ... as :func:`eval.settings.settings_from_kwargs` reads them).
    ``on_rows`` receives each image's rows as they finish (a logger). With ``settings.out_dir``,
    rows go to ``results.csv`` there as each image finishes, finished images are skipped
    (``resume``), and ``provenance.json`` and ``timings.json`` are written.
    """
    settings = settings if settings is not None else settings_from_kwargs(schedule, inverter_name, **fields)
    shard = shard or Shard()
    cache = TensorCache(settings.cache_dir)
    run = _Run(settings, adapter, inverter, metrics, cache, shard)
    units = plan_units(settings, dataset)
    desc = f"{settings.model or 'model'}/{settings.schedule_name or settings.schedule.kind}/{settings.inverter}"
    table = run_units(settings, units, run.expected_rows, functools.partial(_rows_for_batch, run), shard=shard,
                      on_rows=on_rows, desc=desc, stages=run.stages, batch_size=settings.batch_size)
    if run.network is not None:
        warn_if_loaded("end of the timed work")
    return table


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
            grid = run.adapter.grid(run.settings.schedule, tuple(latent.shape))
        run.denoiser = run.adapter.denoiser()
    except _Fail as err:
        return 0, "unknown", "unknown", ("failed", str(err))
    except _Skip as err:  # a RefusedAdapter: the method does not apply to this model or task
        return 0, "unknown", "unknown", ("skipped", str(err))
    except ValueError as err:
        return 0, "unknown", "unknown", ("skipped", f"does not apply: {_one_line(err)}")
    except Exception as err:  # noqa: BLE001 - recorded on every row instead
        log.exception("setup failed")
        return 0, "unknown", "unknown", ("failed", f"setup {type(err).__name__}: {_one_line(err)}")
    device = getattr(run.adapter, "device", latent.device)
    dtype = getattr(run.adapter, "dtype", latent.dtype)
    return grid.num_steps, str(device), str(dtype).removeprefix("torch."), None


def batch_separable(inverter: Inverter) -> bool:
    """Whether an inverter may take a batch (False only where its function says so)."""
    return info_of(inverter).batch_separable


Outcome = tuple[str, str, dict[str, Any]]  # (status, reason, metric values)


def _outcome_of(err: Exception, what: str) -> Outcome:
    """The status and reason an exception gives ``what`` (an image, a batch)."""
    if isinstance(err, _Skip):
        return "skipped", str(err), {}
    if isinstance(err, _Fail):
        return "failed", str(err), {}
    log.exception("%s failed", what)
    return "failed", f"{type(err).__name__}: {_one_line(err)}", {}


def _rows_for_batch(run: _Run, units: Sequence[Unit]) -> list[list[dict[str, Any]]]:
    """The rows of each unit of a batch (one image each), measured together where the method
    allows; every exception except KeyboardInterrupt becomes rows of the images it concerns."""
    entries = [unit.entries[0] for unit in units]
    try:
        run.setup()
        if run.setup_error is not None:
            outcomes: list[Outcome] = [(*run.setup_error, {}) for _ in units]
        else:
            outcomes = _measure_entries(run, entries)
    except Exception as err:  # noqa: BLE001 - a sweep must survive any one batch
        outcomes = [_outcome_of(err, f"batch of {entries[0].image_id}")] * len(units)
    return [_unit_rows(run, unit, *outcome) for unit, outcome in zip(units, outcomes)]


def _measure_entries(run: _Run, entries: Sequence[Entry]) -> list[Outcome]:
    """Prepare each image (an unusable one gets its own outcome), then measure the rest as one
    batch, or one by one for a method that is not batch-separable."""
    outcomes: list[Outcome | None] = [None] * len(entries)
    prepared: list[tuple[int, _Image]] = []
    for j, entry in enumerate(entries):
        try:
            prepared.append((j, _prepare(run, entry)))
        except Exception as err:  # noqa: BLE001
            outcomes[j] = _outcome_of(err, f"image {entry.image_id}")
    groups = [prepared] if batch_separable(run.inverter) else [[p] for p in prepared]
    for group in (g for g in groups if g):
        try:
            measured = _measure(run, [entries[j] for j, _ in group], [img for _, img in group])
        except Exception as err:  # noqa: BLE001
            measured = [_outcome_of(err, f"image {entries[group[0][0]].image_id}")] * len(group)
        for (j, _), outcome in zip(group, measured):
            outcomes[j] = outcome
    return [o if o is not None else ("failed", "not measured", {}) for o in outcomes]


def _unit_rows(run: _Run, unit: Unit, status: str, reason: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per expected metric of one image, with its status and reason."""
    entry = unit.entries[0]
    info = run.info if run.info is not None else run.settings.fallback_info(
        run.settings.inverter, run.settings.inverter_params, run.batch_size)
    if status == "ok":  # an ok row's reason carries a warning about its input (e.g. a truncated caption)
        check = getattr(run.adapter, "prompt_warning", None)
        reason = entry.warning or (check(entry.caption) if callable(check) and entry.caption else None) or ""
    names = run.metric_names + list(HARNESS_METRICS)
    better = {m.name: m.higher_is_better for m in run.metrics} | HARNESS_METRICS
    rows = []
    for name in names:
        row_status, row_reason = status, reason
        if name in run.unavailable:
            row_status, row_reason = "unavailable", run.unavailable[name]
        elif status == "ok" and isinstance(values.get(name), Unavailable):
            row_status, row_reason = "unavailable", values[name].reason  # type: ignore[union-attr]
        elif status == "ok" and isinstance(values.get(name), str):
            row_status, row_reason = "failed", values[name]
        value = values.get(name, math.nan) if row_status == "ok" else math.nan
        rows.append(info.row(entry.image_id, entry.caption, name, value, row_status, row_reason,
                             better.get(name, True), unit.key))
    return rows


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def image_cache_key(settings: RunSettings, adapter: Any, entry: Entry) -> dict[str, Any]:
    """The cache fields of an entry's image for this model: checkpoint, device, dtype, size, file hash."""
    from eval.settings import file_digest

    return {**cache_fields(settings, adapter), "size": list(adapter.image_size()), "image": file_digest(entry.path)}


def cached_image(cache: TensorCache, key: dict[str, Any], adapter: Any, entry: Entry) -> tuple[Tensor, Tensor, float]:
    """(fitted pixels, latent, VAE-ceiling PSNR) of an entry's image: from the cache, or computed
    and stored. Raises OSError/ValueError (one line naming the file) for an unreadable image."""
    hit = cache.get("image", key, getattr(adapter, "device", "cpu"))
    if hit is not None:
        tensors, meta = hit
        return tensors["pixels"], tensors["latent"], float(meta["ceiling_psnr"])
    pixels = fit_to_size(load_image(entry.path), adapter.image_size())[None]  # type: ignore[arg-type]
    with torch.no_grad():
        latent = check_finite(adapter.encode_images(pixels), "encoded latent (VAE encode)")
        decoded = check_finite(adapter.decode_latents(latent), "VAE round-trip image (VAE decode)")
    pixels = pixels.to(decoded.device)
    ceiling = psnr(decoded, pixels)[0].item()
    cache.put("image", key, {"pixels": pixels, "latent": latent}, {"ceiling_psnr": ceiling})
    return pixels, latent, ceiling


def cached_conditioning(
    cache: TensorCache, settings: RunSettings, adapter: Any, caption: str | Sequence[str]
) -> Conditioning:
    """The caption's prompt embeddings at the run's guidance: from the cache, or encoded and stored.
    A list of captions is one batch's conditioning, encoded together by the adapter."""
    named = {"caption": caption} if isinstance(caption, str) else {"captions": list(caption)}
    key = {**cache_fields(settings, adapter), **named, **settings.guidance_options()}
    hit = cache.get("prompt", key, getattr(adapter, "device", "cpu"))
    if hit is not None:
        return conditioning_from_tensors(*hit)
    with torch.no_grad():
        prompts = [caption] if isinstance(caption, str) else list(caption)
        cond = adapter.encode_prompts(prompts, **settings.guidance_options())
    cache.put("prompt", key, *conditioning_to_tensors(cond))
    return cond


def _prepare(run: _Run, entry: Entry) -> _Image:
    """Pixels, latent, VAE ceiling (from the cache when present) and the grid."""
    if entry.problem is not None:
        raise _Skip(entry.problem)
    start = time.perf_counter()
    adapter, s = run.adapter, run.settings
    image_key = image_cache_key(s, adapter, entry)
    try:
        pixels, latent, ceiling = cached_image(run.cache, image_key, adapter, entry)
    except (OSError, ValueError) as err:
        raise _Skip(f"cannot read image {entry.image_id}: {_one_line(err)}") from None
    with torch.no_grad():
        grid = adapter.grid(s.schedule, tuple(latent.shape))
    run.stages["prepare_s"] += time.perf_counter() - start
    return _Image(pixels, latent, ceiling, grid, image_key)


def _invert(run: _Run, denoiser: Any, img: _Batch) -> InversionResult:
    try:
        with torch.no_grad():
            return checked_result(run.inverter(denoiser, img.latent, img.grid, img.cond))
    except ValueError as err:
        raise _Skip(f"does not apply: {_one_line(err)}") from None


@dataclass
class _Batch:
    """Prepared images stacked along the batch: one inversion call serves them all."""

    pixels: Tensor
    latent: Tensor
    cond: Conditioning
    grid: Grid

    @property
    def size(self) -> int:
        return int(self.latent.shape[0])


def _stack(run: _Run, entries: Sequence[Entry], images: Sequence[_Image]) -> _Batch:
    """The batch's prompts encoded together (from the shared cache: one caption by itself, several
    by their list); one image as it is, several with pixels and latents concatenated and the first
    grid's stored noise repeated for every image (each image gets the noise it would get alone)."""
    start = time.perf_counter()
    captions = [entry.caption or "" for entry in entries]
    cond = cached_conditioning(run.cache, run.settings, run.adapter, captions[0] if len(captions) == 1 else captions)
    run.stages["prepare_s"] += time.perf_counter() - start
    if len(images) == 1:
        return _Batch(images[0].pixels, images[0].latent, cond, images[0].grid)
    size = len(images)
    grid = images[0].grid
    if grid.noises is not None:
        grid = grid.with_noises(tuple(n.expand(size, *n.shape[1:]).contiguous() for n in grid.noises))
    return _Batch(torch.cat([i.pixels for i in images]), torch.cat([i.latent for i in images]), cond, grid)


def _nonfinite(stages: Sequence[tuple[str, Tensor]], j: int) -> str | None:
    """Why image ``j`` of a batch diverged (the first stage with a non-finite value), or None."""
    for stage, tensor in stages:
        why = diverged_reason(tensor[j], stage)
        if why is not None:
            return why
    return None


def _measure(run: _Run, entries: Sequence[Entry], images: Sequence[_Image]) -> list[Outcome]:
    """Every metric value of each image of a batch (a str value is that metric's failure reason);
    an image whose latent or decoded image is non-finite gets ``failed``, the rest go on."""
    refusal = task_refusal(run.inverter, "reconstruct")  # e.g. FlowEdit: inversion-free editing
    if refusal is not None:
        raise _Skip(refusal)
    torch.manual_seed(run.settings.seed)
    batch = _stack(run, entries, images)
    device = batch.latent.device
    counting = CountingDenoiser(run.denoiser)
    recon = functools.partial(_reconstruct, counting, grid=batch.grid, cond=batch.cond)
    if not run.warmed:
        for _ in range(run.settings.warmup):
            recon(_invert(run, counting, batch))
        run.warmed = True
    if batch.size not in run.networks:
        if run.network is None:
            warn_if_loaded("start of the timed work")
        run.networks[batch.size] = (_network_times(run, batch, device) if run.settings.time_network
                                    else NetworkTimes(None, None, "time_network=false"))
        run.network = run.network or run.networks[batch.size]
    if batch.size not in run.generations:  # its own pass, after the warm-up, never inside a timed call
        run.generations[batch.size] = generation_peak_mb(
            lambda: sample(run.denoiser, batch.latent, batch.grid, batch.cond), device)
    clock = getattr(run.adapter, "compile_clock", None)
    compiles = clock.compiles if clock is not None else 0

    with PeakMemory(device) as memory:
        inverted, in_run = time_with_network_clock(lambda: _invert(run, counting, batch), counting.counter, device,
                                                   run.settings.repeats)
    result: InversionResult = inverted.value  # type: ignore[assignment]
    nfe_forward, nfe_backward = counting.counter.forward, counting.counter.backward
    if clock is not None and clock.compiles != compiles:
        log.warning("a recompile ran inside the timed inversion of %s: raise warmup", entries[0].image_id)
    if not bool(torch.isfinite(result.z).any()):  # nothing to reconstruct from
        raise _Fail(diverged_reason(result.z, "inversion") or "")

    def reconstruct_once() -> Tensor:
        counting.counter.reset()
        return recon(result)

    rebuilt = time_call(reconstruct_once, device, run.settings.repeats)
    z_rec: Tensor = rebuilt.value  # type: ignore[assignment]
    with torch.no_grad():
        residuals = step_residuals(run.denoiser, result, batch.grid, batch.cond)
        decoded = run.adapter.decode_latents(z_rec)
    stages = (("inversion", result.z), ("reconstruction", z_rec), ("decoding", decoded))
    shared: dict[str, Any] = {
        "nfe_forward": nfe_forward,
        "nfe_backward": nfe_backward,
        "nfe_forward_reconstruct": counting.counter.forward,
        "time_invert_s": inverted.median_s / batch.size,
        "time_reconstruct_s": rebuilt.median_s / batch.size,
        "peak_memory_mb": memory.mb,
        "peak_memory_extra_mb": memory_beyond_generation(memory.mb, run.generations[batch.size]),
        "compile_s": clock.seconds if clock is not None else 0.0,  # nothing compiled without model.compile
        "kept_latents": kept_latents(result, batch.cond),  # what reconstruction replays, in latents
        "exact_by_construction": float(info_of(run.inverter).exact_reconstruction),
        **_overhead(run.networks[batch.size], inverted.median_s, nfe_forward, nfe_backward),
        **_in_run_values(in_run, batch.size),
    }
    pixels = batch.pixels.to(decoded.device)
    scores = psnr(decoded, pixels)
    rmse = latent_rmse(z_rec, batch.latent)
    normality = LatentGaussianity()(result.z)
    outcomes: list[Outcome] = []
    for j, (entry, img) in enumerate(zip(entries, images)):
        why = _nonfinite(stages, j)
        if why is not None:
            outcomes.append(("failed", why, {}))
            continue
        if run.settings.out_dir is not None:
            from eval.report.plots import save_run_images  # matplotlib: only when an image is computed

            save_run_images(Path(run.settings.out_dir), entry.image_id, pixels[j:j + 1], decoded[j:j + 1])
        values: dict[str, Any] = {
            "psnr_vae_ceiling": img.ceiling_psnr,
            "psnr_gap_to_vae": img.ceiling_psnr - scores[j].item(),
            "latent_rmse": rmse[j].item(),
            **_residual_values(result, residuals[:, j]),
            **shared,
            **{name: normality[name][j].item() for name in GAUSSIANITY_ROWS},
        }
        values.update(_image_metrics(run, decoded[j:j + 1], pixels[j:j + 1], entry.caption, img.key))
        outcomes.append(("ok", "", values))
    return outcomes


def _residual_values(result: InversionResult, residuals: Tensor) -> dict[str, Any]:
    """Mean and max per-step residual of the shared step; ``unavailable`` for a method that
    regenerates with its own sampler (EDICT, edit-friendly, RF-Solver, ...): the shared step's
    residual says nothing about its inversion."""
    if result.sampler is not None:
        why = Unavailable("the method regenerates with its own sampler: the shared step's residual does not apply")
        return {"residual_rms_mean": why, "residual_rms_max": why}
    return {"residual_rms_mean": residuals.mean().item(), "residual_rms_max": residuals.max().item()}


def _network_times(run: _Run, img: _Batch, device: torch.device) -> NetworkTimes:
    """The bare network's forward and backward seconds on this run's first batch of this size, at
    the middle level of its grid (a backward that cannot run, e.g. out of memory, is left out
    with why)."""
    level = img.grid.levels[len(img.grid.levels) // 2]
    try:
        return bare_network_times(run.denoiser, img.latent, level, img.cond, device, backward=True)
    except (RuntimeError, torch.OutOfMemoryError) as err:
        log.warning("bare network backward could not be timed: %s", _one_line(err))
        forward = bare_network_times(run.denoiser, img.latent, level, img.cond, device).forward_s
        return NetworkTimes(forward, None, f"backward failed: {_one_line(err)}")


def _overhead(network: NetworkTimes | None, invert_s: float, nfe_forward: int, nfe_backward: int) -> dict[str, Any]:
    """The bare network's times and ``overhead_ratio_bare``, the inversion over them (a str: why
    missing): what an ideal loop around this network would cost, timed apart from the method."""
    if network is None or network.forward_s is None:
        why = Unavailable(network.reason if network is not None else "not measured")
        return {"time_network_call_s": why, "time_network_backward_s": why, "overhead_ratio_bare": why}
    missing = Unavailable(network.reason)
    out: dict[str, Any] = {"time_network_call_s": network.forward_s,
                           "time_network_backward_s": network.backward_s if network.backward_s is not None
                           else missing}
    if nfe_backward and network.backward_s is None:
        out["overhead_ratio_bare"] = missing
    else:
        network_s = nfe_forward * network.forward_s + nfe_backward * (network.backward_s or 0.0)
        out["overhead_ratio_bare"] = invert_s / network_s if network_s > 0 else "no network evaluation"
    return out


def _in_run_values(in_run: InRunNetwork, batch_size: int) -> dict[str, Any]:
    """The in-run network rows (seconds per image, as ``time_invert_s``); the ratio and share are
    unavailable where no network time was recorded or a backward pass could not be timed."""
    out: dict[str, Any] = {"time_network_forward_in_run_s": in_run.forward_s / batch_size,
                           "time_network_backward_in_run_s": in_run.backward_s / batch_size,
                           "overhead_ratio": in_run.overhead_ratio, "non_network_share": in_run.non_network_share}
    why = None
    if in_run.unmeasured_backward:
        why = Unavailable(f"{in_run.unmeasured_backward} backward pass(es) reached no input of the network call: "
                          "not timed")
        out["time_network_backward_in_run_s"] = why
    elif in_run.overhead_ratio is None:
        why = Unavailable("no network evaluation inside the timed inversion")
    if why is not None:
        out["overhead_ratio"] = out["non_network_share"] = why
    return out


def _reconstruct(denoiser: Any, result: InversionResult, grid: Grid, cond: Conditioning) -> Tensor:
    with torch.no_grad():
        return reconstruct(denoiser, result, grid, cond)


def _metric_value(run: _Run, metric: ImageMetric, decoded: Tensor, pixels: Tensor, caption: str,
                  image_key: dict[str, Any] | None) -> Tensor:
    """One metric's values; a metric with ``reference_features``/``score_with`` (LPIPS) gets the
    method-free half (the source image's features) from the shared cache."""
    reference = getattr(metric, "reference_features", None)
    if reference is None or run.cache.root is None or image_key is None:
        return metric(decoded, pixels, [caption])
    key = {**image_key, "metric": metric.name, "options": dict(run.settings.metric_options.get(metric.name) or {})}
    hit = run.cache.get("metric", key, decoded.device)
    features = hit[0] if hit is not None else reference(pixels, [caption])
    if hit is None:
        run.cache.put("metric", key, features)
    return metric.score_with(decoded, features, [caption])  # type: ignore[attr-defined]


def _image_metrics(
    run: _Run, decoded: Tensor, pixels: Tensor, caption: str | None, image_key: dict[str, Any] | None = None
) -> dict[str, float | str]:
    """Each available metric's value, or its failure reason (one metric never sinks the rest)."""
    out: dict[str, float | str] = {}
    for metric in run.metrics:
        if metric.name in run.unavailable:
            continue
        try:
            with torch.no_grad():
                out[metric.name] = float(_metric_value(run, metric, decoded, pixels, caption or "", image_key)[0].item())
        except Exception as err:  # noqa: BLE001
            log.exception("metric %s failed", metric.name)
            out[metric.name] = f"{type(err).__name__}: {_one_line(err)}"
    return out
