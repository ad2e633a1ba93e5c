"""The benchmark loops beyond reconstruction: editing, interpolation and the exact track -> the tidy table.

Plain arguments only (run.py builds them from ``task=edit|interpolate|exact``). Rows follow
:mod:`eval.records` (one per run x item x metric, statuses ok / failed / skipped / unavailable);
a failure never stops a sweep, rows are appended to ``<out_dir>/results.csv`` as each item
finishes, and ``provenance.json`` is written first.

**Editing** (:func:`evaluate_edits`), per :class:`~eval.edit_data.EditEntry`, batch size 1:
invert the source (fitted to the model's size) with the source caption at the run's guidance,
reconstruct it, then edit with the target caption: ``editor="prompt_swap"``
(:func:`gnri.edit.prompt_swap`, GNRI's editing: negative ``""``, ``edit_guidance_scale``, None =
the inversion's), ``"p2p"`` (:func:`gnri.edit.p2p_edit`, both branches at the edit guidance) or
``"v_inject"`` (:func:`gnri.edit.v_injection.injected_edit`, Flux only: RF-Edit's / FireFlow's
value injection, source pass and target pass at the edit guidance, both counted in the edit's NFE).
The ``inverter`` column is ``<inverter>+<editor>`` (PIE-Bench's ``ddim+p2p`` naming) and
``caption`` is ``"<source caption> -> <target caption>"``. Metrics (:data:`EDIT_METRICS`), on
[0, 1] pixels at the model's size, edit vs source unless said otherwise:

- ``edit_success``: 1 if :func:`eval.world.checker.check` reads the target caption in the edit,
  else 0; ``recon_success``: the same for the reconstruction and the source caption (world
  captions only; unavailable otherwise);
- ``bg_psnr``, ``bg_ssim``, ``bg_lpips``, ``bg_mse``: background preservation over the pixels
  outside the edited region (:mod:`eval.metrics.masked`; ``task.mask_convention``: ``region``
  (default) reduces over the region's pixels only; ``piebench`` reproduces PnPInversion's
  evaluator: 8-bit images times the mask, reduced over the whole image; LPIPS ``task.lpips_net``).
  A region that is empty (the edited mask covers the whole image) gives status ``unavailable``
  (PIE-Bench's ``nan``): left out of the means and counted in the report's notes;
- ``lpips_to_source``: whole-image LPIPS (AlexNet), the paper's editing-figure x axis;
- ``clip_whole`` / ``clip_edited``: CLIP score of the edit / of its edited region (pixels outside
  set to 0, as PIE-Bench) against the target caption, with the given CLIP metric (the world's
  CLIP folder by default in run.py), unavailable with the reason without weights (``piebench``:
  the edit made 8-bit first; PIE-Bench's model is CLIP ViT-L/14);
- ``structure_distance``: PIE-Bench's DINO ViT-B/8 key self-similarity distance of the edit to
  the source (:mod:`eval.metrics.structure`; ``task.structure.weights``), unavailable with the
  reason without local DINO weights;
- ``target_psnr``: edit vs the ground-truth target image (world only); ``recon_psnr``: the
  reconstruction vs the source;
- ``nfe_forward`` / ``time_invert_s``: one inversion; ``nfe_forward_edit`` / ``time_edit_s``: one
  edit (a P2P pass runs the source/target pair as one batch and counts once).

**Interpolation** (:func:`evaluate_interpolation`): consecutive dataset entries form pairs
(0-1, 2-3, ...); both are inverted, their states slerped (:mod:`gnri.edit.interpolate`) at
``num_points`` evenly spaced weights and regenerated. ``interp_lpips_step_mean`` /
``interp_lpips_step_max``: LPIPS between neighbouring images (smoothness; unavailable without
LPIPS weights), ``interp_rms_step_max``: the largest neighbour RMS pixel step,
``interp_psnr_start`` / ``interp_psnr_end``: the path's ends vs the source images (fidelity).

**Exact track** (:func:`evaluate_exact`): :func:`eval.exact_track.run_exact_track` once per
dataset caption, with known noise seeded ``seed + index``; rows ``exact_noise_nmse``,
``exact_latent_nmse``, ``exact_image_nmse``, ``exact_image_psnr``.
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
from eval.edit_data import EditEntry, fit_mask
from eval.distributed import Shard
from eval.finite import check_finite, checked_result
from eval.cache import TensorCache
from eval.harness import BrokenAdapter, RefusedAdapter, cached_conditioning, cached_image, image_cache_key, is_adapter
from eval.loop import Rows, run_units
from eval.metrics.base import ImageMetric
from eval.metrics.masked import (
    MaskedLPIPS, MaskedSSIM, masked_mse, masked_psnr, pie_lpips, pie_mse, pie_psnr, pie_ssim, region_image, to_8bit,
)
from eval.metrics.structure import StructureDistance
from eval.metrics.psnr import psnr
from eval.records import RunInfo, Unavailable, new_run_id, provenance, write_provenance
from eval.settings import RunSettings, settings_from_kwargs
from eval.units import Unit, plan_units
from eval.validate import task_refusal
from eval.timing import time_call
from gnri.core import CountingDenoiser, InversionResult, Tensor, reconstruct
from gnri.edit.edit import edit_conditioning, prompt_swap
from gnri.edit.interpolate import interpolate, interpolation_weights
from gnri.edit.p2p import p2p_edit
from gnri.images import fit_to_size, load_image
from gnri.models.base import ModelAdapter, ScheduleSpec

log = logging.getLogger(__name__)
Inverter = Callable[..., InversionResult]
EDITORS = ("prompt_swap", "p2p", "v_inject")
MASK_CONVENTIONS = ("region", "piebench")  # eval.metrics.masked: over the region / PnPInversion's evaluator
STRUCTURE_REASON = "no structure-distance metric configured (eval.metrics.structure.StructureDistance)"
# name -> higher_is_better (documented in the module docstring).
EDIT_METRICS = {
    "edit_success": True, "recon_success": True, "bg_psnr": True, "bg_ssim": True, "bg_lpips": False,
    "bg_mse": False, "lpips_to_source": False, "clip_whole": True, "clip_edited": True,
    "structure_distance": False, "target_psnr": True, "recon_psnr": True, "nfe_forward": False,
    "nfe_forward_edit": False, "time_invert_s": False, "time_edit_s": False,
}
INTERP_METRICS = {
    "interp_lpips_step_mean": False, "interp_lpips_step_max": False, "interp_rms_step_max": False,
    "interp_psnr_start": True, "interp_psnr_end": True,
}
EXACT_METRICS = {"exact_noise_nmse": False, "exact_latent_nmse": False, "exact_image_nmse": False,
                 "exact_image_psnr": True}


class Skip(Exception):
    """The item or method does not apply: its rows get status ``skipped`` with this reason."""


Value = float | str | Unavailable  # a number, a failure reason, or unavailable


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@dataclass
class _Task:
    """Per-run state of one of these loops: the model is built on first use (so a resumed,
    finished run loads nothing), a blank-image probe gives steps/device/dtype or a set-up error
    (every unit fails with it), and :meth:`rows` turns one unit's values into its rows."""

    settings: RunSettings
    adapter_source: Any
    label: str  # the inverter column
    metrics: Mapping[str, bool]
    params: Mapping[str, Any]  # the provenance's inverter_params
    shard: Shard
    adapter: Any = None
    info: RunInfo | None = None
    error: str | None = None

    def setup(self) -> None:
        if self.info is not None:
            return
        s = self.settings
        source = self.adapter_source
        self.adapter = source if is_adapter(source) else source()
        steps, device, dtype = 0, "unknown", "unknown"
        try:
            blank = torch.zeros(1, 3, *self.adapter.image_size())
            with torch.no_grad():
                latent = self.adapter.encode_images(blank)
                steps = self.adapter.grid(s.schedule, tuple(latent.shape)).num_steps
            device = str(getattr(self.adapter, "device", latent.device))
            dtype = str(getattr(self.adapter, "dtype", latent.dtype)).removeprefix("torch.")
        except Exception as err:  # noqa: BLE001 - recorded on every row
            cause = err.__cause__ or err
            self.error = f"setup {type(cause).__name__}: {_one_line(cause)}"
            if isinstance(self.adapter, BrokenAdapter):  # run.py's stand-in for a model that could not be built
                self.error = _one_line(err)
        self.info = RunInfo(
            run_id=s.run_id or new_run_id(), model=s.model or self.adapter.name, schedule=s.schedule_name or s.schedule.kind,
            inverter=self.label, adapter=self.adapter.name, num_steps=steps, guidance_scale=s.guidance_scale, seed=s.seed,
            provenance=provenance(device, dtype, self.params, asdict(s.schedule), s.config),
            checkpoint=s.checkpoint.label if s.checkpoint is not None else "", true_cfg_scale=s.true_cfg_scale,
        )
        if s.out_dir is not None and self.shard.is_main:
            Path(s.out_dir).mkdir(parents=True, exist_ok=True)
            write_provenance(Path(s.out_dir), self.info)

    def make_rows(self, unit: Unit, values: Mapping[str, Value], status: str = "ok", reason: str = "") -> list[dict[str, Any]]:
        info = self.info if self.info is not None else self.settings.fallback_info(self.label, self.params)
        rows = []
        for name, higher in self.metrics.items():
            st, why, value = status, reason, math.nan
            if status == "ok":
                v = values.get(name, Unavailable("not computed for this item"))
                if isinstance(v, Unavailable):
                    st, why = "unavailable", v.reason
                elif isinstance(v, str):
                    st, why = "failed", v
                else:
                    value = float(v)
            rows.append(info.row(unit.item, unit.caption, name, value, st, why, higher, unit.key))
        return rows

    def rows(self, unit: Unit, measure: Callable[[], Mapping[str, Value]]) -> list[dict[str, Any]]:
        """Rows for one unit; every exception but KeyboardInterrupt becomes rows."""
        try:
            self.setup()
            if self.error is not None:
                status = "skipped" if isinstance(self.adapter, RefusedAdapter) else "failed"
                return self.make_rows(unit, {}, status, self.error)
            return self.make_rows(unit, measure())
        except Skip as err:
            return self.make_rows(unit, {}, "skipped", str(err))
        except Exception as err:  # noqa: BLE001 - a sweep must survive any one item
            log.exception("item %s failed", unit.item)
            return self.make_rows(unit, {}, "failed", f"{type(err).__name__}: {_one_line(err)}")

    def run(self, dataset: Sequence[Entry], measure: Callable[[Unit], Mapping[str, Value]], desc: str,
            on_rows: Callable[[pd.DataFrame], None] | None) -> pd.DataFrame:
        """Drive the plan (:func:`eval.loop.run_units`: resume, shards, one results.csv)."""
        units = plan_units(self.settings, dataset)

        def measure_units(batch: Sequence[Unit]) -> list[Rows]:
            return [self.rows(unit, functools.partial(measure, unit)) for unit in batch]

        return run_units(self.settings, units, len(self.metrics), measure_units, shard=self.shard, on_rows=on_rows,
                         desc=desc)


