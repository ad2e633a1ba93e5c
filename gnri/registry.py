"""The library's schedule names: the same names as the harness's ``conf/schedule`` group.

``SCHEDULES[name]`` mirrors ``conf/schedule/<name>.yaml`` (a test asserts both stay equal), because
``conf/`` is not part of the installed package. Method names live in :mod:`gnri.catalog`.
Values are returned as fresh copies: nothing here is mutated.
"""

from __future__ import annotations

from typing import Any

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


def schedule_fields(name: str) -> dict[str, Any]:
    """A copy of the ScheduleSpec fields of a schedule name; ValueError with the valid names if unknown."""
    if name not in SCHEDULES:
        raise ValueError(f"gnri: unknown schedule {name!r}; valid names: {', '.join(sorted(SCHEDULES))}")
    return dict(SCHEDULES[name])
