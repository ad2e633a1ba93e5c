"""Check a run's settings before anything heavy loads: each mistake is one line, not a row per image.

:func:`check_inverter` first checks the target (:func:`inverter_function`: importable, a callable
with the inverter signature), then reads its signature: an unknown key, a value of the wrong
type (from the annotation: int, float, bool, str, ``Literal`` choices, ``X | None``, sequences)
or out of its range (:data:`RANGES`, by parameter meaning) is a :class:`ConfigError`.
:func:`check_schedule` refuses a schedule kind the model's family cannot use (read from the model
config without loading it), :func:`check_dataset_config` a missing or absent ``dataset.path``,
and :func:`check_task_fits` a task the dataset does not fit (``task=edit`` without edit pairs), and
:func:`check_guidance` a guidance scale the model cannot use (``guidance_scale`` on a FLUX
transformer without guidance embedding, ``true_cfg_scale`` on a UNet).
:func:`family_refusal` and :func:`task_refusal` say why a method does not apply to a model family
or a task (from :func:`gnri.catalog.inverter_info`).
Per-image problems (a broken file, a divergence) stay rows; these are settings.
"""

from __future__ import annotations

import inspect
import math
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

from gnri.catalog import info_of, resolve
from gnri.models.base import FLOW_KINDS, VP_KINDS
from gnri.models.families import MATHS_FAMILIES, NETWORK_KINDS


class ConfigError(ValueError):
    """A setting that cannot run; its message is one line naming the option and the value."""


# Parameter name -> (lowest, highest, whether the lowest is allowed): what each value means
# bounds it, the same for every inverter that takes it (None: unbounded on that side).
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    **{name: (1, None, True) for name in (
        "max_iters", "window", "n_iters", "newton_iters", "krylov_dim", "num_inner_steps", "num_renoise_steps",
        "plateau_patience", "numel")},
    **{name: (0, None, True) for name in (
        "lam", "eta", "tol", "regularization", "early_stop", "warmup_iters", "max_first_step_renoise_steps",
        "plateau_threshold", "first_step_max_sigma", "first_step_tol")},
    **{name: (0, None, False) for name in ("lr", "step_size", "fd_step")},
    **{name: (0, 1, False) for name in ("damping", "mix_weight", "lr_decay", "plateau_factor")},
    "interp": (0, 1, True),
    **{name: (1, None, True) for name in ("omega_max", "evals_per_step", "first_step_evals")},  # gnri_2x
    # flow inverters (rf_inversion, uni_inv, ftedit); rf_inversion's eta (shared name, above) is also
    # checked <= 1 by the inverter itself
    **{name: (0, 1, True) for name in ("gamma", "start", "stop")},
    **{name: (0, None, True) for name in ("omega", "seed", "num_fixpoint_steps")},
    # edit_friendly (skip: a fraction of the steps, < 1 checked by the inverter), flowedit
    **{name: (1, None, True) for name in ("n_max", "n_avg")},
    "n_min": (0, None, True),
    "skip": (0, 1, True),
}
# Loader family (a model config's family key: sd | sdxl | flux) -> maths family (vp | flow), from the
# one table of family facts (gnri.models.families).
FAMILY_OF = MATHS_FAMILIES


def locate(target: str) -> Any:
    """The object a ``_target_`` string names (``pkg.mod.attr`` or ``pkg.mod:attr``: :func:`gnri.catalog.resolve`)."""
    return resolve(target)