def _source(adapter: ModelAdapter, entry: Entry) -> Tensor:
    if entry.problem is not None:
        raise Skip(entry.problem)
    try:
        return fit_to_size(load_image(entry.path), adapter.image_size())[None]  # type: ignore[arg-type]
    except (OSError, ValueError) as err:
        raise Skip(f"cannot read image {entry.image_id}: {_one_line(err)}") from None


def _invert(inverter: Inverter, denoiser: Any, latent: Tensor, grid: Any, cond: Any) -> InversionResult:
    try:
        with torch.no_grad():
            result = checked_result(inverter(denoiser, latent, grid, cond))
    except ValueError as err:
        raise Skip(f"does not apply: {_one_line(err)}") from None
    if not bool(torch.isfinite(result.z).all()):
        raise RuntimeError("diverged: non-finite latent after inversion")
    return result


def _metric(fn: Callable[[], Tensor], unavailable: str | None = None) -> Value:
    """``fn()``'s single value, ``Unavailable(unavailable)`` when given, or the failure reason."""
    if unavailable is not None:
        return Unavailable(unavailable)
    try:
        with torch.no_grad():
            return float(fn().reshape(-1)[0].item())
    except Exception as err:  # noqa: BLE001 - one metric never sinks the rest
        return f"{type(err).__name__}: {_one_line(err)}"


