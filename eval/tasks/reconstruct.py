"""Reconstruction: invert each image, regenerate it with its own caption, score the reconstruction.

Per batch of images (``batch_size``, default 1), on the frame of :mod:`eval.task`:

1. prepare each image (:mod:`eval.prepare`: fitted pixels, latent, VAE ceiling, grid; untimed,
   from the shared cache when a job of the sweep made them); the batch's prompts are encoded
   together and a stored-noise grid repeats the batch-1 noise for every image;
2. warm-up: before the first timed image, ``warmup`` untimed inversions + reconstructions; the
   bare network is timed once per batch size and plain generation's peak memory measured apart;
3. invert (:func:`eval.timed.timed_inversion`: median of ``repeats``, peak memory, NFE of one
   call, the network's in-run seconds);
4. reconstruct with :func:`gnri.core.reconstruct` (timed and counted separately);
5. untimed: per-step residuals, decode, the image metrics (:mod:`eval.metrics`), how Gaussian the
   inverted latent is, and (with ``out_dir``) the source and reconstruction PNGs.

Every row is one image's: a batch's times are divided by its size, its NFE and peak memory are
the batch's. A method that is not batch-separable (``@inverter_info(batch_separable=False)``)
runs image by image, with ``batch_size`` 1 in its rows. An image whose latent or decoded image
is non-finite gets ``failed``; the others of its batch go on.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import pandas as pd
import torch

from eval.data import Entry
from eval.finite import diverged_reason
from eval.machine import warn_if_loaded
from eval.metrics.base import ImageMetric, Sample
from eval.metrics.diagnostics import GAUSSIANITY_ROWS, HARNESS_METRICS
from eval.metrics.gaussianity import LatentGaussianity
from eval.metrics.latent import kept_latents, latent_rmse
from eval.metrics.psnr import psnr
from eval.metrics.scoring import score, unavailable_reasons
from eval.prepare import Batch, PreparedImage, prepare_image, stack
from eval.records import Unavailable
from eval.settings import RunSettings, settings_from_kwargs
from eval.task import AdapterSource, Fail, Outcome, Skip, TaskRun, Value, outcome_of
from eval.timed import TimedInversion, invert_once, timed_inversion, warm_up
from eval.timing import NetworkTimes, bare_network_times, generation_peak_mb, memory_beyond_generation, time_call
from eval.units import Unit
from eval.validate import task_refusal
from gnri.catalog import info_of
from gnri.core import CountingDenoiser, InversionResult, Tensor, reconstruct, sample, step_residuals

log = logging.getLogger(__name__)
Inverter = Callable[..., InversionResult]  # (denoiser, x0, grid, cond) -> InversionResult
MetricsSource = Sequence[ImageMetric] | Callable[[], Sequence[ImageMetric]]


def batch_separable(inverter: Inverter) -> bool:
    """Whether an inverter may take a batch (False only where its function says so)."""
    return info_of(inverter).batch_separable


@dataclass
class Reconstruct(TaskRun):
    """``task=reconstruct``: :data:`HARNESS_METRICS` beside the configured image metrics."""

    name: ClassVar[str] = "reconstruct"
    metrics_source: MetricsSource = ()
    metrics: list[ImageMetric] = field(default_factory=list)
    warmed: bool = False
    networks: dict[int, NetworkTimes] = field(default_factory=dict)  # the bare network per batch size
    generations: dict[int, float] = field(default_factory=dict)  # plain generation's peak MiB per batch size

    @classmethod
    def create(cls, settings: RunSettings, adapter: AdapterSource, inverter: Inverter, *, shard: Any,
               metrics: MetricsSource = (), **resources: Any) -> Reconstruct:
        size = settings.batch_size if batch_separable(inverter) else 1
        return cls(settings, adapter, settings.inverter, dict(settings.inverter_params), shard, inverter, size,
                   metrics_source=metrics)

    def directions(self) -> Mapping[str, bool]:
        names = list(self.settings.metrics) or [m.name for m in self.metrics_source]  # type: ignore[union-attr]
        better = {m.name: m.higher_is_better for m in self.metrics}
        return {**{name: better.get(name, True) for name in names}, **HARNESS_METRICS}

    def run(self, dataset: Sequence[Entry], on_rows: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
        table = super().run(dataset, on_rows)
        if self.networks:
            warn_if_loaded("end of the timed work")
        return table

    def build(self) -> None:
        source = self.metrics_source
        self.metrics = list(source() if callable(source) else source)
        built = [m.name for m in self.metrics]
        if self.settings.metrics and built != list(self.settings.metrics):
            raise ValueError(f"metrics built {built} differ from the settings' {list(self.settings.metrics)}")
        self.unavailable = unavailable_reasons(self.metrics)
        if self.settings.batch_size > 1 and self.batch_size == 1:
            log.warning("inverter %s is not batch-separable: it runs image by image (batch_size 1 in its rows)",
                        self.settings.inverter)

    def measure(self, units: Sequence[Unit]) -> list[Outcome]:
        """Prepare each image (an unusable one gets its own outcome), then measure the rest as one
        batch, or one by one for a method that is not batch-separable."""
        outcomes: list[Outcome | None] = [None] * len(units)
        prepared: list[tuple[int, PreparedImage]] = []
        for j, unit in enumerate(units):
            start = time.perf_counter()
            try:
                prepared.append((j, prepare_image(self.cache, self.settings, self.adapter, unit.entries[0])))
            except Exception as err:  # noqa: BLE001
                outcomes[j] = outcome_of(err, f"image {unit.item}")
            self.stages["prepare_s"] += time.perf_counter() - start
        groups = [prepared] if batch_separable(self.inverter) else [[p] for p in prepared]
        for group in (g for g in groups if g):
            try:
                measured = self.measure_images([image for _, image in group])
            except Exception as err:  # noqa: BLE001
                measured = [outcome_of(err, f"image {group[0][1].entry.image_id}")] * len(group)
            for (j, _), outcome in zip(group, measured):
                outcomes[j] = outcome
        return [o if o is not None else ("failed", "not measured", {}) for o in outcomes]

    def measure_images(self, images: Sequence[PreparedImage]) -> list[Outcome]:
        """Every row value of each image of one batch (see the module docstring)."""
        refusal = task_refusal(self.inverter, "reconstruct")  # e.g. FlowEdit: inversion-free editing
        if refusal is not None:
            raise Skip(refusal)
        torch.manual_seed(self.settings.seed)
        start = time.perf_counter()
        batch = stack(self.cache, self.settings, self.adapter, images)
        self.stages["prepare_s"] += time.perf_counter() - start
        counting = CountingDenoiser(self.denoiser)
        recon = functools.partial(_reconstruct, counting, grid=batch.grid, cond=batch.cond)
        self.prepare_clocks(counting, batch, recon)
        clock = self.adapter.compile_clock
        compiles = clock.compiles if clock is not None else 0
        timed = timed_inversion(self.inverter, counting, batch.latent, batch.grid, batch.cond,
                                device=batch.latent.device, repeats=self.settings.repeats, memory=True)
        if clock is not None and clock.compiles != compiles:
            log.warning("a recompile ran inside the timed inversion of %s: raise warmup", images[0].entry.image_id)
        if not bool(torch.isfinite(timed.result.z).any()):  # nothing to reconstruct from
            raise Fail(diverged_reason(timed.result.z, "inversion") or "")
        def reconstruct_once() -> Tensor:
            counting.counter.reset()
            return recon(timed.result)

        rebuilt = time_call(reconstruct_once, batch.latent.device, self.settings.repeats)
        shared = self.shared_values(timed, rebuilt.median_s, counting.counter.forward, batch)
        return self.image_outcomes(images, batch, timed.result, rebuilt.value, shared)  # type: ignore[arg-type]

    def prepare_clocks(self, counting: CountingDenoiser, batch: Batch, recon: Callable[[InversionResult], Tensor]) -> None:
        """Warm up once per run; time the bare network and plain generation's peak memory once
        per batch size, each in its own pass, never inside a timed call."""
        if not self.warmed:
            warm_up(lambda: recon(invert_once(self.inverter, counting, batch.latent, batch.grid, batch.cond)),
                    self.settings.warmup)
            self.warmed = True
        device = batch.latent.device
        if batch.size not in self.networks:
            if not self.networks:
                warn_if_loaded("start of the timed work")
            self.networks[batch.size] = (_network_times(self.denoiser, batch, device) if self.settings.time_network
                                         else NetworkTimes(None, None, "time_network=false"))
        if batch.size not in self.generations:
            self.generations[batch.size] = generation_peak_mb(
                lambda: sample(self.denoiser, batch.latent, batch.grid, batch.cond), device)

    def shared_values(self, timed: TimedInversion, reconstruct_s: float, nfe_reconstruct: int,
                      batch: Batch) -> dict[str, Value]:
        """The values every image of a batch shares: counts, clocks, memory, what is kept."""
        clock = self.adapter.compile_clock
        return {
            "nfe_forward": timed.nfe_forward,
            "nfe_backward": timed.nfe_backward,
            "nfe_forward_reconstruct": nfe_reconstruct,
            "time_invert_s": timed.seconds / batch.size,
            "time_reconstruct_s": reconstruct_s / batch.size,
            "peak_memory_mb": timed.peak_mb,
            "peak_memory_extra_mb": memory_beyond_generation(timed.peak_mb, self.generations[batch.size]),
            "compile_s": clock.seconds if clock is not None else 0.0,  # nothing compiled without model.compile
            "kept_latents": kept_latents(timed.result, batch.cond),  # what reconstruction replays, in latents
            "exact_by_construction": float(info_of(self.inverter).exact_reconstruction),
            **_overhead(self.networks[batch.size], timed.seconds, timed.nfe_forward, timed.nfe_backward),
            **_in_run_values(timed, batch.size),
        }

    def image_outcomes(self, images: Sequence[PreparedImage], batch: Batch, result: InversionResult, z_rec: Tensor,
                       shared: Mapping[str, Value]) -> list[Outcome]:
        """Decode, then each image's own values (``failed`` where its latent or image is non-finite)."""
        with torch.no_grad():
            residuals = step_residuals(self.denoiser, result, batch.grid, batch.cond)
            decoded = self.adapter.decode_latents(z_rec)
        stages = (("inversion", result.z), ("reconstruction", z_rec), ("decoding", decoded))
        pixels = batch.pixels.to(decoded.device)
        scores, rmse = psnr(decoded, pixels), latent_rmse(z_rec, batch.latent)
        normality = LatentGaussianity()(result.z)
        outcomes: list[Outcome] = []
        for j, image in enumerate(images):
            why = _nonfinite(stages, j)
            if why is not None:
                outcomes.append(("failed", why, {}))
                continue
            if self.settings.out_dir is not None:
                from eval.report.plots import save_run_images  # matplotlib: only when an image is computed

                save_run_images(Path(self.settings.out_dir), image.entry.image_id, pixels[j:j + 1], decoded[j:j + 1])
            values: dict[str, Value] = {
                "psnr_vae_ceiling": image.ceiling_psnr,
                "psnr_gap_to_vae": image.ceiling_psnr - scores[j].item(),
                "latent_rmse": rmse[j].item(),
                **_residual_values(result, residuals[:, j]),
                **shared,
                **{name: normality[name][j].item() for name in GAUSSIANITY_ROWS},
            }
            values.update(self.image_metrics(Sample(decoded[j:j + 1], pixels[j:j + 1], image.entry.caption or ""),
                                             image.key))
            outcomes.append(("ok", "", values))
        return outcomes

    def image_metrics(self, scored: Sample, image_key: dict[str, Any]) -> dict[str, Value]:
        """Each available image metric's value; a metric with a cached source half (LPIPS) gets the
        source image's features from the shared cache."""
        if self.cache.root is None:
            return score(self.metrics, scored, unavailable=self.unavailable)

        def features(metric: Any) -> Any:
            options = dict(self.settings.metric_options.get(metric.name) or {})
            key = {**image_key, "metric": metric.name, "options": options}
            hit = self.cache.get("metric", key, scored.candidate.device)
            if hit is not None:
                return hit[0]
            found = metric.reference_features(scored.reference, [scored.caption])
            self.cache.put("metric", key, found)
            return found

        return score(self.metrics, scored, unavailable=self.unavailable, features=features)


