"""Run the inversion benchmark: the Hydra entry point, and the only file that knows Hydra.

    python run.py                                        # conf/config.yaml defaults
    python run.py inverter=fixed_point schedule.num_steps=4 max_images=2
    python run.py -m inverter=ddim,fixed_point model=tiny_sd schedule=ddim10,ddim4
    python run.py task=edit                              # editing: the embedded world's edit pairs
    python run.py task=exact                             # the ground-truth (known noise) track

Builds plain objects from the config groups (model -> adapter, schedule -> ScheduleSpec,
inverter -> a partial of ``invert``, dataset -> entries, metrics -> ImageMetric list, logger),
calls :func:`eval.harness.evaluate` (``task=reconstruct``, the default) or, for ``task=edit``,
``exact`` or ``interpolate``, the loops of :mod:`eval.edit_harness` (:func:`run_task`), and
writes ``results.csv``, ``provenance.json`` and ``summary.md`` into the Hydra run folder (one
folder per job in a multirun). The top-level ``device`` (``auto``: cuda if available, else cpu)
and ``dtype`` override the model config's own ``device``/``dtype``; set either to ``null`` to
keep the model config's value.
A group choice that names no ``conf/<group>/<name>.yaml`` stops with a one-line error. In a
multirun, a model that cannot be built (no weights, no network) does not stop the sweep: its
job records every image as ``failed`` with the reason and the next job runs.
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
TASKS = ("reconstruct", "edit", "exact", "interpolate")
META_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
log = logging.getLogger("run")


def config_names(group: str, conf_dirs: Iterable[Path] = (CONF_DIR,)) -> list[str]:
    """The names (yaml stems) a config group offers, over the given config folders."""
    return sorted({p.stem for d in conf_dirs for p in (Path(d) / group).glob("*.yaml")})


def _extra_conf_dirs(args: list[str]) -> list[Path]:
    """Folders added with ``--config-dir``/``-cd`` (Hydra searches them too)."""
    dirs = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    return dirs


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
        valid = config_names(o.key_or_group, dirs)
        for name in names:
            if name not in valid and name != "null":
                where = f"conf/{o.key_or_group}/{name}.yaml"
                return (
                    f"run.py: unknown {o.key_or_group} {name!r} ({where} not found); "
                    f"valid: {', '.join(valid) or '(none)'}"
                )
    return None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else unchanged."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def model_overrides(device: str | None, dtype: str | None) -> dict[str, str]:
    """The top-level ``device``/``dtype`` as model-constructor overrides (None: keep the model's)."""
    out = {}
    if device is not None:
        out["device"] = resolve_device(device)
    if dtype is not None:
        out["dtype"] = dtype
    return out


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
    from eval.summary import summarize, write_summary

    write_summary(records, run_dir, note)
    if logger is not None:
        logger.finish(records, run_dir, summarize(records, note))


def run_task(task: str, node: DictConfig, adapter: Any, schedule: Any, inverter: Any, inverter_name: str,
             dataset: Any, warmup: int, **common: Any) -> Any:
    """``task=edit|exact|interpolate``: the loops of :mod:`eval.edit_harness` with the task's options."""
    from eval import edit_harness

    options = hyperparameters(node)
    if task == "edit":
        from eval.world_data import world_dir
        from eval.metrics.clip_score import CLIPScore

        clip = dict(options.get("clip") or {})
        if clip.get("weights") == "auto":
            clip["weights"] = str(world_dir() / "clip")
        settings = edit_harness.EditSettings(
            options.get("editor", "prompt_swap"), options.get("edit_guidance_scale"),
            options.get("negative_prompt", ""), dict(options.get("p2p") or {}),
        )
        return edit_harness.evaluate_edits(
            adapter, schedule, inverter, inverter_name, dataset, settings, clip=CLIPScore(**clip),
            lpips_net=options.get("lpips_net", "alex"), warmup=warmup,
            save_images=bool(options.get("save_images", True)), **common,
        )
    if task == "exact":
        return edit_harness.evaluate_exact(
            adapter, schedule, inverter, inverter_name, dataset, vae_roundtrip=bool(options.get("vae_roundtrip")),
            **common,
        )
    if task == "interpolate":
        return edit_harness.evaluate_interpolation(
            adapter, schedule, inverter, inverter_name, dataset, num_points=int(options.get("num_points", 7)),
            lpips_net=options.get("lpips_net", "alex"), **common,
        )
    raise ValueError(f"run.py: task.name must be one of {TASKS}, got {task!r}")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import instantiate

    from eval.harness import BrokenAdapter, evaluate
    from eval.metrics import build_metrics
    from eval.records import RESULTS_FILE, read_records
    from gnri.models.attention import attention_backend

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    choices = hc.runtime.choices
    torch.manual_seed(cfg.seed)
    try:
        adapter = instantiate(cfg.model, **model_overrides(cfg.device, cfg.dtype))
    except Exception as err:
        if hc.mode != RunMode.MULTIRUN:
            raise
        log.exception("model %s could not be built; its rows are recorded as failed", choices.get("model"))
        adapter = BrokenAdapter(str(choices.get("model")), err)
    schedule = build_schedule(cfg.schedule)
    inverter = instantiate(cfg.inverter, _convert_="all")
    dataset = instantiate(cfg.dataset)
    metric_cfg: dict = OmegaConf.to_container(cfg.metrics, resolve=True)  # type: ignore[assignment]
    metrics = build_metrics(metric_cfg["names"], metric_cfg.get("options"))
    logger = instantiate(cfg.logger) if cfg.logger and cfg.logger.get("_target_") else None
    task = cfg.task.name if "task" in cfg else "reconstruct"
    common: dict[str, Any] = {
        "model_name": choices.get("model"), "schedule_name": choices.get("schedule"), "seed": cfg.seed,
        "guidance_scale": cfg.guidance_scale, "max_images": cfg.max_images, "out_dir": run_dir,
        "inverter_params": hyperparameters(cfg.inverter), "config": OmegaConf.to_container(cfg, resolve=True),
        "progress": cfg.progress, "on_rows": logger.log_rows if logger is not None else None,
    }
    try:
        with attention_backend(cfg.get("attention") or "default"):
            if task == "reconstruct":
                records = evaluate(
                    adapter, schedule, inverter, choices.get("inverter"), dataset, metrics, warmup=cfg.warmup,
                    repeats=cfg.repeats, **common,
                )
            else:
                records = run_task(task, cfg.task, adapter, schedule, inverter, choices.get("inverter"), dataset,
                                   warmup=cfg.warmup, **common)
    except KeyboardInterrupt:
        _finish(read_records(run_dir / RESULTS_FILE), run_dir, logger, "Interrupted: finished images only.")
        raise
    _finish(records, run_dir, logger)


if __name__ == "__main__":
    error = check_group_choices(sys.argv[1:])
    if error:
        print(error, file=sys.stderr)
        sys.exit(2)
    main()
