"""The benchmark's tasks by name (``task.name``): the one list, and :func:`run`, the one way to run one.

Each task is a module here with a :class:`eval.task.TaskRun` subclass (what one unit measures and
which rows it has; the frame does the rest) and a config ``conf/task/<name>.yaml``. A task from
outside this package needs no entry here: its config names the class with ``task._target_``
(``"package.module.ClassName"``), e.g. the toy task of ``tests/test_task_frame.py``.

Imports stay inside the functions: ``eval.settings`` reads :data:`TASKS` without loading a task.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    import pandas as pd

    from eval.data import Entry
    from eval.settings import RunSettings
    from eval.task import AdapterSource, TaskRun

# task name -> "module:class" of its TaskRun subclass
TASKS = {
    "reconstruct": "eval.tasks.reconstruct:Reconstruct",
    "edit": "eval.tasks.edit:Edit",
    "interpolate": "eval.tasks.interpolate:Interpolate",
    "exact": "eval.tasks.exact:Exact",
    "edit_chain": "eval.tasks.edit_chain:EditChain",
    "seed_select": "eval.tasks.seed_select:SeedSelect",
}


def task_class(name: str, target: str | None = None) -> type[TaskRun]:
    """The TaskRun subclass of task ``name``: a shipped one, or ``target`` ("module.Class" or
    "module:Class", from the task config's ``_target_``). One-line ValueError when unknown."""
    path = target or TASKS.get(name)
    if path is None:
        raise ValueError(f"task.name={name!r} is not a task; valid: {', '.join(TASKS)} "
                         "(or give task._target_: package.module.TaskClass)")
    module, _, attr = path.replace(":", ".").rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"task.name={name!r}: {path} cannot be imported: {type(err).__name__}: {err}") from None
    from eval.task import TaskRun

    if not (isinstance(found, type) and issubclass(found, TaskRun)):
        raise ValueError(f"task.name={name!r}: {path} is not an eval.task.TaskRun subclass")
    return found


def run(
    settings: RunSettings,
    adapter: AdapterSource,
    inverter: Callable[..., Any],
    dataset: Sequence[Entry],
    *,
    metrics: Any = (),
    shard: Any = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
    target: str | None = None,
    **resources: Any,
) -> pd.DataFrame:
    """Run ``settings.task`` for one model x schedule x inverter over ``dataset``; the tidy table.

    ``adapter`` may be a zero-argument factory (built only when a unit is left to compute);
    ``metrics`` (reconstruction) a list of image metrics or a factory; the task's options are
    ``settings.task_params``; ``resources`` are ready objects a task may take instead of building
    them (the edit task's ``clip`` metric)."""
    from eval.distributed import Shard

    cls = task_class(settings.task, target)
    task = cls.create(settings, adapter, inverter, shard=shard or Shard(), metrics=metrics, **resources)
    return task.run(dataset, on_rows)


__all__ = ["TASKS", "run", "task_class"]