@dataclass
class _Metrics:
    """The metric objects an edit run shares (built once; LPIPS loads its weights lazily)."""

    lpips: Any
    masked_lpips: MaskedLPIPS
    clip: ImageMetric | None
    ssim: MaskedSSIM = field(default_factory=MaskedSSIM)
    structure: StructureDistance | None = None
    convention: str = "region"  # MASK_CONVENTIONS


def _checker(image: Tensor, caption: str) -> Value:
    try:
        from eval.world.checker import check
        from eval.world.grammar import parse
    except ImportError as err:
        return Unavailable(f"the embedded world (eval.world) is not importable: {_one_line(err)}")
    try:
        parse(caption)
    except ValueError:
        return Unavailable("the caption is not of the embedded world's grammar; the checker reads world scenes only")
    return float(check(image[0].float().cpu(), caption).ok)


def _background(m: _Metrics, edit: Tensor, source: Tensor, entry: EditEntry, size: tuple[int, int]) -> dict[str, Value]:
    names = ("bg_psnr", "bg_ssim", "bg_lpips", "bg_mse")
    if entry.mask is None:
        return {n: Unavailable("no edited-region mask for this pair") for n in names}
    keep = ~fit_mask(entry.mask(), size).to(edit.device)
    if not bool(keep.any()):
        return {n: Unavailable("the edited region covers the whole image") for n in names}
    if m.convention == "piebench":  # PnPInversion's evaluator: 8-bit images x mask, whole-image means
        return {
            "bg_psnr": _metric(lambda: pie_psnr(edit, source, keep)),
            "bg_mse": _metric(lambda: pie_mse(edit, source, keep)),
            "bg_ssim": _metric(lambda: pie_ssim(edit, source, keep)),
            "bg_lpips": _metric(lambda: pie_lpips(m.lpips, edit, source, keep), m.lpips.unavailable_reason()),
        }
    return {
        "bg_psnr": _metric(lambda: masked_psnr(edit, source, keep)),
        "bg_mse": _metric(lambda: masked_mse(edit, source, keep)),
        "bg_ssim": _metric(lambda: m.ssim(edit, source, keep)),
        "bg_lpips": _metric(lambda: m.masked_lpips(edit, source, keep), m.masked_lpips.unavailable_reason()),
    }


