"""The frame every task runs in: one model x schedule x inverter over a dataset -> the tidy table.

A task (a module of :mod:`eval.tasks`) is a subclass of :class:`TaskRun` that says which rows
one unit has (:meth:`TaskRun.directions`) and how a batch of units is measured
(:meth:`TaskRun.measure`). Everything else is here, once:

- the model, built on the first unit left to compute (a resumed, finished run loads nothing) and
  probed with a blank image for steps, device and dtype. A set-up error marks every unit: a
  :class:`RefusedAdapter` (the method does not apply, known before loading) or a ``ValueError``
  (e.g. a schedule kind the model cannot use) gives ``skipped``, anything else ``failed``;
- ``provenance.json``, written once by the main rank;
- exceptions to rows: :class:`Skip` -> ``skipped``, :class:`Fail` -> ``failed``, any other
  exception -> ``failed`` with its type and first line (logged); ``KeyboardInterrupt`` propagates;
- a unit's values to rows (:mod:`eval.records`): a float is ``ok``, a str is that metric's
  failure, an :class:`~eval.records.Unavailable` its reason; a metric that cannot run on this
  machine is ``unavailable`` on every row of the run;
- the plan, resume and sharding through :func:`eval.loop.run_units`.

Plain arguments only (no Hydra); :mod:`eval.tasks` registers the tasks by name.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import pandas as pd
import torch

from eval.cache import TensorCache
from eval.data import Entry
from eval.distributed import Shard
from eval.loop import Rows, run_units
from eval.records import RunInfo, Unavailable, new_run_id, provenance, write_provenance
from eval.settings import RunSettings
from eval.units import Unit, plan_units
from gnri.models.base import ModelAdapter

log = logging.getLogger(__name__)
AdapterSource = ModelAdapter | Callable[[], ModelAdapter]
Value = float | str | Unavailable  # a number, a failure reason, or unavailable with why
Outcome = tuple[str, str, Mapping[str, Value]]  # (status, reason, values) of one unit


class Skip(Exception):
    """The unit or method does not apply: its rows get status ``skipped`` with this reason."""


class Fail(Exception):
    """The method diverged (or the model could not be built): its rows get status ``failed``."""


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@dataclass
class BrokenAdapter:
    """Stands in for a model that could not be built, so a sweep records it and goes on:
    every unit of its run gets ``failed`` rows naming ``error``."""

    name: str
    error: BaseException
    family: str = "vp"
    guidance_distilled: bool = False

    def image_size(self) -> tuple[int, int]:
        cause = self.error.__cause__ or self.error  # unwrap Hydra's InstantiationException
        raise Fail(f"model {self.name} could not be built: {type(cause).__name__}: {one_line(cause)}")

    def __getattr__(self, attr: str) -> Any:
        raise AttributeError(f"BrokenAdapter {self.name} has no {attr}")


@dataclass
class RefusedAdapter(BrokenAdapter):
    """Stands in for a model the run's method does not apply to (its family or the task, known
    before loading): every unit of the run gets ``skipped`` rows naming why; nothing loads."""

    def image_size(self) -> tuple[int, int]:
        raise Skip(one_line(self.error))


def is_adapter(obj: Any) -> bool:
    """An adapter (or a stand-in) rather than a factory that builds one."""
    return isinstance(obj, BrokenAdapter) or (hasattr(obj, "denoiser") and hasattr(obj, "image_size"))


def outcome_of(err: Exception, what: str) -> Outcome:
    """The status and reason an exception gives ``what`` (a unit, a batch)."""
    if isinstance(err, Skip):
        return "skipped", str(err), {}
    if isinstance(err, Fail):
        return "failed", str(err), {}
    log.exception("%s failed", what)
    return "failed", f"{type(err).__name__}: {one_line(err)}", {}


def _probe(adapter: ModelAdapter, settings: RunSettings) -> tuple[int, str, str, Any]:
    """Steps, device, dtype and the denoiser, from a blank image at the model's size."""
    blank = torch.zeros(1, 3, *adapter.image_size())
    with torch.no_grad():
        latent = adapter.encode_images(blank)
        grid = adapter.grid(settings.schedule, tuple(latent.shape))
    denoiser = adapter.denoiser()
    return grid.num_steps, str(adapter.device), str(adapter.dtype).removeprefix("torch."), denoiser


def _setup_error(err: Exception) -> tuple[str, str]:
    """The (status, reason) a set-up exception gives every unit of the run."""
    if isinstance(err, (Skip, Fail)):
        return outcome_of(err, "setup")[:2]
    if isinstance(err, ValueError):
        return "skipped", f"does not apply: {one_line(err)}"
    log.exception("setup failed")
    return "failed", f"setup {type(err).__name__}: {one_line(err)}"