def _type_ok(value: Any, hint: Any) -> tuple[bool, str]:
    """Whether ``value`` fits the annotation ``hint``, and the hint in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args, "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        results = [_type_ok(value, a) for a in args]
        return any(ok for ok, _ in results), " or ".join(words for _, words in results)
    if hint is type(None):
        return value is None, "null"
    if hint is bool:
        return isinstance(value, bool), "true or false"
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    if hint is str:
        return isinstance(value, str), "a string"
    if origin in (Sequence, list, tuple, typing.Sequence) or hint in (list, tuple):
        return isinstance(value, (list, tuple)), "a list"
    return True, str(hint)


def _range_error(name: str, value: Any) -> str | None:
    if name not in RANGES or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, high, low_ok = RANGES[name]
    if isinstance(value, float) and math.isnan(value):
        return "must be a number, got nan"
    if low is not None and (value < low or (value == low and not low_ok)):
        return f"must be {'>=' if low_ok else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
    if high is not None and value > high:
        return f"must be <= {high:g}"
    return None


INVERTER_SIGNATURE = "(denoiser, x0, grid, cond, *, options...)"


def inverter_function(name: str, target: str) -> Callable[..., Any]:
    """The callable ``target`` names, checked to have the inverter signature
    :data:`INVERTER_SIGNATURE`; a ConfigError (one line) when it does not import, is not callable,
    or takes other arguments."""
    try:
        fn = locate(target)
    except (ImportError, AttributeError, ValueError) as err:
        why = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(f"inverter={name}: _target_ {target} cannot be imported: {type(err).__name__}: {why}") from None
    if not callable(fn):
        raise ConfigError(f"inverter={name}: _target_ {target} is a {type(fn).__name__}, not a callable "
                          f"inverter {INVERTER_SIGNATURE}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fn  # a builtin without a readable signature: trusted
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = any(p.kind is p.VAR_POSITIONAL for p in params)
    required = [p.name for p in positional[4:] if p.default is p.empty] + [
        p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if (len(positional) < 4 and not star) or required:
        shown = ", ".join(p.name if p.kind is not p.KEYWORD_ONLY else f"*{p.name}" for p in params)
        raise ConfigError(f"inverter={name}: _target_ {target} takes ({shown}); an inverter takes "
                          f"{INVERTER_SIGNATURE}, every option keyword-only with a default")
    return fn


def _annotations(fn: Any) -> dict[str, Any]:
    """The resolved annotations of an inverter: a function, a ``functools.partial`` of one, or a
    callable object (its ``__call__``); {} where they cannot be resolved (then types go unchecked)."""
    from gnri.catalog import unwrap

    for candidate in (fn, unwrap(fn), getattr(type(fn), "__call__", None)):
        if candidate is None:
            continue
        try:
            hints = typing.get_type_hints(candidate)
        except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is not checked
            continue
        if hints:
            return hints
    return {}


def check_inverter(name: str, target: str, params: Mapping[str, Any]) -> None:
    """The target (:func:`inverter_function`), then unknown keys, wrong types and out-of-range values
    of ``inverter=<name>``'s hyperparameters."""
    from gnri.catalog import option_parameters, takes_any_option

    fn: Callable[..., Any] = inverter_function(name, target)
    options = {p.name: p for p in option_parameters(fn)}
    any_key = takes_any_option(fn)
    hints = _annotations(fn)
    for key, value in params.items():
        if key not in options and not any_key:
            valid = ", ".join(options) or "(none)"
            raise ConfigError(f"inverter={name}: unknown option inverter.{key}; valid: {valid}")
        ok, words = _type_ok(value, hints.get(key, Any))
        if not ok:
            raise ConfigError(f"inverter={name}: inverter.{key}={value!r} must be {words}")
        problem = _range_error(key, value)
        if problem:
            raise ConfigError(f"inverter={name}: inverter.{key}={value!r} {problem}")


def adapter_family(model_cfg: Mapping[str, Any]) -> str | None:
    """``sd``, ``sdxl`` or ``flux`` from a model config without loading it (a local folder's
    ``model_index.json`` when the config names a ``path``; None: cannot tell)."""
    for key in ("family", "model"):
        value = model_cfg.get(key)
        if isinstance(value, str) and value in FAMILY_OF:
            return value
    path = model_cfg.get("path")
    if isinstance(path, str) and path and path != "???":
        from gnri.models import folder_family

        try:
            return folder_family(path)
        except FileNotFoundError as err:
            raise ConfigError(_missing_index(Path(path).expanduser()) or str(err)) from None
        except (OSError, ValueError) as err:
            raise ConfigError(str(err)) from None
    return None