def _reconstruct(denoiser: Any, result: InversionResult, grid: Any, cond: Any) -> Tensor:
    with torch.no_grad():
        return reconstruct(denoiser, result, grid, cond)


def _nonfinite(stages: Sequence[tuple[str, Tensor]], j: int) -> str | None:
    """Why image ``j`` of a batch diverged (the first stage with a non-finite value), or None."""
    for stage, tensor in stages:
        why = diverged_reason(tensor[j], stage)
        if why is not None:
            return why
    return None


def _residual_values(result: InversionResult, residuals: Tensor) -> dict[str, Value]:
    """Mean and max per-step residual of the shared step; ``unavailable`` for a method that
    regenerates with its own sampler (EDICT, edit-friendly, RF-Solver, ...): the shared step's
    residual says nothing about its inversion."""
    if result.sampler is not None:
        why = Unavailable("the method regenerates with its own sampler: the shared step's residual does not apply")
        return {"residual_rms_mean": why, "residual_rms_max": why}
    return {"residual_rms_mean": residuals.mean().item(), "residual_rms_max": residuals.max().item()}


def _network_times(denoiser: Any, batch: Batch, device: torch.device) -> NetworkTimes:
    """The bare network's forward and backward seconds on this run's first batch of this size, at
    the middle level of its grid (a backward that cannot run, e.g. out of memory, is left out
    with why)."""
    level = batch.grid.levels[len(batch.grid.levels) // 2]
    try:
        return bare_network_times(denoiser, batch.latent, level, batch.cond, device, backward=True)
    except (RuntimeError, torch.OutOfMemoryError) as err:
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("bare network backward could not be timed: %s", why)
        forward = bare_network_times(denoiser, batch.latent, level, batch.cond, device).forward_s
        return NetworkTimes(forward, None, f"backward failed: {why}")


def _overhead(network: NetworkTimes, invert_s: float, nfe_forward: int, nfe_backward: int) -> dict[str, Value]:
    """The bare network's times and ``overhead_ratio_bare``, the inversion over them (a str: why
    missing): what an ideal loop around this network would cost, timed apart from the method."""
    if network.forward_s is None:
        why = Unavailable(network.reason)
        return {"time_network_call_s": why, "time_network_backward_s": why, "overhead_ratio_bare": why}
    missing = Unavailable(network.reason)
    out: dict[str, Value] = {"time_network_call_s": network.forward_s,
                             "time_network_backward_s": network.backward_s if network.backward_s is not None
                             else missing}
    if nfe_backward and network.backward_s is None:
        out["overhead_ratio_bare"] = missing
    else:
        network_s = nfe_forward * network.forward_s + nfe_backward * (network.backward_s or 0.0)
        out["overhead_ratio_bare"] = invert_s / network_s if network_s > 0 else "no network evaluation"
    return out


def _in_run_values(timed: TimedInversion, batch_size: int) -> dict[str, Value]:
    """The in-run network rows (seconds per image, as ``time_invert_s``); the ratio and share are
    unavailable where no network time was recorded or a backward pass could not be timed."""
    in_run = timed.in_run
    out: dict[str, Value] = {"time_network_forward_in_run_s": in_run.forward_s / batch_size,
                             "time_network_backward_in_run_s": in_run.backward_s / batch_size,
                             "overhead_ratio": in_run.overhead_ratio,  # type: ignore[dict-item]
                             "non_network_share": in_run.non_network_share}  # type: ignore[dict-item]
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


def evaluate(
    adapter: AdapterSource,
    schedule: Any,
    inverter: Inverter,
    inverter_name: str,
    dataset: Sequence[Entry],
    metrics: MetricsSource,
    settings: RunSettings | None = None,
    *,
    shard: Any = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
    **fields: Any,
) -> pd.DataFrame:
    """The keyword form of ``eval.tasks.run(settings, ...)`` for reconstruction: ``schedule`` and
    ``inverter_name`` (and ``fields``: ``model_name``, ``out_dir``, ``warmup``, ...) build the
    settings when ``settings`` is None. ``adapter`` and ``metrics`` may be zero-argument factories,
    called only when an image is left to compute. The tidy table (:data:`eval.records.COLUMNS`)."""
    from eval.tasks import run

    settings = settings if settings is not None else settings_from_kwargs(schedule, inverter_name, **fields)
    return run(settings, adapter, inverter, dataset, metrics=metrics, shard=shard, on_rows=on_rows)