@dataclass
class TaskRun:
    """Per-run state of one task; subclasses give :meth:`directions` and :meth:`measure`.

    ``label`` is the rows' inverter column, ``params`` the provenance's inverter parameters,
    ``batch_size`` how many units :meth:`measure` takes at once.
    """

    name: ClassVar[str] = ""
    settings: RunSettings
    adapter_source: AdapterSource
    label: str
    params: Mapping[str, Any]
    shard: Shard = field(default_factory=Shard)
    inverter: Callable[..., Any] = None  # type: ignore[assignment]  # (denoiser, x0, grid, cond) -> InversionResult
    batch_size: int = 1
    adapter: ModelAdapter | None = None
    denoiser: Any = None
    info: RunInfo | None = None
    setup_error: tuple[str, str] | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why it cannot run here
    stages: dict[str, float] = field(default_factory=lambda: {"setup_s": 0.0, "prepare_s": 0.0})

    def __post_init__(self) -> None:
        self.cache = TensorCache(self.settings.cache_dir)

    @classmethod
    def create(cls, settings: RunSettings, adapter: AdapterSource, inverter: Callable[..., Any], *, shard: Shard,
               metrics: Any = (), **resources: Any) -> TaskRun:
        """The task for one run (:func:`eval.tasks.run`); a task with options reads them from
        ``settings.task_params`` here."""
        return cls(settings, adapter, settings.inverter, dict(settings.inverter_params), shard, inverter)

    # -- what a task gives ------------------------------------------------------------------
    def directions(self) -> Mapping[str, bool]:
        """Row name -> higher_is_better, in row order: every unit gets exactly these rows."""
        raise NotImplementedError

    def measure(self, units: Sequence[Unit]) -> list[Outcome]:
        """Each unit's outcome (after :meth:`setup`); by default one at a time via :meth:`measure_one`."""
        outcomes: list[Outcome] = []
        for unit in units:
            try:
                outcomes.append(("ok", "", self.measure_one(unit)))
            except Exception as err:  # noqa: BLE001 - a sweep must survive any one unit
                outcomes.append(outcome_of(err, f"item {unit.item}"))
        return outcomes

    def measure_one(self, unit: Unit) -> Mapping[str, Value]:
        """Every row value of one unit (raise :class:`Skip` / :class:`Fail` for the whole unit)."""
        raise NotImplementedError

    def build(self) -> None:
        """Build what the task needs besides the model (metrics), at set-up."""

    # -- the frame --------------------------------------------------------------------------
    def setup(self) -> RunInfo:
        """Build the model (once), probe it, write provenance; a probe error marks every unit."""
        if self.info is not None:
            return self.info
        start = time.perf_counter()
        source = self.adapter_source
        self.adapter = source if is_adapter(source) else source()  # type: ignore[operator]
        self.build()
        steps, device, dtype = 0, "unknown", "unknown"
        try:
            steps, device, dtype, self.denoiser = _probe(self.adapter, self.settings)
        except Exception as err:  # noqa: BLE001 - recorded on every row instead
            self.setup_error = _setup_error(err)
        self.info = self._run_info(steps, device, dtype)
        s = self.settings
        if s.out_dir is not None and self.shard.is_main:
            Path(s.out_dir).mkdir(parents=True, exist_ok=True)
            write_provenance(Path(s.out_dir), self.info)
        self.stages["setup_s"] += time.perf_counter() - start
        return self.info

    def _run_info(self, steps: int, device: str, dtype: str) -> RunInfo:
        s = self.settings
        return RunInfo(
            run_id=s.run_id or new_run_id(), model=s.model or self.adapter.name,
            checkpoint=s.checkpoint.label if s.checkpoint is not None else self.adapter.name,
            schedule=s.schedule_name or s.schedule.kind, inverter=self.label, adapter=self.adapter.name,
            num_steps=steps, guidance_scale=s.guidance_scale, seed=s.seed,
            provenance=provenance(device, dtype, self.params, asdict(s.schedule), s.config),
            batch_size=self.batch_size, true_cfg_scale=s.true_cfg_scale,
        )

    def unit_rows(self, units: Sequence[Unit]) -> list[Rows]:
        """The rows of each unit of a batch; every exception but KeyboardInterrupt becomes rows."""
        try:
            self.setup()
            if self.setup_error is not None:
                outcomes: list[Outcome] = [(*self.setup_error, {}) for _ in units]
            else:
                outcomes = self.measure(units)
        except Exception as err:  # noqa: BLE001 - a sweep must survive any one batch
            outcomes = [outcome_of(err, f"batch of {units[0].item}")] * len(units)
        return [self.rows(unit, *outcome) for unit, outcome in zip(units, outcomes)]

    def ok_reason(self, unit: Unit) -> str:
        """An ok row's reason: a warning about the unit's input (e.g. a truncated caption)."""
        entry = unit.entries[0]
        if entry.warning:
            return entry.warning
        if not entry.caption or isinstance(self.adapter, BrokenAdapter) or self.adapter is None:
            return ""
        return self.adapter.prompt_warning(entry.caption) or ""

    def rows(self, unit: Unit, status: str, reason: str, values: Mapping[str, Value]) -> Rows:
        """One row per name of :meth:`directions`, with the unit's status and reason."""
        info = self.info if self.info is not None else self.settings.fallback_info(
            self.label, self.params, self.batch_size)
        if status == "ok":
            reason = self.ok_reason(unit)
        rows = []
        for name, higher in self.directions().items():
            row_status, row_reason, value = status, reason, math.nan
            found = values.get(name, Unavailable("not computed for this item"))
            if name in self.unavailable:
                row_status, row_reason = "unavailable", self.unavailable[name]
            elif status == "ok" and isinstance(found, Unavailable):
                row_status, row_reason = "unavailable", found.reason
            elif status == "ok" and isinstance(found, str):
                row_status, row_reason = "failed", found
            elif status == "ok":
                value = float(found)
            rows.append(info.row(unit.item, unit.caption, name, value, row_status, row_reason, higher, unit.key))
        return rows

    def run(self, dataset: Sequence[Entry], on_rows: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
        """Drive the plan (:func:`eval.loop.run_units`: resume, shards, one results.csv)."""
        s = self.settings
        units = plan_units(s, dataset)
        desc = f"{self.name} {s.model or 'model'}/{s.schedule_name or s.schedule.kind}/{self.label}"
        return run_units(s, units, len(self.directions()), self.unit_rows, shard=self.shard, on_rows=on_rows,
                         desc=desc, stages=self.stages, batch_size=self.batch_size)
