"""Run the inversion benchmark: the Hydra entry point, and the only file that knows Hydra.

    python run.py                                        # conf/config.yaml defaults
    python run.py inverter=fixed_point schedule.num_steps=4 max_images=2
    python run.py -m inverter=ddim,fixed_point model=tiny_sd schedule=ddim10,ddim50
    python run.py task=edit                              # editing: the embedded world's edit pairs
    python run.py task=exact                             # the ground-truth (known noise) track

Builds plain objects from the config groups (model -> adapter, schedule -> ScheduleSpec,
inverter -> a partial of ``invert``, dataset -> entries, metrics -> ImageMetric list, logger),
runs the task ``task.name`` (:func:`eval.tasks.run`: ``reconstruct``, the default, ``edit``,
``interpolate``, ``exact``, or a task from outside named by ``task._target_``), and writes ``results.csv``, ``provenance.json`` and ``summary.md`` into the Hydra run folder (one
folder per job in a multirun). The top-level ``device`` (``auto``: cuda if available, else cpu)
and ``dtype`` override the model config's own ``device``/``dtype``; set either to ``null`` to
keep the model config's value.
A group choice that names no ``conf/<group>/<name>.yaml`` stops with a one-line error. Without
``schedule=`` (or ``experiment=``) a model runs on its family's default schedule: ``ddim10`` (the
config's), ``flow4`` for a flow model (:func:`default_schedule`). A model that cannot be built (pickle
weights refused, a missing component, no network) stops a single run with one line (exit 2) before
any row; in a multirun it does not stop the sweep: its job records every image as ``failed`` with
the reason and the next job runs. ``dataset.max_images=N`` is ``max_images=N`` on every dataset
(:func:`dataset_limit`). Ctrl-C or SIGTERM prints the command that resumes (:func:`resume_command`).

Inverters come from the method catalog (:mod:`gnri.catalog`): shipped, installed plug-ins (entry
points in group ``gnri_bench.inverters``: ``inverter=<name>`` with no YAML) and the ``inverter/``
folder of a user's config folder (``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]``).
:func:`register_configs` puts every method's signature defaults into Hydra's ConfigStore
(``inverter_defaults/<name>``, merged under ``conf/config.yaml``'s ``inverter`` choice) and each
plug-in's node into group ``inverter``; ``inverter.<key>=value`` is passed as
``++inverter.<key>=value`` (:func:`inverter_overrides`), so a misspelt key reaches the one-line
check instead of Hydra's struct error. Before any model loads the target must import, have the
inverter signature, take every given option with a value of its type, and apply to the model's
family and the task: a single run stops with one line (exit 2); a multirun records ``skipped``
rows for a combination that does not apply, without loading the model, and goes on.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Iterable

import hydra
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUPS = ("model", "schedule", "inverter", "dataset", "metrics", "logger", "task", "experiment")
META_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
# Launchers that run several jobs at once on one machine and do not pin a GPU per job themselves.
LOCAL_PARALLEL_LAUNCHERS = ("JoblibLauncher", "submitit_launcher.LocalLauncher")
log = logging.getLogger("run")


def config_names(group: str, conf_dirs: Iterable[Path] = (CONF_DIR,)) -> list[str]:
    """The names (yaml stems) a config group offers, over the given config folders."""
    return sorted({p.stem for d in conf_dirs for p in (Path(d) / group).glob("*.yaml")})


def _extra_conf_dirs(args: list[str]) -> list[Path]:
    """User config folders Hydra searches too: ``--config-dir``/``-cd DIR`` and the ``file://``
    entries of a ``hydra.searchpath=[...]`` override (``pkg://`` entries are not folders)."""
    dirs = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            from hydra.core.override_parser.overrides_parser import OverridesParser

            try:
                value = OverridesParser.create().parse_override(arg.lstrip("+")).value()
            except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself
                continue
            for entry in value if isinstance(value, list) else [value]:
                if isinstance(entry, str) and entry.startswith("file://"):
                    dirs.append(Path(entry.removeprefix("file://")))
    return dirs


def inverter_overrides(args: list[str]) -> list[str]:
    """``inverter.<key>=value`` -> ``++inverter.<key>=value``: a key the inverter's config file does
    not list is still set (every keyword of the function is an option; a misspelt one is refused
    by the one-line check, never by Hydra's struct error). ``dataset.max_images=N`` likewise, on
    every dataset (:func:`dataset_limit` makes it the top-level limit where the loader has none)."""
    return [f"++{a}" if (a.startswith("inverter.") or a.startswith("dataset.max_images=")) and "=" in a else a
            for a in args]


def dataset_limit(cfg: DictConfig) -> None:
    """``dataset.max_images=N`` (set on every dataset, :func:`inverter_overrides`) on a dataset whose
    loader takes no ``max_images`` becomes the top-level ``max_images`` (the smaller, when both are
    set): one spelling of the image limit works everywhere; a loader that takes it (``world``) keeps it."""
    import inspect

    from omegaconf import open_dict

    from eval import validate

    if "dataset" not in cfg or "max_images" not in cfg.dataset or "_target_" not in cfg.dataset:
        return
    try:
        params = inspect.signature(validate.locate(str(cfg.dataset._target_))).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return
    if "max_images" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    limit = cfg.dataset.max_images
    with open_dict(cfg.dataset):
        cfg.dataset.pop("max_images")
    if limit is not None:
        cfg.max_images = limit if cfg.max_images is None else min(int(limit), int(cfg.max_images))


def _override_value(args: list[str], key: str) -> str | None:
    """The value of the last plain ``key=value`` override (``+``/``++`` too), else None."""
    found = None
    for arg in args:
        name, eq, value = arg.lstrip("+").partition("=")
        if eq and name == key:
            found = value
    return found


def default_schedule(args: list[str]) -> list[str]:
    """``schedule=flow4`` added when neither ``schedule=`` nor ``experiment=`` is given and the
    model (``model=``, else conf/config.yaml's) is of the flow family, read without loading it
    (a local folder's ``model_index.json``): each family runs on its own default schedule (vp:
    ``ddim10``, the config's). An explicit ``schedule=`` always wins; a model whose family cannot
    be told is left to the checks."""
    import yaml

    from eval import validate
    from gnri.models.families import default_schedule_name

    keys = [a.lstrip("+~").partition("=")[0] for a in args if not a.startswith("-")]
    if "schedule" in keys or "experiment" in keys:
        return args
    model = _override_value(args, "model") or "tiny_sd"
    if "," in model or "(" in model:
        return args  # a sweep over models: each job's schedule is the user's to give
    for folder in [*_extra_conf_dirs(args), CONF_DIR]:
        file = Path(folder) / "model" / f"{model}.yaml"
        if file.is_file():
            break
    else:
        return args
    try:
        model_cfg = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for key in ("path", "family", "model"):
            value = _override_value(args, f"model.{key}")
            if value is not None:
                model_cfg[key] = value
        family = validate.adapter_family(model_cfg)
    except Exception:  # noqa: BLE001 - the checks after composition report a bad model config
        return args
    name = default_schedule_name(family) if family else None  # gnri.models.families: the family's own
    return [*args, f"schedule={name}"] if name else args


def register_configs(conf_dirs: Iterable[Path] = ()) -> str | None:
    """Put the method catalog into Hydra's ConfigStore: ``inverter_defaults/<name>`` (every keyword
    with its signature default, for each method that imports) and ``inverter/<name>`` for each
    installed plug-in (``_target_``, ``_partial_``: no YAML needed). A one-line error (a catalog
    clash) or None. A method that does not import gets no defaults: it is refused when chosen."""
    from hydra.core.config_store import ConfigStore

    from gnri import catalog

    try:
        methods = catalog.methods(conf_dirs)
    except catalog.CatalogError as err:
        return f"run.py: {err}"
    store = ConfigStore.instance()
    for name, entry in methods.items():
        if entry.origin != catalog.SHIPPED and not entry.origin.startswith("config folder"):
            store.store(group="inverter", name=name, node={"_target_": catalog.dotted(entry.target), "_partial_": True},
                        provider="gnri_bench")
        try:
            defaults = catalog.signature_defaults(entry.load())
        except (catalog.CatalogError, TypeError, ValueError):
            continue
        plain = {k: v for k, v in defaults.items() if _config_value(v)}
        store.store(group="inverter_defaults", name=name, node=plain, provider="gnri_bench")
    return None


def _config_value(value: Any) -> bool:
    """Whether a default can live in a config (None, bool, int, float, str, or lists/dicts of them)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_config_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _config_value(v) for k, v in value.items())
    return False


def inverter_names(conf_dirs: Iterable[Path]) -> list[str]:
    """Every name ``inverter=`` takes: the catalog's (shipped, plug-ins, the folders' files) and
    ``conf/inverter``'s files."""
    from gnri import catalog

    dirs = list(conf_dirs)
    try:
        names = set(catalog.methods([d for d in dirs if Path(d).resolve() != CONF_DIR]))
    except catalog.CatalogError:
        names = set()
    return sorted(names | set(config_names("inverter", dirs)))