def _clip(m: _Metrics, edit: Tensor, entry: EditEntry, size: tuple[int, int]) -> dict[str, Value]:
    clip, prompt = m.clip, [entry.target_caption or ""]
    edit = to_8bit(edit) if m.convention == "piebench" else edit
    reason = "no CLIP metric configured" if clip is None else clip.unavailable_reason()
    out: dict[str, Value] = {"clip_whole": _metric(lambda: clip(edit, edit, prompt), reason)}  # type: ignore[misc]
    if entry.mask is None:
        out["clip_edited"] = Unavailable("no edited-region mask for this pair")
    else:
        region = fit_mask(entry.mask(), size).to(edit.device)
        masked = region_image(edit, region)
        out["clip_edited"] = _metric(lambda: clip(masked, edit, prompt), reason)  # type: ignore[misc]
    return out


def _structure(m: _Metrics, edit: Tensor, source: Tensor) -> Value:
    if m.structure is None:
        return Unavailable(STRUCTURE_REASON)
    return _metric(lambda: m.structure(edit, source), m.structure.unavailable_reason())  # type: ignore[misc]


@dataclass
class EditSettings:
    """How edits are made: the editor, its guidance and negative prompt, Prompt-to-Prompt's options."""

    editor: str = "prompt_swap"
    guidance_scale: float | None = None  # None: the inversion's guidance scale
    negative_prompt: str = ""
    p2p: dict[str, Any] = field(default_factory=dict)  # gnri.edit.p2p_edit keyword arguments
    v_inject: dict[str, Any] = field(default_factory=dict)  # gnri.edit.v_injection.injected_edit keyword arguments

    def __post_init__(self) -> None:
        if self.editor not in EDITORS:
            raise ValueError(f"task.editor must be one of {EDITORS}, got {self.editor!r}")


