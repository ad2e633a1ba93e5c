"""Editing: invert each edit pair's source, reconstruct it, edit it with the target caption, score it.

Per :class:`~eval.edit_data.EditEntry`, batch size 1, on the frame of :mod:`eval.task`: the
source (fitted to the model's size, latent and prompt embeddings from the shared cache) is
inverted with the source caption at the run's guidance (:func:`eval.timed.timed_inversion`),
reconstructed, then edited with the target caption by ``task.editor``:

- ``prompt_swap`` (:func:`gnri.edit.prompt_swap`, GNRI's editing: negative ``""``,
  ``task.edit_guidance_scale``, null = the inversion's);
- ``p2p`` (:func:`gnri.edit.p2p_edit`, Prompt-to-Prompt; both branches at the edit guidance);
- ``v_inject`` (:func:`gnri.edit.v_injection.injected_edit`, Flux only: RF-Edit's / FireFlow's
  value injection; source pass and target pass both counted in the edit's NFE).

The ``inverter`` column is ``<inverter>+<editor>`` (PIE-Bench's ``ddim+p2p`` naming) and
``caption`` is ``"<source caption> -> <target caption>"``. The rows: the edit metrics of
:func:`eval.metrics.edit.build_edit_metrics` (edit success, background preservation under
``task.mask_convention``, CLIP of the whole edit and of its edited region, structure distance,
LPIPS to the source, target and reconstruction PSNR; :mod:`eval.metrics.edit` documents each),
and ``nfe_forward`` / ``time_invert_s`` (one inversion), ``nfe_forward_edit`` / ``time_edit_s``
(one edit; a P2P pass runs the source/target pair as one batch and counts once). With
``task.save_images`` each pair's source, reconstruction and edit are kept as PNGs in the run folder,
8-bit by truncation (:func:`eval.metrics.masked.to_uint8`): exactly the images the ``piebench``
metrics score. Each source's inversion is cached per inverter (:mod:`eval.cache`, ``inversion``):
every editor of a sweep edits the same inversion, timed once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import pandas as pd
import torch

from eval.data import Entry
from eval.edit_data import EditEntry, fit_mask
from eval.finite import check_finite, diverged_reason
from eval.metrics.base import Metric, Sample
from eval.metrics.diagnostics import EDIT_METRIC_ORDER, directions
from eval.metrics.edit import build_edit_metrics
from eval.metrics.scoring import score
from eval.cache import result_from_tensors, result_to_tensors
from eval.prepare import cached_conditioning, cached_image, image_cache_key, inversion_cache_key
from eval.settings import RunSettings, settings_for_task
from eval.task import AdapterSource, Fail, Skip, TaskRun, Value, one_line
from eval.timed import invert_once, timed_inversion, warm_up
from eval.timing import time_call
from eval.units import Unit
from gnri.core import CountingDenoiser, InversionResult, Tensor, reconstruct
from gnri.edit.edit import edit_conditioning, prompt_swap
from gnri.edit.p2p import p2p_edit
from gnri.images import fit_to_size, load_image
from gnri.models.base import ModelAdapter

# Editors with the one editor contract, by name -> "module:function":
#   fn(adapter, result, grid, source_cond, target_cond, *, denoiser, x0, **options) -> the edited latent
# (source/target: the two captions' conditioning at the edit guidance; x0: the source's clean latent).
# prompt_swap, p2p and direct_inversion_p2p (PIE-Bench's "PnP Inversion": Direct Inversion with
# Prompt-to-Prompt, options task.p2p and task.direct_inversion) are written below (they take the captions).
CONTRACT_EDITORS = {
    "v_inject": "eval.tasks.edit:value_injection",
    "sdedit": "gnri.edit.sdedit:edit",
    "direct_inversion": "gnri.edit.direct_inversion:edit",
    "pnp": "gnri.edit.pnp:edit",
    "turboedit": "gnri.edit.turboedit:edit",
}
EDITORS = ("prompt_swap", "p2p", "direct_inversion_p2p", *CONTRACT_EDITORS)
FROM_OPTIONS = "from task.clip"  # Edit.create's default: build the CLIP metric from the task's options


@dataclass
class EditSettings:
    """How edits are made: the editor, its guidance and negative prompt, and the editor's own options
    (``p2p`` / ``v_inject`` by their historical fields, any other editor's in ``options``)."""

    editor: str = "prompt_swap"
    guidance_scale: float | None = None  # None: the inversion's guidance scale
    negative_prompt: str = ""
    p2p: dict[str, Any] = field(default_factory=dict)  # gnri.edit.p2p_edit keyword arguments
    v_inject: dict[str, Any] = field(default_factory=dict)  # gnri.edit.v_injection.injected_edit keyword arguments
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of any other editor

    def __post_init__(self) -> None:
        if self.editor not in EDITORS:
            raise ValueError(f"task.editor must be one of {EDITORS}, got {self.editor!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> EditSettings:
        """From the task config's keys (``editor``, ``edit_guidance_scale``, ``negative_prompt`` and
        the editor's own block, ``task.<editor>``)."""
        editor = options.get("editor", "prompt_swap")
        block = "direct_inversion" if editor == "direct_inversion_p2p" else editor
        own = {} if editor in ("prompt_swap", "p2p", "v_inject") else dict(options.get(block) or {})
        return cls(editor, options.get("edit_guidance_scale"), options.get("negative_prompt", ""),
                   dict(options.get("p2p") or {}), dict(options.get("v_inject") or {}), own)

    def editor_options(self) -> dict[str, Any]:
        """The chosen editor's keyword arguments."""
        return {"p2p": self.p2p, "v_inject": self.v_inject}.get(self.editor, self.options)

    def provenance(self) -> dict[str, Any]:
        """What enters the provenance (the editor's own options only where it is chosen)."""
        out: dict[str, Any] = {"editor": self.editor, "edit_guidance_scale": self.guidance_scale,
                               "negative_prompt": self.negative_prompt}
        if self.editor == "direct_inversion_p2p":
            out.update(p2p=self.p2p, direct_inversion=self.options)
        elif self.editor != "prompt_swap":
            out[self.editor] = self.editor_options()
        return out


def value_injection(adapter: ModelAdapter, result: InversionResult, grid: Any, source: Any, target: Any, *,
                    denoiser: Any, x0: Tensor, **options: Any) -> Tensor:
    """RF-Edit's / FireFlow's value injection (:func:`gnri.edit.v_injection.injected_edit`) under the editor contract."""
    from gnri.edit.v_injection import injected_edit

    return injected_edit(adapter, result, grid, source, target, denoiser=denoiser, **options)


def _contract_editor(name: str) -> Any:
    module, _, function = CONTRACT_EDITORS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def _direct_inversion_p2p(adapter: ModelAdapter, settings: EditSettings, counting: Any, result: InversionResult,
                          grid: Any, captions: tuple[str, str], source: Any, target: Any, x0: Tensor | None) -> Tensor:
    """Direct Inversion with Prompt-to-Prompt's attention control (``cure-lab/PnPInversion``'s
    ``directinversion+p2p``): :func:`gnri.edit.direct_inversion.edit` with a P2P controller."""
    from gnri.edit import direct_inversion
    from gnri.edit.p2p import make_controller

    controller = make_controller(adapter.prompt_tokenizer(), [captions[0]], [captions[1]], grid.num_steps,
                                 **settings.p2p)
    attention = direct_inversion.p2p_attention(adapter, grid, controller)
    return direct_inversion.edit(adapter, result, grid, source, target, denoiser=counting, x0=x0,
                                 attention=attention, **settings.options)


def make_edit(adapter: ModelAdapter, settings: EditSettings, counting: Any, result: InversionResult, grid: Any,
              entry: EditEntry, scale: float, true_cfg_scale: float = 1.0, x0: Tensor | None = None) -> Tensor:
    """The edited latent of one pair with the chosen editor (:class:`Skip` where it does not apply:
    the editor raised ValueError)."""
    captions = (entry.caption or "", entry.target_caption or "")
    try:
        if settings.editor == "p2p":
            return p2p_edit(adapter, result, grid, [captions[0]], [captions[1]], scale, settings.negative_prompt,
                            denoiser=counting, **settings.p2p)[1]
        if settings.editor in CONTRACT_EDITORS or settings.editor == "direct_inversion_p2p":
            source, target = (edit_conditioning(adapter, [c], scale, settings.negative_prompt, true_cfg_scale)
                              for c in captions)
            if settings.editor == "direct_inversion_p2p":
                return _direct_inversion_p2p(adapter, settings, counting, result, grid, captions, source, target, x0)
            return _contract_editor(settings.editor)(adapter, result, grid, source, target, denoiser=counting,
                                                     x0=x0, **settings.editor_options())
    except ValueError as err:
        raise Skip(f"does not apply: {one_line(err)}") from None
    cond = edit_conditioning(adapter, [captions[1]], scale, settings.negative_prompt, true_cfg_scale)
    return prompt_swap(counting, result, grid, cond)


@dataclass(frozen=True)
class CachedInversion:
    """A source's inversion with the seconds and forward NFE its timed call took."""

    result: InversionResult
    seconds: float
    nfe_forward: int


@dataclass
class Edit(TaskRun):
    """``task=edit`` (see the module docstring)."""

    name: ClassVar[str] = "edit"
    edit: EditSettings = field(default_factory=EditSettings)
    metrics: list[Metric] = field(default_factory=list)  # each checks its pair, then its own weights
    save_images: bool = True
    warmed: bool = False

    @classmethod
    def create(cls, settings: RunSettings, adapter: AdapterSource, inverter: Callable[..., Any], *, shard: Any,
               metrics: Any = (), clip: Any = FROM_OPTIONS, lpips_cache: str | None = None, save_images: bool | None = None,
               **resources: Any) -> Edit:
        options = settings.task_params
        edit = EditSettings.from_options(options)
        params = {**dict(settings.inverter_params), **edit.provenance()}
        built = build_edit_metrics(
            convention=str(options.get("mask_convention", "region")), lpips_net=options.get("lpips_net", "alex"),
            lpips_cache=lpips_cache, clip=_clip_options(options.get("clip")) if clip is FROM_OPTIONS else clip,
            structure=dict(options.get("structure") or {}), ssim_border_crop=int(options.get("ssim_border_crop", 0)),
        )
        keep = bool(options.get("save_images", True)) if save_images is None else save_images
        return cls(settings, adapter, f"{settings.inverter}+{edit.editor}", params, shard, inverter,
                   edit=edit, metrics=built, save_images=keep)

    def directions(self) -> Mapping[str, bool]:
        return directions(EDIT_METRIC_ORDER)

    def measure_one(self, unit: Unit) -> Mapping[str, Value]:
        """Every row value of one edit pair (a str value is that metric's failure reason)."""
        entry = unit.entries[0]
        if not isinstance(entry, EditEntry) or not entry.target_caption:
            raise Skip(f"{entry.image_id} is not an edit pair (dataset=world_edits or dataset=piebench)")
        s, adapter = self.settings, self.adapter
        torch.manual_seed(s.seed)
        if entry.problem is not None:
            raise Skip(entry.problem)
        try:  # the source's fitted pixels, latent and prompt embeddings: shared with every job of the sweep
            source, latent, _ = cached_image(self.cache, image_cache_key(s, adapter, entry), adapter, entry)
        except (OSError, ValueError) as err:
            raise Skip(f"cannot read image {entry.image_id}: {one_line(err)}") from None
        cond = cached_conditioning(self.cache, s, adapter, entry.caption or "")
        with torch.no_grad():
            grid = adapter.grid(s.schedule, tuple(latent.shape))
        source = source.to(latent.device)
        counting = CountingDenoiser(adapter.denoiser())
        scale = s.guidance_scale if self.edit.guidance_scale is None else self.edit.guidance_scale

        def edit_from(result: InversionResult) -> Tensor:
            return make_edit(adapter, self.edit, counting, result, grid, entry, scale, s.true_cfg_scale, latent)

        inverted = self.inversion(image_cache_key(s, adapter, entry), counting, latent, grid, cond, edit_from)
        result = inverted.result
        with torch.no_grad():
            recon = check_finite(adapter.decode_latents(reconstruct(adapter.denoiser(), result, grid, cond)),
                                 "reconstructed image")
            counting.counter.reset()
            edited = time_call(lambda: edit_from(result), latent.device)
            if not bool(torch.isfinite(edited.value).all()):  # type: ignore[arg-type]
                raise Fail(diverged_reason(edited.value, "editing") or "")  # type: ignore[arg-type]
            edit = check_finite(adapter.decode_latents(edited.value), "edited image")
        if self.save_images and s.out_dir is not None:
            from eval.report.edit_plots import save_edit_images

            save_edit_images(Path(s.out_dir), entry.image_id, source, recon, edit)
        values: dict[str, Value] = {"nfe_forward": inverted.nfe_forward, "nfe_forward_edit": counting.counter.forward,
                                    "time_invert_s": inverted.seconds, "time_edit_s": edited.median_s}
        return {**values, **score(self.metrics, self.sample(entry, source, recon, edit))}

    def inversion(self, image_key: dict[str, Any], counting: CountingDenoiser, latent: Tensor, grid: Any, cond: Any,
                  edit_from: Callable[[InversionResult], Tensor]) -> CachedInversion:
        """The source's inversion: from the sweep's cache (made by an earlier job of the same inverter,
        with the seconds and NFE measured then), or warmed up, timed and stored."""
        s = self.settings
        key = inversion_cache_key(s, image_key)
        hit = self.cache.get("inversion", key, latent.device)
        if hit is not None:
            tensors, meta = hit
            cached = result_from_tensors(tensors, meta["result"])
            if not self.warmed:
                with torch.no_grad():
                    warm_up(lambda: edit_from(cached), s.warmup)
                self.warmed = True
            return CachedInversion(cached, float(meta["seconds"]), int(meta["nfe_forward"]))
        if not self.warmed:
            with torch.no_grad():
                warm_up(lambda: edit_from(invert_once(self.inverter, counting, latent, grid, cond)), s.warmup)
            self.warmed = True
        timed = timed_inversion(self.inverter, counting, latent, grid, cond, device=latent.device)
        if not bool(torch.isfinite(timed.result.z).all()):
            raise Fail(diverged_reason(timed.result.z, "inversion") or "")
        stored = result_to_tensors(timed.result)
        if stored is not None:
            self.cache.put("inversion", key, stored[0], {"result": stored[1], "seconds": timed.seconds,
                                                         "nfe_forward": timed.nfe_forward})
        return CachedInversion(timed.result, timed.seconds, timed.nfe_forward)

    def sample(self, entry: EditEntry, source: Tensor, recon: Tensor, edit: Tensor) -> Sample:
        """What the edit metrics read: the edit against its source, region, target and reconstruction."""
        size = tuple(edit.shape[-2:])
        region = None if entry.mask is None else fit_mask(entry.mask(), size).to(edit.device)  # type: ignore[arg-type]
        target = None
        if entry.target_path is not None:
            target = fit_to_size(load_image(entry.target_path), size)[None].to(edit.device)  # type: ignore[arg-type]
        return Sample(edit, source, entry.target_caption or "", source_caption=entry.caption or "", region=region,
                      target=target, reconstruction=recon)


def _clip_options(clip: Mapping[str, Any] | None) -> dict[str, Any]:
    """The task's CLIP options with ``weights: auto`` made the embedded world's CLIP folder."""
    options = dict(clip or {})
    if options.get("weights") == "auto":
        from eval.world_data import world_dir

        options["weights"] = str(world_dir() / "clip")
    return options


def evaluate_edits(
    adapter: AdapterSource,
    schedule: Any,
    inverter: Callable[..., Any],
    inverter_name: str,
    dataset: Sequence[Entry],
    settings: EditSettings | None = None,
    *,
    clip: Any = None,
    lpips_net: str = "alex",
    lpips_cache: str | None = None,
    save_images: bool = True,
    run: RunSettings | None = None,
    shard: Any = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
    **fields: Any,
) -> pd.DataFrame:
    """The keyword form of ``eval.tasks.run`` for ``task=edit``: ``run`` (or ``fields``, its legacy
    keywords: ``model_name``, ``out_dir``, ``warmup``, ...) with ``settings``' options; ``clip`` a
    ready CLIP metric (None: its rows are unavailable, "no CLIP metric configured"). ``adapter`` may be a zero-argument factory."""
    from eval.tasks import run as run_task

    edit = settings or EditSettings()
    options = {**edit.provenance(), "lpips_net": lpips_net}
    run_settings = settings_for_task(run, schedule, inverter_name, "edit", options, fields)
    return run_task(run_settings, adapter, inverter, dataset, shard=shard, on_rows=on_rows,
                    clip=clip, lpips_cache=lpips_cache, save_images=save_images)