def _missing_index(folder: Path) -> str | None:
    """Where a folder without ``model_index.json`` holds its pipeline one level down (a download that
    keeps it in ``pipeline/``, say): the message naming the folder to use, or None."""
    if not folder.is_dir():
        return None
    try:
        inner = sorted(p.parent for p in folder.glob("*/model_index.json"))
    except OSError:
        return None
    if not inner:
        return None
    return (f"model.path: no model_index.json in {folder}; {inner[0]} has one: use model.path={inner[0]}")


def model_family(model_cfg: Mapping[str, Any]) -> str | None:
    """``vp`` or ``flow`` from a model config without loading it (None: cannot tell)."""
    family = adapter_family(model_cfg)
    return FAMILY_OF[family] if family else None


def check_model_config(model_name: str, model_cfg: Any) -> None:
    """A required ``model.path`` that is missing, or a local folder that is not a pipeline."""
    from omegaconf import OmegaConf

    if "path" in model_cfg.keys() and OmegaConf.is_missing(model_cfg, "path"):
        raise ConfigError(f"model={model_name} needs model.path=<a local diffusers pipeline folder>")
    adapter_family(OmegaConf.to_container(model_cfg, resolve=True))  # type: ignore[arg-type]
    from gnri.models.runtime import check_runtime_config  # compile, offload, ... (one line, before loading)

    try:
        check_runtime_config(OmegaConf.to_container(model_cfg, resolve=True))  # type: ignore[arg-type]
    except ValueError as err:
        raise ConfigError(f"model={model_name}: {err}") from None


def check_schedule(model_name: str, model_cfg: Mapping[str, Any], schedule_name: str, kind: str) -> None:
    """A schedule kind the model's family cannot use."""
    family = model_family(model_cfg)
    if family is None:
        return
    allowed = VP_KINDS if family == "vp" else FLOW_KINDS
    if kind not in allowed:
        names = "flow4, flow8" if family == "flow" else "ddim50, ddim10, euler4_trailing, ..."
        raise ConfigError(f"schedule={schedule_name} (kind {kind}) does not apply to model={model_name} "
                          f"({family} family); its kinds: {', '.join(allowed)} (e.g. schedule={names})")


def transformer_guidance_embeds(model_cfg: Mapping[str, Any]) -> bool | None:
    """Whether a FLUX model config's transformer has a guidance embedding, read without loading
    it: ``transformer/config.json`` of the local folder it names (``pretrained``/``folder``/
    ``path``, or its factory's ``weights_location``), or of a hub id already in the local
    Hugging Face cache. None: cannot tell (a model built in code, a hub id not downloaded)."""
    import json

    from eval.identity import PATH_KEYS

    folder: Path | None = None
    for key in PATH_KEYS:
        value = model_cfg.get(key)
        if not isinstance(value, (str, Path)) or not str(value) or str(value) == "???":
            continue
        path = Path(value).expanduser()
        if path.exists():
            folder = path
            break
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(value), "transformer/config.json", revision=model_cfg.get("revision"))
        except Exception:  # noqa: BLE001 - not a repo id, no cache: unknown
            cached = None
        if isinstance(cached, str):
            folder = Path(cached).parent.parent
        break
    if folder is None:
        try:
            where = getattr(locate(str(model_cfg.get("_target_", ""))), "weights_location", None)
        except (ImportError, AttributeError, ValueError):
            where = None
        if callable(where):
            folder = Path(where(**{k: v for k, v in model_cfg.items() if not k.startswith("_")}))
    config = folder / "transformer" / "config.json" if folder is not None else None
    if config is None or not config.is_file():
        return None
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("guidance_embeds", False))
    except (OSError, ValueError):
        return None


