"""The exact track (ExactDPM's protocol): :func:`eval.exact_track.run_exact_track` once per dataset
caption, with known noise seeded ``seed + index`` (images are not used); rows ``exact_noise_nmse``,
``exact_latent_nmse``, ``exact_image_nmse``, ``exact_image_psnr``. ``task.vae_roundtrip``: decode
and re-encode the generated latent before inverting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import pandas as pd

from eval.data import Entry
from eval.metrics.diagnostics import EXACT_METRICS
from eval.settings import RunSettings, settings_for_task
from eval.task import AdapterSource, Skip, TaskRun, Value, one_line
from eval.units import Unit
from eval.validate import task_refusal


@dataclass
class Exact(TaskRun):
    """``task=exact`` (see the module docstring)."""

    name: ClassVar[str] = "exact"
    vae_roundtrip: bool = False

    @classmethod
    def create(cls, settings: RunSettings, adapter: AdapterSource, inverter: Callable[..., Any], *, shard: Any,
               metrics: Any = (), **resources: Any) -> Exact:
        roundtrip = bool(settings.task_params.get("vae_roundtrip"))
        params = {**dict(settings.inverter_params), "vae_roundtrip": roundtrip}
        return cls(settings, adapter, settings.inverter, params, shard, inverter, vae_roundtrip=roundtrip)

    def directions(self) -> Mapping[str, bool]:
        return EXACT_METRICS

    def measure_one(self, unit: Unit) -> Mapping[str, Value]:
        from eval.exact_track import run_exact_track

        refusal = task_refusal(self.inverter, "exact")
        if refusal is not None:
            raise Skip(refusal)
        entry, s = unit.entries[0], self.settings
        if not entry.caption:
            raise Skip(entry.problem or f"missing caption for {entry.image_id}")
        try:
            out = run_exact_track(self.adapter, self.inverter, s.schedule, [entry.caption], s.seed + unit.index,
                                  s.guidance_scale, self.vae_roundtrip, true_cfg_scale=s.true_cfg_scale)
        except ValueError as err:
            raise Skip(f"does not apply: {one_line(err)}") from None
        return {name: float(v[0].item()) for name, v in out.values().items()}


def evaluate_exact(
    adapter: AdapterSource, schedule: Any, inverter: Callable[..., Any], inverter_name: str, dataset: Sequence[Entry], *,
    vae_roundtrip: bool = False, run: RunSettings | None = None, shard: Any = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None, **fields: Any,
) -> pd.DataFrame:
    """The keyword form of ``eval.tasks.run`` for ``task=exact``."""
    from eval.tasks import run as run_task
    
    settings = settings_for_task(run, schedule, inverter_name, "exact", {"vae_roundtrip": vae_roundtrip}, fields)
    return run_task(settings, adapter, inverter, dataset, shard=shard, on_rows=on_rows)