def _edit(adapter: Any, settings: EditSettings, counting: Any, result: InversionResult, grid: Any,
          entry: EditEntry, scale: float, true_cfg_scale: float = 1.0) -> Tensor:
    if settings.editor == "p2p":
        try:
            _, target = p2p_edit(
                adapter, result, grid, [entry.caption or ""], [entry.target_caption or ""], scale,
                settings.negative_prompt, denoiser=counting, **settings.p2p,
            )
        except ValueError as err:
            raise Skip(f"does not apply: {_one_line(err)}") from None
        return target
    if settings.editor == "v_inject":  # RF-Edit / FireFlow: source values in Flux's single blocks
        from gnri.edit.v_injection import injected_edit

        source, target_cond = (edit_conditioning(adapter, [c or ""], scale, settings.negative_prompt, true_cfg_scale)
                               for c in (entry.caption, entry.target_caption))
        try:
            return injected_edit(adapter, result, grid, source, target_cond, denoiser=counting, **settings.v_inject)
        except ValueError as err:
            raise Skip(f"does not apply: {_one_line(err)}") from None
    cond = edit_conditioning(adapter, [entry.target_caption or ""], scale, settings.negative_prompt, true_cfg_scale)
    return prompt_swap(counting, result, grid, cond)


@dataclass
class _EditRun:
    """Per-run state of :func:`evaluate_edits` (the adapter comes from the task, built lazily)."""

    task: _Task
    inverter: Inverter
    settings: EditSettings
    metrics: _Metrics
    save_images: bool
    warmed: bool = False

    @property
    def adapter(self) -> Any:
        return self.task.adapter

    @property
    def schedule(self) -> ScheduleSpec:
        return self.task.settings.schedule

    @property
    def guidance_scale(self) -> float:
        return self.task.settings.guidance_scale

    @property
    def seed(self) -> int:
        return self.task.settings.seed

    @property
    def warmup(self) -> int:
        return self.task.settings.warmup

    @property
    def image_dir(self) -> Path | None:
        out = self.task.settings.out_dir
        return Path(out) if out is not None and self.save_images else None

    def measure(self, entry: Entry) -> dict[str, Value]:
        """Every metric value of one edit pair (a str value is that metric's failure reason)."""
        if not isinstance(entry, EditEntry) or not entry.target_caption:
            raise Skip(f"{entry.image_id} is not an edit pair (dataset=world_edits or dataset=piebench)")
        torch.manual_seed(self.seed)
        adapter, size = self.adapter, self.adapter.image_size()
        if entry.problem is not None:
            raise Skip(entry.problem)
        cache, settings = TensorCache(self.task.settings.cache_dir), self.task.settings
        try:  # the source's fitted pixels, latent and prompt embeddings: shared with every job of the sweep
            source, latent, _ = cached_image(cache, image_cache_key(settings, adapter, entry), adapter, entry)
        except (OSError, ValueError) as err:
            raise Skip(f"cannot read image {entry.image_id}: {_one_line(err)}") from None
        cond = cached_conditioning(cache, settings, adapter, entry.caption or "")
        with torch.no_grad():
            grid = adapter.grid(self.schedule, tuple(latent.shape))
        source = source.to(latent.device)
        counting = CountingDenoiser(adapter.denoiser())
        scale = self.guidance_scale if self.settings.guidance_scale is None else self.settings.guidance_scale

        def invert() -> InversionResult:
            return _invert(self.inverter, counting, latent, grid, cond)

        if not self.warmed:
            for _ in range(self.warmup):
                with torch.no_grad():
                    _edit(adapter, self.settings, counting, invert(), grid, entry, scale, self.task.settings.true_cfg_scale)
            self.warmed = True
        counting.counter.reset()
        inverted = time_call(invert, latent.device)
        result: InversionResult = inverted.value  # type: ignore[assignment]
        nfe = counting.counter.forward
        with torch.no_grad():
            recon = check_finite(adapter.decode_latents(reconstruct(adapter.denoiser(), result, grid, cond)),
                                 "reconstructed image")
            counting.counter.reset()
            edited = time_call(lambda: _edit(adapter, self.settings, counting, result, grid, entry, scale,
                                                  self.task.settings.true_cfg_scale),
                               latent.device)
            if not bool(torch.isfinite(edited.value).all()):  # type: ignore[arg-type]
                raise RuntimeError("diverged: non-finite latent after editing")
            edit = check_finite(adapter.decode_latents(edited.value), "edited image")
        if self.image_dir is not None:
            from eval.report.edit_plots import save_edit_images

            save_edit_images(self.image_dir, entry.image_id, source, recon, edit)
        m = self.metrics
        values: dict[str, Value] = {
            "nfe_forward": nfe, "nfe_forward_edit": counting.counter.forward, "time_invert_s": inverted.median_s,
            "time_edit_s": edited.median_s, "recon_psnr": psnr(recon, source)[0].item(),
            "edit_success": _checker(edit, entry.target_caption), "recon_success": _checker(recon, entry.caption or ""),
            "lpips_to_source": _metric(lambda: m.lpips(edit, source), m.lpips.unavailable_reason()),
            "structure_distance": _structure(m, edit, source),
            **_background(m, edit, source, entry, size), **_clip(m, edit, entry, size),
        }
        if entry.target_path is None:
            values["target_psnr"] = Unavailable("no ground-truth target image (the embedded world has them)")
        else:
            target = fit_to_size(load_image(entry.target_path), size)[None].to(edit.device)
            values["target_psnr"] = psnr(edit, target)[0].item()
        return values


