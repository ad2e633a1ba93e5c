"""Interpolation: consecutive dataset entries form pairs (0-1, 2-3, ...); both are inverted, their
states slerped (:mod:`gnri.edit.interpolate`) at ``task.num_points`` evenly spaced weights and
regenerated.

Rows: ``interp_lpips_step_mean`` / ``interp_lpips_step_max`` (LPIPS between neighbouring images:
smoothness; unavailable without LPIPS weights), ``interp_rms_step_max`` (the largest neighbour RMS
pixel step), ``interp_psnr_start`` / ``interp_psnr_end`` (the path's ends vs the source images:
fidelity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import pandas as pd
import torch

from eval.data import Entry
from eval.finite import check_finite
from eval.metrics.diagnostics import INTERP_METRICS
from eval.metrics.psnr import psnr
from eval.prepare import fitted_pixels
from eval.records import Unavailable
from eval.settings import RunSettings, settings_for_task
from eval.task import AdapterSource, Fail, Skip, TaskRun, Value
from eval.timed import invert_once
from eval.units import Unit
from eval.validate import task_refusal
from gnri.edit.interpolate import interpolate, interpolation_weights


@dataclass
class Interpolate(TaskRun):
    """``task=interpolate`` (see the module docstring)."""

    name: ClassVar[str] = "interpolate"
    num_points: int = 7
    lpips: Any = None

    @classmethod
    def create(cls, settings: RunSettings, adapter: AdapterSource, inverter: Callable[..., Any], *, shard: Any,
               metrics: Any = (), lpips_cache: str | None = None, **resources: Any) -> Interpolate:
        from eval.metrics.lpips_metric import LPIPS

        options = settings.task_params
        points = int(options.get("num_points", 7))
        params = {**dict(settings.inverter_params), "num_points": points}
        lpips = LPIPS(net=options.get("lpips_net", "alex"), cache_dir=lpips_cache)
        return cls(settings, adapter, settings.inverter, params, shard, inverter, num_points=points, lpips=lpips)

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
        with torch.no_grad():
            path = interpolate(denoiser, results[0], results[1], grid, conds[0], conds[1],
                               interpolation_weights(self.num_points))
            frames = check_finite(torch.cat([adapter.decode_latents(z) for z in path]), "interpolated images")
        return {**self.fidelity(frames, images.to(frames.device)), **self.smoothness(frames)}

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
    shard: Any = None, on_rows: Callable[[pd.DataFrame], None] | None = None, **fields: Any,
) -> pd.DataFrame:
    """The keyword form of ``eval.tasks.run`` for ``task=interpolate`` (``max_images`` entries at most)."""
    from eval.tasks import run as run_task
    
    settings = settings_for_task(run, schedule, inverter_name, "interpolate",
                               {"num_points": num_points, "lpips_net": lpips_net}, fields)
    return run_task(settings, adapter, inverter, dataset, shard=shard, on_rows=on_rows, lpips_cache=lpips_cache)
