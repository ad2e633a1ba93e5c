"""Interpolation: consecutive dataset entries form pairs (0-1, 2-3, ...); both are inverted, their
states interpolated along ``task.path`` (:mod:`gnri.edit.paths`: ``slerp``, ``linear`` or NAO's
norm-aware ``nao``, options ``task.nao``) at ``task.num_points`` evenly spaced weights and
regenerated (:mod:`gnri.edit.interpolate`). The rows' inverter column is ``<inverter>+<path>``.

Rows: ``interp_lpips_step_mean`` / ``interp_lpips_step_max`` (LPIPS between neighbouring images:
smoothness; unavailable without LPIPS weights), ``interp_rms_step_max`` (the largest neighbour RMS
pixel step), ``interp_psnr_start`` / ``interp_psnr_end`` (the path's ends vs the source images:
fidelity). Over the interior interpolants (weights strictly between 0 and 1; unavailable with
``num_points = 2``), :mod:`eval.metrics.interp`: ``interp_valid_frac`` (fraction the world's checker
reads as one valid scene; world captions only), ``interp_norm_dev`` / ``interp_norm_dev_max`` (mean /
max of ``| |z| / sqrt(d) - 1 |`` of the interpolated initial latent: distance from the Gaussian
shell), ``interp_clip_either`` / ``interp_clip_either_min`` (mean / min over the interpolants of the
larger CLIP score to caption A or B; ``task.clip``, unavailable without weights); and
``interp_norm_dev_ends`` (the same deviation, mean of the two inverted endpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import pandas as pd
import torch

from eval.data import Entry
from eval.finite import check_finite
from eval.metrics.diagnostics import INTERP_METRICS
from eval.metrics.interp import NO_INTERIOR, clip_either, valid_fraction, world_reason
from eval.metrics.psnr import psnr
from eval.prepare import fitted_pixels
from eval.records import Unavailable
from eval.settings import RunSettings, settings_for_task
from eval.task import AdapterSource, Fail, Skip, TaskRun, Value
from eval.timed import invert_once
from eval.units import Unit
from eval.validate import task_refusal
from gnri.edit.interpolate import blend_results, interpolate, interpolation_weights
from gnri.edit.paths import make_path, norm_deviation


@dataclass
class Interpolate(TaskRun):
    """``task=interpolate`` (see the module docstring)."""

    name: ClassVar[str] = "interpolate"
    num_points: int = 7
    lpips: Any = None
    path: str = "slerp"
    nao: Mapping[str, Any] = field(default_factory=dict)
    clip: Any = None  # a CLIPScore, or None: unavailable

    @classmethod
    def create(cls, settings: RunSettings, adapter: AdapterSource, inverter: Callable[..., Any], *, shard: Any,
               metrics: Any = (), lpips_cache: str | None = None, **resources: Any) -> Interpolate:
        from eval.metrics.edit import clip_metric
        from eval.metrics.lpips_metric import LPIPS

        options = settings.task_params
        points = int(options.get("num_points", 7))
        path = str(options.get("path", "slerp"))
        nao = dict(options.get("nao") or {}) if path == "nao" else {}
        make_path(path, **nao)  # a wrong task.path / task.nao fails here (run.py checks it first: check_options)
        params = {**dict(settings.inverter_params), "num_points": points, "path": path, **({"nao": nao} if nao else {})}
        lpips = LPIPS(net=options.get("lpips_net", "alex"), cache_dir=lpips_cache)
        return cls(settings, adapter, f"{settings.inverter}+{path}", params, shard, inverter, num_points=points,
                   lpips=lpips, path=path, nao=nao, clip=clip_metric(options.get("clip")))

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """``task.path`` / ``task.nao`` checked before any model loads (run.py): one-line ValueError."""
        path = str(options.get("path", "slerp"))
        make_path(path, **(dict(options.get("nao") or {}) if path == "nao" else {}))

    def directions(self) -> Mapping[str, bool]:
        return INTERP_METRICS

    def measure_one(self, unit: Unit) -> Mapping[str, Value]:
        refusal = task_refusal(self.inverter, "interpolate")
        if refusal is not None:
            raise Skip(refusal)
        a, b = unit.entries
        adapter, s = self.adapter, self.settings
        torch.manual_seed(s.seed)
        size = adapter.image_size()
        images = torch.cat([fitted_pixels(a, size), fitted_pixels(b, size)])
        with torch.no_grad():
            latents = adapter.encode_images(images)
            grid = adapter.grid(s.schedule, tuple(latents[:1].shape))
            conds = [adapter.encode_prompts([e.caption or ""], **s.guidance_options()) for e in (a, b)]
        denoiser = adapter.denoiser()
        results = [invert_once(self.inverter, denoiser, latents[i:i + 1], grid, conds[i]) for i in range(2)]
        if not all(bool(torch.isfinite(r.z).all()) for r in results):
            raise Fail("diverged: non-finite latent after inversion")
        weights = interpolation_weights(self.num_points)
        along = make_path(self.path, **self.nao)  # one per pair: NAO's optimised path is shared by the weights
        with torch.no_grad():
            zs = [blend_results(results[0], results[1], w, along).z for w in weights]
            path = interpolate(denoiser, results[0], results[1], grid, conds[0], conds[1], weights, along)
            frames = check_finite(torch.cat([adapter.decode_latents(z) for z in path]), "interpolated images")
        captions = (a.caption or "", b.caption or "")
        return {**self.fidelity(frames, images.to(frames.device)), **self.smoothness(frames),
                **self.shell(zs), **self.validity(frames, captions), **self.clip_rows(frames, captions)}

    @staticmethod
    def shell(zs: Sequence[torch.Tensor]) -> dict[str, Value]:
        """``interp_norm_dev`` / ``_max`` over the interior latents, ``_ends`` over the two endpoints."""
        dev = torch.cat([norm_deviation(z) for z in zs])
        out: dict[str, Value] = {"interp_norm_dev_ends": float(0.5 * (dev[0] + dev[-1]))}
        if len(zs) < 3:
            return {**out, "interp_norm_dev": Unavailable(NO_INTERIOR), "interp_norm_dev_max": Unavailable(NO_INTERIOR)}
        return {**out, "interp_norm_dev": float(dev[1:-1].mean()), "interp_norm_dev_max": float(dev[1:-1].max())}

    @staticmethod
    def validity(frames: torch.Tensor, captions: tuple[str, str]) -> dict[str, Value]:
        """``interp_valid_frac``: the world checker's valid-scene verdict over the interior frames."""
        reason = world_reason(captions) or (NO_INTERIOR if frames.shape[0] < 3 else None)
        if reason is not None:
            return {"interp_valid_frac": Unavailable(reason)}
        return {"interp_valid_frac": valid_fraction(frames[1:-1])}

    def clip_rows(self, frames: torch.Tensor, captions: tuple[str, str]) -> dict[str, Value]:
        """``interp_clip_either`` / ``_min``: the larger CLIP score to either caption over the interior frames."""
        reason = "no CLIP metric configured (task.clip)" if self.clip is None else self.clip.unavailable_reason()
        reason = reason or (NO_INTERIOR if frames.shape[0] < 3 else None)
        if reason is not None:
            return {"interp_clip_either": Unavailable(reason), "interp_clip_either_min": Unavailable(reason)}
        scores = clip_either(self.clip, frames[1:-1], *captions)
        return {"interp_clip_either": scores.mean().item(), "interp_clip_either_min": scores.min().item()}

    @staticmethod
    def fidelity(frames: torch.Tensor, images: torch.Tensor) -> dict[str, Value]:
        rms = (frames[1:] - frames[:-1]).flatten(1).pow(2).mean(1).sqrt()
        return {"interp_rms_step_max": rms.max().item(),
                "interp_psnr_start": psnr(frames[:1], images[:1])[0].item(),
                "interp_psnr_end": psnr(frames[-1:], images[1:])[0].item()}

    def smoothness(self, frames: torch.Tensor) -> dict[str, Value]:
        reason = self.lpips.unavailable_reason()
        if reason is not None:
            return {"interp_lpips_step_mean": Unavailable(reason), "interp_lpips_step_max": Unavailable(reason)}
        with torch.no_grad():
            steps = self.lpips(frames[1:], frames[:-1])
        return {"interp_lpips_step_mean": steps.mean().item(), "interp_lpips_step_max": steps.max().item()}


def evaluate_interpolation(
    adapter: AdapterSource, schedule: Any, inverter: Callable[..., Any], inverter_name: str, dataset: Sequence[Entry], *,
    num_points: int = 7, lpips_net: str = "alex", lpips_cache: str | None = None, run: RunSettings | None = None,
    shard: Any = None, on_rows: Callable[[pd.DataFrame], None] | None = None, path: str = "slerp",
    nao: Mapping[str, Any] | None = None, clip: Any = None, **fields: Any,
) -> pd.DataFrame:
    """The keyword form of ``eval.tasks.run`` for ``task=interpolate`` (``max_images`` entries at most)."""
    from eval.tasks import run as run_task

    options = {"num_points": num_points, "lpips_net": lpips_net, "path": path, "nao": dict(nao or {}), "clip": clip}
    settings = settings_for_task(run, schedule, inverter_name, "interpolate", options, fields)
    return run_task(settings, adapter, inverter, dataset, shard=shard, on_rows=on_rows, lpips_cache=lpips_cache)