def _run_settings(run: RunSettings | None, schedule: ScheduleSpec, inverter_name: str, task: str,
                  task_params: Mapping[str, Any], fields: Mapping[str, Any]) -> RunSettings:
    """The given RunSettings, or one built from the legacy keyword fields, for ``task``."""
    if run is None:
        run = settings_from_kwargs(schedule, inverter_name, **fields)
    return run.with_(task=task, task_params={**dict(task_params), **dict(run.task_params)})


def evaluate_edits(
    adapter: Any,
    schedule: ScheduleSpec,
    inverter: Inverter,
    inverter_name: str,
    dataset: Sequence[Entry],
    settings: EditSettings | None = None,
    *,
    clip: ImageMetric | None = None,
    lpips_net: str = "alex",
    lpips_cache: str | None = None,
    save_images: bool = True,
    run: RunSettings | None = None,
    shard: Shard | None = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
    **fields: Any,
) -> pd.DataFrame:
    """Invert each edit pair's source, edit it, and score it; the tidy table (:data:`EDIT_METRICS`).

    ``adapter`` may be a zero-argument factory (built only when a pair is left to compute);
    ``run`` is the :class:`~eval.settings.RunSettings` (or ``fields`` its legacy keywords:
    ``model_name``, ``out_dir``, ``warmup``, ...). ``warmup`` untimed inversions + edits precede
    the first timed pair; with ``out_dir`` and ``save_images`` each pair's source,
    reconstruction and edit are kept as PNGs there.
    """
    from eval.metrics.lpips_metric import LPIPS

    settings = settings or EditSettings()
    options = {"editor": settings.editor, "edit_guidance_scale": settings.guidance_scale,
               "negative_prompt": settings.negative_prompt, "lpips_net": lpips_net}
    if settings.editor == "p2p":
        options["p2p"] = settings.p2p
    if settings.editor == "v_inject":
        options["v_inject"] = settings.v_inject
    run_settings = _run_settings(run, schedule, inverter_name, "edit", options, fields)
    params = {**dict(run_settings.inverter_params), **{k: v for k, v in options.items() if k != "lpips_net"}}
    task = _Task(run_settings, adapter, f"{run_settings.inverter}+{settings.editor}", EDIT_METRICS, params,
                 shard or Shard())
    convention = str(run_settings.task_params.get("mask_convention", "region"))
    if convention not in MASK_CONVENTIONS:
        raise ValueError(f"task.mask_convention must be one of {MASK_CONVENTIONS}, got {convention!r}")
    structure = StructureDistance(**dict(run_settings.task_params.get("structure") or {}))
    metrics = _Metrics(LPIPS(net=lpips_net, cache_dir=lpips_cache), MaskedLPIPS(lpips_net, lpips_cache), clip,
                       structure=structure, convention=convention)
    edit_run = _EditRun(task, inverter, settings, metrics, save_images)
    return task.run(dataset, lambda u: edit_run.measure(u.entries[0]), f"edit {task.label}", on_rows)


def _refuse(inverter: Inverter, task: str) -> None:
    """Skip an inverter whose function names the tasks it runs for, and not this one (FlowEdit)."""
    refusal = task_refusal(inverter, task)
    if refusal is not None:
        raise Skip(refusal)


