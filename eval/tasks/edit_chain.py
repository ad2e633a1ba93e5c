"""Consecutive edits (GNRI's Fig. 1: one edit after another on the previous result), per chain.

A unit is a chain (:class:`eval.edit_chains.ChainEntry`: the source, its caption ``c0`` and the
captions ``c1 .. cK`` after each edit; a plain :class:`~eval.edit_data.EditEntry` is a chain of
one edit), batch size 1, on the frame of :mod:`eval.task`. Edits are made by ``task.editor``
exactly as ``task=edit`` makes them (:class:`eval.tasks.edit.EditSettings`,
:func:`eval.tasks.edit.make_edit`: ``prompt_swap`` by default, ``edit_guidance_scale`` null = the
inversion's guidance). ``task.mode``:

- ``reinvert`` (default; what a user of Fig. 1 does): step ``k`` inverts the previous step's
  result with the previous caption ``c(k-1)`` (step 1: the source, its latent from the shared
  cache), then edits it to ``ck``. Between steps the edit is decoded to pixels, clamped to
  [0, 1], rounded to 8 bits (``task.quantize``, default true: the result as a saved image) and
  encoded again;
- ``latent``: the source is inverted once, with ``c0``; step ``k`` edits that inverted state
  (the latent ``z`` and whatever the inverter keeps beside it: noise maps, per-step
  conditioning, EDICT's pair) to ``ck``, the editor's source prompt staying ``c0``. Nothing is
  decoded, encoded or inverted between steps. An edit does not change the inverted state, so
  "the previous edit's latent state" is the one inversion's, and step ``k`` is the one-shot edit
  ``c0 -> ck`` (world chain captions accumulate every earlier change).

Rows (a fixed set for ``task.max_steps = M``, default 5; a step past the chain's length is
``unavailable``, a chain longer than ``M`` is ``skipped``), for ``k = 1 .. M``:

- ``chain_edit_success_k``: the world checker (:class:`eval.metrics.edit.EditSuccess`) on step
  ``k``'s image and ``ck``;
- ``chain_bg_drift_psnr_k``: PSNR of step ``k``'s image against the ORIGINAL source over the
  pixels no edit of the whole chain touches (:class:`eval.metrics.edit.BgPSNR`, ``region``
  convention; the chain's union mask fitted to the model's size, :func:`eval.edit_data.fit_mask`);
  unavailable without masks or when the edits touch every pixel; ``+inf`` when identical there;
- ``chain_time_s_k``: cumulative seconds of inversion + edit up to step ``k``
  (:func:`eval.timed.timed_inversion`, :func:`eval.timing.time_call`; decoding and re-encoding
  between steps are not counted). ``latent``: one inversion plus ``k`` edits;

and per chain: ``chain_length``; ``chain_source_success`` (the checker on the source and
``c0``); ``chain_all_success`` (1 if every step succeeded); ``chain_final_success`` and
``chain_final_bg_drift_psnr`` (the chain's last step, whatever its length); ``chain_time_s``
(the whole chain) and ``chain_nfe_forward`` (network calls of all its inversions and edits).

The ``inverter`` column is ``<inverter>+<editor>`` (``+latent`` in latent mode) and ``caption``
is ``"c0 -> c1 -> ... -> cK"``. With ``task.save_images`` each chain's strip (source, then every
step) is kept as ``images/chains/<item>.png`` in the run folder.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import pandas as pd
import torch

from eval.data import Entry
from eval.edit_chains import chain_steps
from eval.edit_data import EditEntry, fit_mask
from eval.finite import check_finite, diverged_reason
from eval.metrics.base import Sample
from eval.metrics.edit import NO_MASK, BgPSNR, EditSuccess
from eval.metrics.scoring import score
from eval.prepare import cached_conditioning, cached_image, image_cache_key
from eval.records import Unavailable
from eval.settings import RunSettings
from eval.task import AdapterSource, Fail, Skip, TaskRun, Value, one_line
from eval.tasks.edit import EditSettings, make_edit
from eval.timed import invert_once, timed_inversion, warm_up
from eval.timing import time_call
from eval.units import Unit, plan_units
from gnri.core import CountingDenoiser, InversionResult, Tensor

MODES = ("reinvert", "latent")
STEP_METRICS = (("chain_edit_success", True), ("chain_bg_drift_psnr", True), ("chain_time_s", False))
CHAIN_METRICS = (("chain_length", True), ("chain_source_success", True), ("chain_all_success", True),
                 ("chain_final_success", True), ("chain_final_bg_drift_psnr", True), ("chain_time_s", False),
                 ("chain_nfe_forward", False))
NO_CHAIN_MASK = "no edited-region masks for this chain"
TAKES_X0 = "x0" in inspect.signature(make_edit).parameters  # editors that read the source's clean latent


def editor_provenance(edit: EditSettings) -> dict[str, Any]:
    """The editor's options as ``task=edit`` records them (``provenance()``; ``options()`` before it)."""
    record = getattr(edit, "provenance", None)
    return dict(record() if callable(record) else edit.options())  # type: ignore[operator]