def check_guidance(model_name: str, model_cfg: Mapping[str, Any], guidance_scale: Any, true_cfg_scale: Any,
                   option: str = "guidance_scale") -> None:
    """A guidance scale the model cannot use (:func:`gnri.models.base.guidance_error`, as diffusers
    means each scale per family); ``option`` names the guidance_scale setting in the message
    (``task.edit_guidance_scale`` for edits). A FLUX transformer read as unknown is left to the adapter."""
    from gnri.models.base import guidance_error

    family = adapter_family(model_cfg)
    kind = None if family is None else NETWORK_KINDS[family]
    embeds = transformer_guidance_embeds(model_cfg) if kind == "flux" else None
    problem = guidance_error(kind, embeds, guidance_scale, true_cfg_scale)
    if problem:
        if option != "guidance_scale":
            problem = problem.replace("guidance_scale=", f"{option}=", 1)
        raise ConfigError(f"model={model_name}: {problem}")


# What to download for a dataset the user brings, and where to point the config (one line each).
DOWNLOAD_HINTS = {
    "coco": "get COCO 2017 val (annotations_trainval2017.zip and val2017.zip from https://cocodataset.org/#download) "
            "and set dataset.path=<coco>/annotations/captions_val2017.json dataset.images=<coco>/val2017",
    "piebench": "get PIE-Bench (the form linked from https://github.com/cure-lab/PnPInversion) and set "
                "dataset.path=<PIE-Bench>/data (the folder with mapping_file.json and annotation_images/)",
    "concepts": "give a folder <path>/{head,medium,tail}/<concept>/<images> of real images per concept "
                "(e.g. ImageNet-1k classes binned by LAION-2B frequency) as dataset.path=<path>",
}


def check_dataset_config(dataset_name: str, dataset_cfg: Any) -> None:
    """A required ``dataset.path`` that is missing (``???``) or names nothing on disk, or a given
    ``dataset.images`` folder that does not exist; the message says what to download where known."""
    from omegaconf import OmegaConf

    if "path" not in dataset_cfg.keys():
        return
    hint = f": {DOWNLOAD_HINTS[dataset_name]}" if dataset_name in DOWNLOAD_HINTS else ""
    if OmegaConf.is_missing(dataset_cfg, "path"):
        raise ConfigError(f"dataset={dataset_name} needs dataset.path=<folder or file> "
                          f"(see conf/dataset/{dataset_name}.yaml){hint}")
    for key in ("path", "images"):
        value = dataset_cfg.get(key) if key in dataset_cfg.keys() else None
        if value is not None and not Path(str(value)).expanduser().exists():
            raise ConfigError(f"dataset={dataset_name}: dataset.{key}={value} does not exist{hint}")


def check_task_fits(task: str, dataset_name: str, entries: Sequence[Any]) -> None:
    """``task=edit`` needs edit pairs; ``task=interpolate`` two entries; any task one entry."""
    if not entries:
        raise ConfigError(f"dataset={dataset_name} has no entries")
    if task == "edit" and not any(getattr(e, "target_caption", None) for e in entries):
        raise ConfigError(f"task=edit needs edit pairs, and dataset={dataset_name} has none "
                          "(dataset=world_edits, dataset=piebench, or dataset=edit_folder with your edits.jsonl)")
    if task == "interpolate" and len(entries) < 2:
        raise ConfigError(f"task=interpolate pairs consecutive entries; dataset={dataset_name} has {len(entries)}")


def task_refusal(inverter: Any, task: str) -> str | None:
    """Why ``inverter`` does not apply to ``task``, or None: its declared tasks
    (:func:`gnri.catalog.inverter_info`; FlowEdit: ``("edit",)``, ``task_note`` says why); the
    harness records such a run's rows as ``skipped`` with this reason."""
    info = info_of(inverter)
    if info.tasks is None or task in info.tasks:
        return None
    note = info.task_note
    return f"{note + '; ' if note else ''}task={task} does not apply (it runs for task={', '.join(info.tasks)})"


def family_refusal(inverter: Any, family: str | None) -> str | None:
    """Why ``inverter`` does not apply to a model of ``family`` (``vp``/``flow``; None: unknown), or None."""
    info = info_of(inverter)
    if family is None or family in info.families:
        return None
    return f"does not apply to the {family} family (it runs on {', '.join(info.families)} models)"
