"""The method catalog: every inverter name, where it comes from, its defaults and what it declares.

One namespace, three sources (a plug-in name that clashes with another is refused, one line):

- ``shipped``: this project's entry points in group :data:`GROUP` (``gnri_bench.inverters``), read
  from the ``pyproject.toml`` beside the package when there is one (a clone, installed or not: the
  file is the truth even before a reinstall refreshes the metadata), else from the installed
  ``gnri-bench`` distribution's metadata (a wheel, which ships no pyproject.toml);
- ``entry point of <dist>``: every other installed distribution's entry points in that group;
- ``config folder <dir>``: ``<dir>/inverter/<name>.yaml`` (``_target_`` + values) of the folders
  a caller names (run.py's ``--config-dir`` / ``hydra.searchpath``).

Why entry points: they are Python's standard plug-in registry, so a shipped method is registered
exactly as a plug-in is, and reading this project's own table from ``pyproject.toml`` keeps one
list (no copy to keep equal) that works in a clone nobody installed.

An entry point names an inverter function, or a :func:`functools.partial` of one: a named variant,
whose keywords are its overrides (``fixed_point3 = partial(invert, max_iters=3)``).
Hyperparameter defaults come from the function's signature alone; :meth:`Method.defaults` is the
signature's keyword-only defaults with the overrides applied. What a method declares about itself
(families, tasks, exactness, what it keeps) is :func:`inverter_info`, set next to the function.
Entry-point discovery is cached (:func:`entry_point_methods`; ``cache_clear()`` to re-read).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

GROUP = "gnri_bench.inverters"
DIST = "gnri-bench"
SHIPPED = "shipped"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FAMILIES = ("vp", "flow")


class CatalogError(ValueError):
    """A method that cannot be resolved (unknown name, clash, not importable); one line."""


# ---------------------------------------------------------------- declared metadata


@dataclass(frozen=True)
class InverterInfo:
    """What an inverter declares about itself (:func:`inverter_info`).

    ``families``: the grid families it applies to (``vp``, ``flow``); ``tasks``: the harness tasks
    it runs for (None: all), ``task_note`` why not the others; ``batch_separable``: each image's
    iterates depend on that image alone; ``exact_reconstruction``: reconstruction returns the input
    latent by construction (up to round-off); ``keeps``: what it keeps to reconstruct, in words.
    """

    families: tuple[str, ...] = FAMILIES
    tasks: tuple[str, ...] | None = None
    task_note: str = ""
    batch_separable: bool = True
    exact_reconstruction: bool = False
    keeps: str = "1 latent"


def inverter_info(
    *, families: Iterable[str] = FAMILIES, tasks: Iterable[str] | None = None, task_note: str = "",
    batch_separable: bool = True, exact_reconstruction: bool = False, keeps: str = "1 latent",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: declare an inverter's :class:`InverterInfo` (stored as ``fn.inverter_info``)."""
    info = InverterInfo(tuple(families), None if tasks is None else tuple(tasks), task_note,
                        batch_separable, exact_reconstruction, keeps)
    unknown = set(info.families) - set(FAMILIES)
    if unknown or not info.families:
        raise ValueError(f"inverter_info: families must be among {FAMILIES}, got {info.families}")

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.inverter_info = info  # type: ignore[attr-defined]
        return fn

    return mark


