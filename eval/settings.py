"""One typed settings object for the benchmark loops, and the resume key derived from it.

:class:`RunSettings` carries everything about a run that is not an object (the adapter, the
inverter callable, the metric objects and the dataset are passed beside it): names, the
schedule, hyperparameters, the task's options, seeds, clocks, where results and the cache go.
Every task (:func:`eval.tasks.run`) takes it, and run.py builds it from the config; ``task`` is
a name of :data:`eval.tasks.TASKS` (or a task from outside, named by its config's ``_target_``).

:meth:`RunSettings.key_fields` is the part of it that decides a result: the checkpoint's
identity (not the config name), device and dtype, the schedule, the inverter and its resolved
hyperparameters, the task and its options, the metric set, seed, guidance (``guidance_scale``, and
``true_cfg_scale`` when it is not 1) and a batch size other
than 1 (it changes the per-image clock). Warm-up, repeats,
progress, paths and ``max_images`` change no value and stay out. :func:`unit_key` adds one
dataset item (index, image-file hash, caption) to it: the content key stored in every row.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from eval.identity import Checkpoint
from eval.records import RunInfo, new_run_id, provenance, to_json
from gnri.models.base import ScheduleSpec

KEY_HEX = 20  # 80 bits: no collision in any sweep of this world


@dataclass(frozen=True)
class RunSettings:
    """Everything about one run that is plain data (see the module docstring)."""

    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    inverter: str = "inverter"
    inverter_params: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None  # the config name; None: the adapter's own name
    schedule_name: str | None = None  # the config name; None: schedule.kind
    checkpoint: Checkpoint | None = None  # what the model config loads; None: named by ``model``
    task: str = "reconstruct"
    task_params: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    metric_options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "unknown"  # as resolved for the model (enters the key: values differ by device)
    dtype: str = "unknown"
    seed: int = 0
    guidance_scale: float = 1.0  # UNet: classifier-free guidance; FLUX: the guidance embedding's input
    true_cfg_scale: float = 1.0  # FLUX: true classifier-free guidance when > 1 (two forwards); UNet: stays 1
    batch_size: int = 1  # images per inversion call (task=reconstruct); enters the key when != 1
    warmup: int = 1
    repeats: int = 1
    time_network: bool = True  # time the bare network once per run (eval.timing.bare_network_times)
    max_images: int | None = None
    progress: bool = True
    out_dir: Path | None = None
    cache_dir: Path | None = None  # content-keyed per-image cache (eval.cache); None: no cache
    resume: bool = True  # skip units whose rows are already in out_dir/results.csv
    run_id: str | None = None
    config: Mapping[str, Any] | None = None  # the full resolved config, for provenance

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError(f"warmup must be >= 0 and repeats >= 1, got {self.warmup} and {self.repeats}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.batch_size > 1 and self.task != "reconstruct":
            raise ValueError(f"batch_size applies to task=reconstruct only, got batch_size={self.batch_size} "
                             f"with task={self.task}")
        if self.max_images is not None and self.max_images < 0:
            raise ValueError(f"max_images must be >= 0 or null, got {self.max_images}")

    def with_(self, **changes: Any) -> RunSettings:
        """A copy with ``changes`` (paths given as str become Path)."""
        for key in ("out_dir", "cache_dir"):
            if isinstance(changes.get(key), str):
                changes[key] = Path(changes[key])
        return replace(self, **changes)

    def key_fields(self) -> dict[str, Any]:
        """The fields that decide a result (the run part of every unit key)."""
        checkpoint = self.checkpoint.identity if self.checkpoint is not None else {"config": self.model}
        return {
            "checkpoint": checkpoint, "device": self.device, "dtype": self.dtype,
            "schedule": asdict(self.schedule), "inverter": self.inverter,
            "inverter_params": dict(self.inverter_params), "task": self.task, "task_params": dict(self.task_params),
            "metrics": list(self.metrics), "metric_options": dict(self.metric_options),
            "seed": self.seed, "guidance_scale": float(self.guidance_scale),
            **({"true_cfg_scale": float(self.true_cfg_scale)} if float(self.true_cfg_scale) != 1.0 else {}),
            # batch 1 keys stay as they were; a batch changes the clock, not the images' values
            **({"batch_size": self.batch_size} if self.batch_size != 1 else {}),
        }

    def guidance_options(self) -> dict[str, float]:
        """The keyword arguments of ``adapter.encode_prompts`` for the run's guidance
        (``true_cfg_scale`` only when it is on, so an adapter without the keyword still takes them)."""
        options = {"guidance_scale": float(self.guidance_scale)}
        if float(self.true_cfg_scale) != 1.0:
            options["true_cfg_scale"] = float(self.true_cfg_scale)
        return options

    def fallback_info(self, inverter: str, params: Mapping[str, Any], batch_size: int = 1) -> RunInfo:
        """Row columns when set-up itself raised (the model or a metric could not be built)."""
        return RunInfo(
            run_id=self.run_id or new_run_id(), model=self.model or "unknown",
            checkpoint=self.checkpoint.label if self.checkpoint is not None else "",
            schedule=self.schedule_name or self.schedule.kind, inverter=inverter, adapter="unknown", num_steps=0,
            guidance_scale=self.guidance_scale, seed=self.seed,
            provenance=provenance("unknown", "unknown", params, asdict(self.schedule), self.config),
            batch_size=batch_size, true_cfg_scale=self.true_cfg_scale,
        )


def digest(data: Any) -> str:
    """A short sha1 of ``data``'s canonical JSON (:func:`eval.records.to_json`)."""
    return hashlib.sha1(to_json(data).encode("utf-8")).hexdigest()[:KEY_HEX]


def file_digest(path: str | Path | None) -> str:
    """sha1 of a file's bytes; ``missing`` / ``unreadable`` when it cannot be read."""
    if path is None:
        return "missing"
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha1").hexdigest()
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"


def unit_key(run_fields: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    """The content key of one unit: the run's :meth:`RunSettings.key_fields` and one item."""
    return digest({"run": dict(run_fields), "item": dict(item)})


# Keyword names the harness functions took before RunSettings -> its field names.
LEGACY_NAMES = {"model_name": "model", "inverter_params": "inverter_params"}


def settings_from_kwargs(schedule: ScheduleSpec, inverter_name: str, **fields: Any) -> RunSettings:
    """RunSettings from the harness functions' keyword arguments (``model_name`` -> ``model``;
    ``None`` values keep the defaults; ``out_dir``/``cache_dir`` may be str)."""
    known = set(RunSettings.__dataclass_fields__)
    values: dict[str, Any] = {}
    for name, value in fields.items():
        target = LEGACY_NAMES.get(name, name)
        if target not in known:
            raise TypeError(f"unknown run setting {name!r}; valid: {', '.join(sorted(known))}")
        if value is not None or target in ("max_images", "out_dir", "cache_dir", "config"):
            values[target] = value
    values["inverter_params"] = dict(values.get("inverter_params") or {})
    return RunSettings(schedule=schedule, inverter=inverter_name).with_(**values)


def settings_for_task(run: RunSettings | None, schedule: ScheduleSpec, inverter_name: str, task: str,
                      task_params: Mapping[str, Any], fields: Mapping[str, Any]) -> RunSettings:
    """The keyword forms' settings: ``run`` (or one from the legacy keyword ``fields``) for
    ``task``, with ``task_params`` under the run's own task parameters."""
    if run is None:
        run = settings_from_kwargs(schedule, inverter_name, **fields)
    return run.with_(task=task, task_params={**dict(task_params), **dict(run.task_params)})
