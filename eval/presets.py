"""Paper presets' smoke mode: the same preset on the tiny model of the same family, 1 image, CPU.

A paper preset (``conf/experiment/paper_*.yaml``) names its stand-ins under ``smoke_overrides``
(command-line overrides: the tiny model of its family, a bundled dataset, ``max_images=1``, ``warmup=0``,
``device=cpu``, no bare-network clock except in the timing preset, and 10 steps instead of a
DDIM-50 grid). ``python run.py -m experiment=paper_<name> smoke=true`` adds them to the command
line before Hydra composes the config, so every name in the rows, the errors and the config is
the stand-in's, and everything else (schedule kind, inverters and their hyperparameters, task,
metrics) is the preset's own: a preset that could not start on a GPU machine fails here first. An override
the user gives on the command line wins over the preset's stand-in.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

SMOKE_ON = ("smoke=true", "smoke=True", "+smoke=true", "+smoke=True")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def smoke_arguments(args: list[str], conf_dir: Path) -> tuple[list[str], str | None]:
    """``args`` with the preset's smoke overrides added when ``smoke=true`` is among them, and a
    one-line error (None if fine): smoke needs one ``experiment=`` whose file has ``smoke_overrides``."""
    if not any(arg in SMOKE_ON for arg in args):
        return args, None
    names = [arg.split("=", 1)[1] for arg in args if _key(arg) == "experiment"]
    if len(names) != 1 or "," in names[0]:
        return args, "run.py: smoke=true needs exactly one experiment=<preset> (e.g. experiment=paper_recon_sdxl_turbo)"
    path = conf_dir / "experiment" / f"{names[0]}.yaml"
    if not path.exists():
        return args, None  # the group check names the missing preset
    overrides = OmegaConf.load(path).get("smoke_overrides")
    if not overrides:
        return args, f"run.py: smoke=true: experiment={names[0]} has no smoke_overrides (only paper presets do)"
    given = {_key(arg) for arg in args}
    extra = [str(o) for o in overrides if _key(str(o)) not in given]
    return [*args, *extra], None