def unwrap(fn: Any) -> Any:
    """The function under any :func:`functools.partial` layers."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def info_of(fn: Any) -> InverterInfo:
    """The declared :class:`InverterInfo` of an inverter (or a partial of one); undeclared: the
    defaults, with the older hand-set attributes (``tasks``, ``task_note``, ``batch_separable``) read."""
    base = unwrap(fn)
    info = getattr(base, "inverter_info", None)
    if isinstance(info, InverterInfo):
        return info
    tasks = getattr(base, "tasks", None)
    return InverterInfo(tasks=None if tasks is None else tuple(tasks), task_note=str(getattr(base, "task_note", "")),
                        batch_separable=bool(getattr(base, "batch_separable", True)))


# ---------------------------------------------------------------- dotted paths


def resolve(target: str) -> Any:
    """The object ``target`` names: ``pkg.mod.attr`` or the entry-point form ``pkg.mod:attr.sub``.

    Raises ImportError/AttributeError as Python does (callers turn them into one-line errors).
    """
    if ":" in target:
        module, _, attrs = target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attrs.split("."):
            obj = getattr(obj, part)
        return obj
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and not module_name.startswith(err.name):
                raise  # the module exists but imports something missing
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    return importlib.import_module(target)


def dotted(target: str) -> str:
    """``pkg.mod:attr`` -> ``pkg.mod.attr`` (Hydra's ``_target_`` form); dotted paths unchanged."""
    return target.replace(":", ".")


# ---------------------------------------------------------------- methods


def _plain(value: Any) -> Any:
    """A default as a config value: tuples become lists (as a YAML file gives them)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def option_parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    """An inverter's options: its keyword-only parameters, and any positional-or-keyword parameter
    after the four inputs ``(denoiser, x0, grid, cond)`` (a plug-in may write ``scale=1.0`` there)."""
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    after_inputs = [p for p in positional[4:] if p.kind is p.POSITIONAL_OR_KEYWORD]
    return after_inputs + [p for p in params if p.kind is p.KEYWORD_ONLY]


def takes_any_option(fn: Callable[..., Any]) -> bool:
    """Whether an inverter takes ``**kwargs`` (then any ``inverter.<key>=`` reaches it)."""
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def signature_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """The options of an inverter (:func:`option_parameters`) that have a default, a partial's
    keywords applied."""
    return {p.name: _plain(p.default) for p in option_parameters(fn) if p.default is not inspect.Parameter.empty}


@dataclass(frozen=True)
class Method:
    """One catalog entry: ``name``, the ``target`` it resolves (dotted or ``mod:attr``), values that
    differ from the signature (``overrides``) and where it was declared (``origin``)."""

    name: str
    target: str
    origin: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., Any]:
        """The inverter object (a function, or a partial of one for a named variant)."""
        try:
            return resolve(self.target)
        except (ImportError, AttributeError, ValueError) as err:
            raise CatalogError(f"inverter {self.name}: cannot import {self.target} ({self.origin}): "
                               f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None

    def function(self) -> Callable[..., Any]:
        """The inverter function itself (any partial unwrapped)."""
        return unwrap(self.load())

    def defaults(self) -> dict[str, Any]:
        """Every keyword-only hyperparameter with its value for this name: signature, then overrides."""
        return {**signature_defaults(self.load()), **{k: _plain(v) for k, v in self.overrides.items()}}

    def bound_overrides(self) -> dict[str, Any]:
        """The values this name sets over the bare function's signature (a variant's partial keywords
        and the config's values), as a config file would hold them."""
        obj, layers = self.load(), []
        while isinstance(obj, functools.partial):
            layers.append(dict(obj.keywords))
            obj = obj.func
        merged: dict[str, Any] = {}
        for layer in reversed(layers):
            merged.update(layer)
        return {k: _plain(v) for k, v in {**merged, **self.overrides}.items()}

    def info(self) -> InverterInfo:
        return info_of(self.load())

    def doc(self) -> str:
        """The first docstring line of the inverter function."""
        return first_doc_line(self.function())


def first_doc_line(obj: Any) -> str:
    """The first non-empty line of ``obj``'s docstring ('' if none)."""
    lines = [line.strip() for line in (getattr(obj, "__doc__", None) or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def _pyproject_entries(path: Path = PYPROJECT) -> dict[str, str] | None:
    """This project's ``[project.entry-points."gnri_bench.inverters"]`` table, or None without a file."""
    if not path.is_file():
        return None
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            return None
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if data.get("project", {}).get("name") != DIST:
        return None
    return dict(data["project"].get("entry-points", {}).get(GROUP, {}))


@functools.lru_cache(maxsize=None)
def entry_point_methods() -> tuple[Method, ...]:
    """Shipped and installed plug-in methods, by name, refusing clashes (cached: ``cache_clear()``)."""
    from importlib.metadata import entry_points

    shipped = _pyproject_entries()
    found: dict[str, Method] = {}
    if shipped is not None:
        found = {name: Method(name, value, SHIPPED) for name, value in shipped.items()}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        own = dist.replace("_", "-").lower() == DIST
        if own and shipped is not None:
            continue  # the clone's pyproject.toml is the truth (installed metadata may be stale)
        origin = SHIPPED if own else f"entry point of {dist}"
        if ep.name in found:
            if found[ep.name].target == ep.value and found[ep.name].origin == origin:
                continue  # the same distribution seen twice on sys.path
            raise CatalogError(f"inverter {ep.name}: the {origin} ({ep.value}) clashes with the "
                               f"{found[ep.name].origin} one ({found[ep.name].target}); rename the plug-in")
        found[ep.name] = Method(ep.name, ep.value, origin)
    return tuple(found[name] for name in sorted(found))


def folder_methods(config_dirs: Iterable[str | Path]) -> tuple[Method, ...]:
    """The ``inverter/<name>.yaml`` files of user config folders as methods (their values as overrides)."""
    import yaml

    found = []
    for folder in config_dirs:
        for path in sorted((Path(folder) / "inverter").glob("*.yaml")):
            node = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
                raise CatalogError(f"{path}: an inverter config needs _target_: <module.function>")
            values = {k: v for k, v in node.items() if not str(k).startswith("_") and k != "defaults"}
            found.append(Method(path.stem, node["_target_"], f"config folder {Path(folder)}", values))
    return tuple(found)


def methods(config_dirs: Iterable[str | Path] = ()) -> dict[str, Method]:
    """Every method by name: shipped, installed plug-ins and the given config folders' ``inverter/``
    files (a folder file may not reuse a shipped or plug-in name: CatalogError, one line)."""
    out = {m.name: m for m in entry_point_methods()}
    for method in folder_methods(config_dirs):
        if method.name in out:
            other = out[method.name]
            raise CatalogError(f"inverter {method.name}: {method.origin}/inverter/{method.name}.yaml clashes "
                               f"with the {other.origin} method of that name; rename the file")
        out[method.name] = method
    return dict(sorted(out.items()))


def method(name: str, config_dirs: Iterable[str | Path] = ()) -> Method:
    """The catalog entry of ``name``; CatalogError listing the valid names if there is none."""
    known = methods(config_dirs)
    if name not in known:
        raise CatalogError(f"gnri: unknown method {name!r}; valid names: {', '.join(known)}")
    return known[name]


def method_entry(name: str, config_dirs: Iterable[str | Path] = ()) -> tuple[Callable[..., Any], dict[str, Any]]:
    """(inverter function, a fresh dict of this name's hyperparameters); CatalogError if unknown."""
    entry = method(name, config_dirs)
    return entry.function(), entry.defaults()


def resolved_params(target: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A config's complete hyperparameters: the target's signature defaults, then ``values``."""
    try:
        defaults = signature_defaults(resolve(target))
    except (ImportError, AttributeError, ValueError, TypeError):
        defaults = {}
    return {**defaults, **dict(values)}


__all__ = [
    "CatalogError", "GROUP", "InverterInfo", "Method", "dotted", "entry_point_methods", "first_doc_line",
    "folder_methods", "info_of", "inverter_info", "method", "method_entry", "methods", "resolve", "resolved_params",
    "signature_defaults", "unwrap",
]