def chain_directions(max_steps: int) -> dict[str, bool]:
    """The rows of a run with chains of at most ``max_steps`` edits, in order."""
    out = {f"{name}_{k}": higher for name, higher in STEP_METRICS for k in range(1, max_steps + 1)}
    out.update(CHAIN_METRICS)
    return out


def quantized(image: Tensor) -> Tensor:
    """``image`` clamped to [0, 1] and rounded to 8 bits (what a saved PNG holds)."""
    return torch.round(image.clamp(0.0, 1.0) * 255.0) / 255.0


@dataclass
class EditChain(TaskRun):
    """``task=edit_chain`` (see the module docstring)."""

    name: ClassVar[str] = "edit_chain"
    edit: EditSettings = field(default_factory=EditSettings)
    mode: str = "reinvert"
    max_steps: int = 5
    quantize: bool = True
    save_images: bool = True
    warmed: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"task.mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"task.max_steps must be an integer >= 1, got {self.max_steps!r}")
        self.success, self.drift = EditSuccess(), BgPSNR("region")

    @classmethod
    def create(cls, settings: RunSettings, adapter: AdapterSource, inverter: Callable[..., Any], *, shard: Any,
               metrics: Any = (), save_images: bool | None = None, **resources: Any) -> EditChain:
        options = settings.task_params
        edit = EditSettings.from_options(options)
        mode, max_steps = str(options.get("mode", "reinvert")), options.get("max_steps", 5)
        quantize = bool(options.get("quantize", True))
        params = {**dict(settings.inverter_params), **editor_provenance(edit), "mode": mode, "max_steps": max_steps,
                  "quantize": quantize}
        label = f"{settings.inverter}+{edit.editor}" + ("+latent" if mode == "latent" else "")
        keep = bool(options.get("save_images", True)) if save_images is None else save_images
        return cls(settings, adapter, label, params, shard, inverter, edit=edit, mode=mode, max_steps=max_steps,
                   quantize=quantize, save_images=keep)

    def directions(self) -> Mapping[str, bool]:
        return chain_directions(self.max_steps)

    def run(self, dataset: Sequence[Entry], on_rows: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
        """The frame's run, with each unit's caption the whole chain ``c0 -> c1 -> ... -> cK``."""
        from eval.loop import run_units

        s = self.settings
        units = [replace(u, caption=" -> ".join([u.entries[0].caption or "", *chain_steps(u.entries[0])]))
                 if isinstance(u.entries[0], EditEntry) else u for u in plan_units(s, dataset)]
        desc = f"{self.name} {s.model or 'model'}/{s.schedule_name or s.schedule.kind}/{self.label}"
        return run_units(s, units, len(self.directions()), self.unit_rows, shard=self.shard, on_rows=on_rows,
                         desc=desc, stages=self.stages, batch_size=self.batch_size)

    # -- one chain --------------------------------------------------------------------------
    def chain_of(self, unit: Unit) -> tuple[EditEntry, tuple[str, ...]]:
        """The unit's chain entry and its step captions; :class:`Skip` where it is not a usable chain."""
        entry = unit.entries[0]
        steps = chain_steps(entry) if isinstance(entry, EditEntry) else ()
        if not steps:
            raise Skip(f"{entry.image_id} is not an edit chain (experiment=world_edit_chain, or any edit pairs)")
        if entry.problem is not None:
            raise Skip(entry.problem)
        if len(steps) > self.max_steps:
            raise Skip(f"the chain has {len(steps)} edits, more than task.max_steps={self.max_steps}")
        return entry, steps

    def measure_one(self, unit: Unit) -> Mapping[str, Value]:
        entry, steps = self.chain_of(unit)
        s, adapter = self.settings, self.adapter
        torch.manual_seed(s.seed)
        try:
            source, latent, _ = cached_image(self.cache, image_cache_key(s, adapter, entry), adapter, entry)
        except (OSError, ValueError) as err:
            raise Skip(f"cannot read image {entry.image_id}: {one_line(err)}") from None
        source = source.to(latent.device)
        with torch.no_grad():
            grid = adapter.grid(s.schedule, tuple(latent.shape))
        counting = CountingDenoiser(adapter.denoiser())
        scale = s.guidance_scale if self.edit.guidance_scale is None else self.edit.guidance_scale
        captions = (entry.caption or "", *steps)

        def edit_from(result: InversionResult, before: str, after: str, x0: Tensor) -> Tensor:
            pair = EditEntry(entry.image_id, entry.path, before, target_caption=after)
            extra = {"x0": x0} if TAKES_X0 else {}
            return make_edit(adapter, self.edit, counting, result, grid, pair, scale, s.true_cfg_scale, **extra)

        def invert(start: Tensor, caption: str) -> tuple[InversionResult, float, int]:
            cond = cached_conditioning(self.cache, s, adapter, caption)
            timed = timed_inversion(self.inverter, counting, start, grid, cond, device=latent.device)
            if not bool(torch.isfinite(timed.result.z).all()):
                raise Fail(diverged_reason(timed.result.z, "inversion") or "")
            return timed.result, timed.seconds, timed.nfe_forward

        if not self.warmed:
            with torch.no_grad():
                cond0 = cached_conditioning(self.cache, s, adapter, captions[0])
                warm_up(lambda: edit_from(invert_once(self.inverter, counting, latent, grid, cond0), captions[0],
                                          captions[1], latent), s.warmup)
            self.warmed = True

        images: list[Tensor] = []
        times: list[float] = []
        elapsed, nfe = 0.0, 0
        current, result = latent, None
        for k in range(1, len(captions)):
            if self.mode == "reinvert" or result is None:
                result, seconds, calls = invert(current, captions[k - 1])
                elapsed, nfe = elapsed + seconds, nfe + calls
            before = captions[k - 1] if self.mode == "reinvert" else captions[0]
            counting.counter.reset()
            with torch.no_grad():
                start = current if self.mode == "reinvert" else latent  # the clean latent this step edits
                edited = time_call(lambda: edit_from(result, before, captions[k], start), latent.device)
                if not bool(torch.isfinite(edited.value).all()):  # type: ignore[arg-type]
                    raise Fail(diverged_reason(edited.value, f"editing (step {k})") or "")  # type: ignore[arg-type]
                image = check_finite(adapter.decode_latents(edited.value), f"edited image (step {k})").clamp(0, 1)
                image = quantized(image) if self.quantize else image
                if self.mode == "reinvert" and k < len(steps):
                    current = check_finite(adapter.encode_images(image), f"encoded step {k} (VAE encode)")
            elapsed, nfe = elapsed + edited.median_s, nfe + counting.counter.forward
            images.append(image)
            times.append(elapsed)
        if self.save_images and s.out_dir is not None:
            save_strip(Path(s.out_dir), entry.image_id, [source, *images])
        return self.values(entry, source, captions, images, times, nfe)

    def values(self, entry: EditEntry, source: Tensor, captions: Sequence[str], images: Sequence[Tensor],
               times: Sequence[float], nfe: int) -> dict[str, Value]:
        """Every row of one chain from its step images (step ``k`` is ``images[k - 1]``)."""
        region, why = None, NO_CHAIN_MASK
        if entry.mask is not None:
            region = fit_mask(entry.mask(), tuple(source.shape[-2:])).to(source.device)  # type: ignore[arg-type]
            why = ""
        out: dict[str, Value] = {}
        success: list[Value] = []
        drift: list[Value] = []
        for k, image in enumerate(images, start=1):
            sample = Sample(image, source, captions[k], source_caption=captions[k - 1], region=region)
            success.append(score([self.success], sample)["edit_success"])
            drift.append(score([self.drift], sample)["bg_psnr"] if region is not None else Unavailable(why or NO_MASK))
            out[f"chain_edit_success_{k}"], out[f"chain_bg_drift_psnr_{k}"] = success[-1], drift[-1]
            out[f"chain_time_s_{k}"] = times[k - 1]
        missing = Unavailable(f"the chain has {len(images)} edits")
        for k in range(len(images) + 1, self.max_steps + 1):
            for name, _ in STEP_METRICS:
                out[f"{name}_{k}"] = missing
        first = score([self.success], Sample(source, source, captions[0]))["edit_success"]
        floats = [v for v in success if isinstance(v, float)]
        out.update({
            "chain_length": float(len(images)), "chain_source_success": first,
            "chain_all_success": float(min(floats)) if len(floats) == len(success) else next(
                v for v in success if not isinstance(v, float)),
            "chain_final_success": success[-1], "chain_final_bg_drift_psnr": drift[-1],
            "chain_time_s": times[-1], "chain_nfe_forward": float(nfe),
        })
        return out


def save_strip(run_dir: Path, image_id: str, frames: Sequence[Tensor]) -> Path:
    """One chain's images side by side ((1, 3, H, W) in [0, 1] each) as ``images/chains/<id>.png``."""
    from PIL import Image

    strip = torch.cat([f.reshape(-1, *f.shape[-3:])[0].detach().float().cpu().clamp(0, 1) for f in frames], dim=-1)
    path = run_dir / "images" / "chains" / f"{''.join(c if c.isalnum() or c in '-_.' else '_' for c in image_id)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (strip.permute(1, 2, 0).numpy() * 255.0).round().astype("uint8")
    Image.fromarray(array).save(path)
    return path


__all__ = ["EditChain", "MODES", "chain_directions", "quantized", "save_strip"]
