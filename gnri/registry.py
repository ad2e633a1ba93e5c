"""The library's names for inverters and schedules: the same names as the harness's config groups.

``METHODS[name] = (target, defaults)`` mirrors ``conf/inverter/<name>.yaml`` (``_target_`` and its
hyperparameters) and ``SCHEDULES[name]`` mirrors ``conf/schedule/<name>.yaml``, so
``gnri.invert(..., method="fixed_point3")`` runs exactly what ``run.py inverter=fixed_point3`` runs.
The copy is here because ``conf/`` is not part of the installed package; a test asserts that
both stay equal to the YAML files. Values are returned as fresh copies: nothing here is mutated.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any, Callable

# name -> (dotted path of the inverter function, its hyperparameters as in conf/inverter/<name>.yaml)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "anderson": ("baselines.anderson.invert", {
        "window": 3, "max_iters": 6, "tol": None, "damping": 1.0, "regularization": 1.0e-10, "keep_best": False}),
    "ddim": ("baselines.ddim.invert", {"timestep": "dst"}),
    "edict": ("baselines.edict.invert", {"mix_weight": 0.93, "leapfrog": True, "coupling": "auto"}),
    "edit_friendly": ("baselines.edit_friendly.invert", {"eta": 1.0, "skip": 0.36, "zero_last": False, "seed": 0}),
    "fireflow": ("baselines.fireflow.invert", {"reuse": True}),
    "fixed_point": ("baselines.fixed_point.invert", {"max_iters": 30, "tol": None, "keep_best": False}),
    "fixed_point3": ("baselines.fixed_point.invert", {"max_iters": 3, "tol": None, "keep_best": False}),
    "flowedit": ("baselines.flowedit.invert", {"n_max": 24, "n_min": 0, "n_avg": 1, "seed": 0}),
    "ftedit": ("baselines.ftedit.invert", {
        "num_fixpoint_steps": 2, "average_range": [0, 5], "residual": "source"}),
    "gnri": ("gnri.methods.gnri.invert", {
        "lam": 0.1, "max_iters": 2, "tol": 1.0e-4, "step_rule": "min_norm", "eta": 1.0e-3, "prior_norm": "l2",
        "prior_mean": "auto", "prior_weight": "auto", "start": "previous", "keep_best": True, "output": "f"}),
    "gnri_aa": ("gnri.methods.anderson.invert", {
        "lam": 0.0, "window": 3, "max_iters": 3, "tol": 1.0e-4, "regularization": 1.0e-10, "output": "z",
        "prior_mean": "auto", "prior_weight": "auto", "start": "x"}),
    "gnri_2x": ("gnri.methods.gnri_2x.invert", {
        "evals_per_step": 2.0, "schedule": "front", "first_step_evals": 5, "first_step_tol": 0.1,
        "start": "extrapolate", "first": "chebyshev", "second": "anderson", "omega_max": 4.0, "regularization": 1.0e-10}),
    "gnri_nk": ("gnri.methods.newton_krylov.invert", {
        "newton_iters": 1, "krylov_dim": 2, "tol": 1.0e-4, "jvp": "secant", "fd_step": None, "keep_best": False}),
    "gnri_official": ("gnri.methods.gnri_official.invert", {
        "lam": 0.1, "n_iters": 2, "coordinates": "grid", "numel": None}),
    "gradient_descent": ("baselines.gradient_descent.invert", {
        "direction": "forward_step", "step_size": 0.5, "max_iters": 100, "tol": 2.5e-4, "warmup_iters": 20,
        "plateau_factor": 0.5, "plateau_patience": 20, "plateau_threshold": 1.0e-4}),
    "negative_prompt": ("baselines.negative_prompt.invert", {"interp": 0.0, "timestep": "dst"}),
    "null_text": ("baselines.null_text.invert", {
        "num_inner_steps": 10, "lr": 1.0e-2, "lr_decay": 1.0e-2, "early_stop": 1.0e-5, "early_stop_slope": 2.0e-5,
        "keys": None, "pivot_timestep": "dst"}),
    "rf_inversion": ("baselines.rf_inversion.invert", {
        "gamma": 0.5, "eta": 0.9, "start": 0.0, "stop": 0.25, "seed": 0, "timestep": "src"}),
    "renoise": ("baselines.renoise.invert", {
        "num_renoise_steps": 9, "max_first_step_renoise_steps": 5, "average": True, "average_range": [8, 10],
        "first_step_average_range": [0, 5], "first_step_max_sigma": 0.6958}),
    "rf_solver": ("baselines.rf_solver.invert", {}),
    "uni_inv": ("baselines.uni_inv.invert", {"editing": "uni_edit", "omega": 5.0, "zero_init": False}),
}

# name -> the fields of gnri.ScheduleSpec, as in conf/schedule/<name>.yaml
SCHEDULES: dict[str, dict[str, Any]] = {
    "ddim10": {"kind": "ddim", "num_steps": 10, "spacing": "leading", "strength": 1.0, "noise_seed": 7865},
    "ddim50": {"kind": "ddim", "num_steps": 50, "spacing": "leading", "strength": 1.0, "noise_seed": 7865},
    "euler4_strength06": {
        "kind": "euler_ancestral", "num_steps": 4, "spacing": "trailing", "strength": 0.6, "noise_seed": 7865},
    "euler4_trailing": {"kind": "euler", "num_steps": 4, "spacing": "trailing", "strength": 1.0, "noise_seed": 7865},
    "euler_ancestral4": {
        "kind": "euler_ancestral", "num_steps": 4, "spacing": "trailing", "strength": 1.0, "noise_seed": 7865},
    "flow4": {"kind": "flow_euler", "num_steps": 4, "spacing": None, "strength": 1.0, "noise_seed": 7865},
    "flow8": {"kind": "flow_euler", "num_steps": 8, "spacing": None, "strength": 1.0, "noise_seed": 7865},
}


def import_target(target: str) -> Callable[..., Any]:
    """The object at a dotted path ``package.module.name``."""
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def method_entry(name: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """(inverter function, a copy of its default hyperparameters) of a method name.

    Raises ValueError with the valid names if ``name`` is not one.
    """
    if name not in METHODS:
        raise ValueError(f"gnri: unknown method {name!r}; valid names: {', '.join(sorted(METHODS))}")
    target, defaults = METHODS[name]
    return import_target(target), copy.deepcopy(defaults)


def schedule_fields(name: str) -> dict[str, Any]:
    """A copy of the ScheduleSpec fields of a schedule name; ValueError with the valid names if unknown."""
    if name not in SCHEDULES:
        raise ValueError(f"gnri: unknown schedule {name!r}; valid names: {', '.join(sorted(SCHEDULES))}")
    return dict(SCHEDULES[name])


def first_doc_line(obj: Any) -> str:
    """The first non-empty line of ``obj``'s docstring ('' if none)."""
    lines = [line.strip() for line in (getattr(obj, "__doc__", None) or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def method_docs() -> dict[str, str]:
    """Method name -> the first docstring line of its inverter function, sorted by name."""
    return {name: first_doc_line(import_target(METHODS[name][0])) for name in sorted(METHODS)}