def _measure_interp(task: _Task, inverter: Inverter, a: Entry, b: Entry, lpips: Any, num_points: int) -> dict[str, Value]:
    _refuse(inverter, "interpolate")
    adapter, schedule = task.adapter, task.settings.schedule
    guidance_scale, seed = task.settings.guidance_scale, task.settings.seed
    torch.manual_seed(seed)
    images = torch.cat([_source(adapter, a), _source(adapter, b)])
    with torch.no_grad():
        latents = adapter.encode_images(images)
        grid = adapter.grid(schedule, tuple(latents[:1].shape))
        conds = [adapter.encode_prompts([e.caption or ""], **task.settings.guidance_options()) for e in (a, b)]
    denoiser = adapter.denoiser()
    results = [_invert(inverter, denoiser, latents[i:i + 1], grid, conds[i]) for i in range(2)]
    with torch.no_grad():
        weights = interpolation_weights(num_points)
        path = interpolate(denoiser, results[0], results[1], grid, conds[0], conds[1], weights)
        frames = check_finite(torch.cat([adapter.decode_latents(z) for z in path]), "interpolated images")
    images = images.to(frames.device)
    rms = (frames[1:] - frames[:-1]).flatten(1).pow(2).mean(1).sqrt()
    values: dict[str, Value] = {
        "interp_rms_step_max": rms.max().item(),
        "interp_psnr_start": psnr(frames[:1], images[:1])[0].item(),
        "interp_psnr_end": psnr(frames[-1:], images[1:])[0].item(),
    }
    reason = lpips.unavailable_reason()
    if reason is not None:
        return {**values, "interp_lpips_step_mean": Unavailable(reason), "interp_lpips_step_max": Unavailable(reason)}
    with torch.no_grad():
        steps = lpips(frames[1:], frames[:-1])
    return {**values, "interp_lpips_step_mean": steps.mean().item(), "interp_lpips_step_max": steps.max().item()}


def evaluate_interpolation(
    adapter: Any,
    schedule: ScheduleSpec,
    inverter: Inverter,
    inverter_name: str,
    dataset: Sequence[Entry],
    *,
    num_points: int = 7,
    lpips_net: str = "alex",
    lpips_cache: str | None = None,
    run: RunSettings | None = None,
    shard: Shard | None = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
    **fields: Any,
) -> pd.DataFrame:
    """Slerp paths between consecutive pairs of entries (``max_images`` entries at most); :data:`INTERP_METRICS`."""
    from eval.metrics.lpips_metric import LPIPS

    run_settings = _run_settings(run, schedule, inverter_name, "interpolate",
                                 {"num_points": num_points, "lpips_net": lpips_net}, fields)
    params = {**dict(run_settings.inverter_params), "num_points": num_points}
    task = _Task(run_settings, adapter, run_settings.inverter, INTERP_METRICS, params, shard or Shard())
    lpips = LPIPS(net=lpips_net, cache_dir=lpips_cache)
    return task.run(dataset, lambda u: _measure_interp(task, inverter, u.entries[0], u.entries[1], lpips, num_points),
                    f"interpolate {run_settings.inverter}", on_rows)


def evaluate_exact(
    adapter: Any,
    schedule: ScheduleSpec,
    inverter: Inverter,
    inverter_name: str,
    dataset: Sequence[Entry],
    *,
    vae_roundtrip: bool = False,
    run: RunSettings | None = None,
    shard: Shard | None = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
    **fields: Any,
) -> pd.DataFrame:
    """The exact track per dataset caption (images are not used); :data:`EXACT_METRICS`."""
    from eval.exact_track import run_exact_track

    run_settings = _run_settings(run, schedule, inverter_name, "exact", {"vae_roundtrip": vae_roundtrip}, fields)
    params = {**dict(run_settings.inverter_params), "vae_roundtrip": vae_roundtrip}
    task = _Task(run_settings, adapter, run_settings.inverter, EXACT_METRICS, params, shard or Shard())

    def measure(unit: Unit) -> dict[str, Value]:
        _refuse(inverter, "exact")
        entry = unit.entries[0]
        if not entry.caption:
            raise Skip(entry.problem or f"missing caption for {entry.image_id}")
        s = task.settings
        try:
            out = run_exact_track(task.adapter, inverter, s.schedule, [entry.caption], s.seed + unit.index,
                                  s.guidance_scale, vae_roundtrip, true_cfg_scale=s.true_cfg_scale)
        except ValueError as err:
            raise Skip(f"does not apply: {_one_line(err)}") from None
        return {name: float(v[0].item()) for name, v in out.values().items()}

    return task.run(dataset, measure, f"exact {run_settings.inverter}", on_rows)