def check_group_choices(args: list[str]) -> str | None:
    """A one-line error for the first ``group=name`` override naming no config (or an unknown
    ``attention`` backend), else None.

    Understands sweeps (``a,b``, ``choice(a,b)``); leaves globs and anything it cannot parse
    to Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    dirs = [CONF_DIR, *_extra_conf_dirs(args)]
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # noqa: BLE001 - Hydra reports malformed overrides itself
        return None
    for o in overrides:
        if o.key_or_group == "attention" and not o.is_sweep_override() and not o.is_delete():
            from gnri.models.attention import ATTENTION_BACKENDS

            if o.get_value_element_as_str() not in ATTENTION_BACKENDS:
                return (f"run.py: unknown attention {o.get_value_element_as_str()!r}; "
                        f"valid: {', '.join(ATTENTION_BACKENDS)}")
        if o.key_or_group not in GROUPS or o.is_delete() or o.package:
            continue
        if o.is_sweep_override():
            if o.value_type not in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):
                continue  # glob(...) and ranges: Hydra expands and checks them
            names = list(o.sweep_string_iterator())
        else:
            names = [o.get_value_element_as_str()]
        group = o.key_or_group
        valid = inverter_names(dirs) if group == "inverter" else config_names(group, dirs)
        for name in names:
            if name not in valid and (name != "null" or group == "inverter"):
                where = " or ".join([f"conf/{group}/{name}.yaml"] + [f"{d}/{group}/{name}.yaml" for d in dirs[1:]])
                return (
                    f"run.py: unknown {group} {name!r} ({where} not found); "
                    f"valid: {', '.join(valid) or '(none)'}"
                )
    return None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else unchanged."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def hyperparameters(node: DictConfig) -> dict[str, Any]:
    """A plug-in config's own fields, without Hydra's ``_target_``-style keys."""
    data = OmegaConf.to_container(node, resolve=True)
    return {k: v for k, v in data.items() if k not in META_KEYS}  # type: ignore[union-attr]


def build_schedule(node: DictConfig) -> Any:
    """A ScheduleSpec from plain fields (or from the node's ``_target_``, if it has one)."""
    from hydra.utils import instantiate

    from gnri.models.base import ScheduleSpec

    if "_target_" in node:
        return instantiate(node)
    return ScheduleSpec(**hyperparameters(node))


def _finish(records: Any, run_dir: Path, logger: Any, note: str | None = None) -> None:
    from eval.summary import summarize, terminal_summary, write_summary

    write_summary(records, run_dir, note)
    if logger is not None:
        logger.finish(records, run_dir, summarize(records, note))
    if not records.empty:
        print(terminal_summary(records, run_dir), flush=True)


def pick_device(device: str | None, model_device: str | None, launcher_target: str, job_num: int | None) -> str:
    """The device string for this job: the top-level ``device`` (``auto`` resolved) or the
    model's; under a launcher that runs several jobs at once on one machine without pinning
    GPUs itself (joblib, submitit's local executor), job ``n`` gets ``cuda:<n mod GPUs>``."""
    import torch

    chosen = resolve_device(device) if device is not None else str(model_device or "cpu")
    local_parallel = any(name in launcher_target for name in LOCAL_PARALLEL_LAUNCHERS)
    if chosen == "cuda" and local_parallel and job_num is not None and torch.cuda.device_count() > 1:
        return f"cuda:{job_num % torch.cuda.device_count()}"
    return chosen


def build_settings(cfg: DictConfig, run_dir: Path, cache_dir: Path | None, device: str) -> Any:
    """The run's :class:`eval.settings.RunSettings` from the composed config (loads nothing)."""
    from hydra.core.hydra_config import HydraConfig

    from eval.identity import checkpoint_identity, model_label
    from eval.settings import RunSettings

    choices = HydraConfig.get().runtime.choices
    model_cfg: dict = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    metric_cfg: dict = OmegaConf.to_container(cfg.metrics, resolve=True)  # type: ignore[assignment]
    task_cfg = hyperparameters(cfg.task) if "task" in cfg else {}
    task = str(task_cfg.pop("name", "reconstruct"))
    dtype = cfg.dtype if cfg.dtype is not None else model_cfg.get("dtype", "unknown")
    if dtype == "auto":
        from eval.validate import adapter_family
        from gnri.models import auto_dtype

        dtype = auto_dtype(adapter_family(model_cfg) or "", device)
    reconstruct = task == "reconstruct"
    from gnri.catalog import resolved_params

    return RunSettings(
        schedule=build_schedule(cfg.schedule), inverter=str(choices.get("inverter")),
        inverter_params=resolved_params(str(cfg.inverter._target_), hyperparameters(cfg.inverter)),
        model=model_label(choices.get("model"), model_cfg),
        schedule_name=choices.get("schedule"), checkpoint=checkpoint_identity(model_cfg), task=task,
        task_params=task_cfg, metrics=tuple(metric_cfg["names"]) if reconstruct else (),
        metric_options=dict(metric_cfg.get("options") or {}) if reconstruct else {},
        device=device, dtype=str(dtype), seed=cfg.seed, guidance_scale=cfg.guidance_scale,
        true_cfg_scale=float(cfg.get("true_cfg_scale", 1.0)), warmup=cfg.warmup,
        repeats=cfg.repeats, batch_size=int(cfg.get("batch_size", 1)),
        time_network=bool(cfg.get("time_network", True)), max_images=cfg.max_images,
        progress=cfg.progress, out_dir=run_dir,
        cache_dir=cache_dir, resume=bool(cfg.get("resume", True)), config=OmegaConf.to_container(cfg, resolve=True),
    )


def load_error(name: Any, err: BaseException) -> str:
    """One line for a model that could not be built: Hydra's instantiation wrapper dropped for its
    cause (a refused pickle folder, a missing component, a folder that is not a pipeline)."""
    from eval.validate import ConfigError

    if isinstance(err, ConfigError):
        return str(err)
    cause = err.__cause__ if err.__cause__ is not None and "instantiat" in type(err).__name__.lower() else err
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    why = lines[0] if lines else type(cause).__name__
    return f"model={name} could not be loaded: {type(cause).__name__}: {why}"


def _adapter_factory(cfg: DictConfig, device: str, multirun: bool) -> Any:
    """A zero-argument builder of the model (called only when a unit is left to compute); a model
    that cannot be built stops a single run with one line (:func:`load_error`, exit 2) before any
    row is written, and in a multirun becomes a BrokenAdapter, so the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from eval.task import BrokenAdapter

    name = HydraConfig.get().runtime.choices.get("model") if HydraConfig.initialized() else cfg.model.get("name")

    def build() -> Any:
        from eval.validate import ConfigError

        overrides: dict[str, str] = {"device": device} if cfg.device is not None or device.startswith("cuda:") else {}
        if cfg.dtype is not None:
            overrides["dtype"] = cfg.dtype
        try:
            adapter = instantiate(cfg.model, **overrides)
            # what the config could not tell before loading (a FLUX transformer built in code or not cached)
            problem = adapter.guidance_problem(cfg.guidance_scale, float(cfg.get("true_cfg_scale", 1.0)))
            if problem:
                raise ConfigError(f"model={name}: {problem}")
            return adapter
        except Exception as err:
            if not multirun:  # a single run: one line and status 2, like a settings mistake
                print(f"run.py: {load_error(name, err)}", file=sys.stderr)
                sys.exit(2)
            log.exception("model %s could not be built; its rows are recorded as failed", cfg.model.get("name"))
            return BrokenAdapter(str(cfg.model.get("name") or "model"), err)

    return build


def validated_dataset(cfg: DictConfig) -> Any:
    """Check the inverter's options, the schedule against the model family, the guidance scales
    against the model, the dataset's path and that the task fits the dataset, loading no model; the dataset's entries. A mistake
    prints one line and exits with status 2 (:mod:`eval.validate`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from hydra.types import RunMode

    from eval import validate
    from eval.tasks import task_class

    choices = HydraConfig.get().runtime.choices
    names = {g: str(choices.get(g)) for g in ("model", "schedule", "inverter", "dataset")}
    try:
        if "_target_" not in cfg.inverter:
            raise validate.ConfigError(f"inverter={names['inverter']}: its config has no _target_")
        validate.check_inverter(names["inverter"], str(cfg.inverter._target_), hyperparameters(cfg.inverter))
        validate.check_model_config(names["model"], cfg.model)
        refusal = method_refusal(cfg)
        if refusal is not None and HydraConfig.get().mode != RunMode.MULTIRUN:
            raise validate.ConfigError(refusal)
        try:
            schedule = build_schedule(cfg.schedule)
        except (ValueError, TypeError) as err:
            raise validate.ConfigError(f"schedule={names['schedule']}: {err}") from None
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        validate.check_schedule(names["model"], model_cfg, names["schedule"], schedule.kind)  # type: ignore[arg-type]
        true_cfg = cfg.get("true_cfg_scale", 1.0)
        validate.check_guidance(names["model"], model_cfg, cfg.guidance_scale, true_cfg)  # type: ignore[arg-type]
        edit_scale = cfg.task.get("edit_guidance_scale") if "task" in cfg and cfg.task.get("name") == "edit" else None
        if edit_scale is not None:
            validate.check_guidance(names["model"], model_cfg, edit_scale, true_cfg,  # type: ignore[arg-type]
                                    option="task.edit_guidance_scale")
        generation_scale = cfg.task.get("generation_guidance_scale") if "task" in cfg else None
        if generation_scale is not None:
            validate.check_guidance(names["model"], model_cfg, generation_scale, true_cfg,  # type: ignore[arg-type]
                                    option="task.generation_guidance_scale")
        validate.check_dataset_config(names["dataset"], cfg.dataset)
        try:
            dataset = instantiate(cfg.dataset)
        except Exception as err:  # noqa: BLE001 - Hydra wraps the loader's own one-line error
            cause = err.__cause__ or err
            raise validate.ConfigError(f"dataset={names['dataset']}: {str(cause).strip().splitlines()[0]}") from None
        task = cfg.task.name if "task" in cfg else "reconstruct"
        try:
            cls = task_class(str(task), cfg.task.get("_target_") if "task" in cfg else None)
            check_options = getattr(cls, "check_options", None)  # a task's own one-line option checks
            if check_options is not None and "task" in cfg:
                check_options(OmegaConf.to_container(cfg.task, resolve=True))
        except ValueError as err:
            raise validate.ConfigError(str(err)) from None
        validate.check_task_fits(str(task), names["dataset"], list(dataset))
        batch = cfg.get("batch_size", 1)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise validate.ConfigError(f"batch_size={batch}: must be an integer >= 1")
        if batch > 1 and task != "reconstruct":
            raise validate.ConfigError(f"batch_size={batch}: batches apply to task=reconstruct only (task={task})")
    except validate.ConfigError as err:
        print(f"run.py: {err}", file=sys.stderr)
        sys.exit(2)
    return dataset


def method_refusal(cfg: DictConfig) -> str | None:
    """Why the run's inverter does not apply to its model's family (``vp``/``flow``, read from the
    model config without loading it) or to its task, from what the method declares
    (:func:`gnri.catalog.inverter_info`), or None. Single run: run.py stops; multirun: skipped rows."""
    from hydra.core.hydra_config import HydraConfig

    from eval import validate

    choices = HydraConfig.get().runtime.choices
    fn = validate.locate(str(cfg.inverter._target_))
    task = str(cfg.task.get("name", "reconstruct")) if "task" in cfg else "reconstruct"
    family = validate.model_family(OmegaConf.to_container(cfg.model, resolve=True))  # type: ignore[arg-type]
    why = validate.family_refusal(fn, family)
    if why is not None:
        return f"inverter={choices.get('inverter')} {why}: model={choices.get('model')}"
    why = validate.task_refusal(fn, task)
    return f"inverter={choices.get('inverter')}: {why}" if why is not None else None


# The command line as typed (before run.py's rewrites), for the interrupt message; set in __main__.
ARGUMENTS: list[str] | None = None
RESUME_COMMAND: str | None = None  # set by main once the run (or sweep) folder is known


def resume_command(args: list[str], folder: str | Path, multirun: bool, script: str = "run.py") -> str:
    """The command that resumes an interrupted run: the original arguments with the run folder
    pinned (``hydra.run.dir=`` for a single run, ``hydra.sweep.dir=`` for a multirun), since the
    default folder is time-stamped and the same command would start afresh in a new one."""
    import shlex

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    kept = [a for a in args if a.lstrip("+").partition("=")[0] != key]
    return " ".join(shlex.quote(a) for a in ["python", script, *kept, f"{key}={Path(folder)}"])


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _cache_dir(cfg: DictConfig, run_dir: Path, sweep_dir: Path | None) -> Path | None:
    """The shared content-keyed cache: ``cache_dir``, else ``.cache`` in the sweep (or run) folder."""
    if not cfg.get("cache", True):
        return None
    default = (sweep_dir if sweep_dir is not None else run_dir) / ".cache"
    return Path(cfg.cache_dir).expanduser().resolve() if cfg.get("cache_dir") else default.resolve()


def _logger(cfg: DictConfig, sweep_dir: Path | None) -> Any:
    """The configured logger (W&B: a sweep's jobs share one group), or None."""
    from hydra.utils import instantiate

    from eval.loggers.sweep_summary import sweep_group_of

    if not (cfg.logger and cfg.logger.get("_target_")):
        return None
    group = {"group": sweep_group_of(str(sweep_dir))} if sweep_dir is not None and cfg.logger.get("group", "") is None else {}
    return instantiate(cfg.logger, **group)


def _run_task(cfg: DictConfig, settings: Any, adapter: Any, dataset: Any, **common: Any) -> Any:
    """The task's table (:func:`eval.tasks.run`), under the configured attention backend."""
    from hydra.utils import instantiate

    from eval.metrics import build_metrics
    from eval.tasks import run
    from gnri.models.attention import attention_backend

    inverter = instantiate(cfg.inverter, _convert_="all")
    metric_cfg: dict = OmegaConf.to_container(cfg.metrics, resolve=True)  # type: ignore[assignment]
    target = cfg.task.get("_target_") if "task" in cfg else None
    with attention_backend(cfg.get("attention") or "default"):
        return run(settings, adapter, inverter, dataset, target=target,
                   metrics=lambda: build_metrics(metric_cfg["names"], metric_cfg.get("options")), **common)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    import signal

    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from eval.distributed import current_shard, local_device
    from eval.records import RESULTS_FILE, read_records
    from eval.task import RefusedAdapter

    hc = HydraConfig.get()
    shard = current_shard()
    run_dir = Path(shard.broadcast(str(Path(hc.runtime.output_dir).resolve())))
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_dir = Path(hc.sweep.dir) if multirun else None
    torch.manual_seed(cfg.seed)
    launcher = str(hc.launcher.get("_target_", "")) if "launcher" in hc else ""
    device = local_device(pick_device(cfg.device, cfg.model.get("device"), launcher,
                                      hc.job.get("num") if multirun else None), shard)
    if device.startswith("cuda") and not torch.cuda.is_available():
        hint = "; add smoke=true to run this preset on its tiny model on the CPU" if cfg.get("paper_preset") else ""
        print(f"run.py: device={device}: no CUDA device on this machine{hint}", file=sys.stderr)
        sys.exit(2)
    dataset_limit(cfg)
    dataset = validated_dataset(cfg)  # every settings mistake stops here, before any model loads
    settings = build_settings(cfg, run_dir, _cache_dir(cfg, run_dir, sweep_dir), device)
    adapter = _adapter_factory(cfg, device, multirun)
    refusal = method_refusal(cfg)  # a multirun only (a single run stopped above): skipped rows, no model
    if refusal is not None:
        adapter = RefusedAdapter(str(hc.runtime.choices.get("model")), ValueError(refusal))
    logger = _logger(cfg, sweep_dir) if shard.is_main else None
    global RESUME_COMMAND
    RESUME_COMMAND = resume_command(ARGUMENTS if ARGUMENTS is not None else sys.argv[1:],
                                    sweep_dir.resolve() if sweep_dir is not None else run_dir, multirun,
                                    sys.argv[0] if sys.argv[0].endswith("run.py") else "run.py")
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a cluster's timeout: finish like Ctrl-C
    try:
        records = _run_task(cfg, settings, adapter, dataset, shard=shard,
                            on_rows=logger.log_rows if logger is not None else None)
    except KeyboardInterrupt:
        if shard.is_main:
            _finish(read_records(run_dir / RESULTS_FILE), run_dir, logger,
                    f"Interrupted: finished units only; to resume, run: {RESUME_COMMAND}")
        raise
    if shard.is_main:
        _finish(records, run_dir, logger)


if __name__ == "__main__":
    from eval.presets import smoke_arguments

    ARGUMENTS = list(sys.argv[1:])
    arguments, error = smoke_arguments(sys.argv[1:], CONF_DIR)
    sys.argv[1:] = default_schedule(inverter_overrides(arguments))
    error = error or register_configs(_extra_conf_dirs(sys.argv[1:])) or check_group_choices(sys.argv[1:])
    if error:
        print(error, file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except KeyboardInterrupt as interrupt:
        why = f" ({interrupt})" if str(interrupt) else ""
        again = f"to resume, run: {RESUME_COMMAND}" if RESUME_COMMAND else "run the same command again to resume"
        print(f"run.py: interrupted{why}; finished units are kept in results.csv: {again}", file=sys.stderr)
        sys.exit(130)
