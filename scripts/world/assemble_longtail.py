"""Assemble the long-tailed world's pipeline folders (``datasets/world_longtail/{sd,flux}``).

The long-tailed models share the world's VAE and CLIP text tower (the work folder holds copies of
``datasets/world/sd/vae`` and ``datasets/world/clip``); only the UNet, the flow transformer and the
flow model's seeded random T5 are new. The shared components are committed once: after
:func:`scripts.world.assemble.assemble` writes full folders, every component whose files equal the
world's byte for byte becomes a relative symlink to it (diffusers follows them).

    python -m scripts.world.latents --work /tmp/gnri_longtail --seed 1 --world longtail
    python -m scripts.world.train_unet --work /tmp/gnri_longtail --seed 1 --steps 3000
    python -m scripts.world.train_flow --work /tmp/gnri_longtail --seed 1 --steps 4500
    python -m scripts.world.assemble_longtail --work /tmp/gnri_longtail
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import tempfile
from pathlib import Path

from scripts.world.assemble import assemble
from scripts.world.common import WORLD_DIR

LONGTAIL_DIR = WORLD_DIR.parent / "world_longtail"


VOLATILE_KEYS = ("_name_or_path", "_diffusers_version", "transformers_version")  # where and with what it was saved


def same_file(a: Path, b: Path) -> bool:
    """Same bytes; for JSON configs, the same content once the saving library's bookkeeping keys are dropped."""
    if a.suffix == ".json":
        load = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k not in VOLATILE_KEYS}  # noqa: E731
        return load(a) == load(b)
    return filecmp.cmp(a, b, shallow=False)


def same_tree(a: Path, b: Path) -> bool:
    """True if folders ``a`` and ``b`` hold the same file names with the same content (:func:`same_file`)."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(same_file(a / n, b / n) for n in names)


def link_shared(folder: Path, world_folder: Path) -> list[str]:
    """Replace each component of ``folder`` equal to ``world_folder``'s by a relative symlink; returns their names."""
    linked = []
    for comp in sorted(p for p in folder.iterdir() if p.is_dir()):
        twin = world_folder / comp.name
        if twin.is_dir() and same_tree(comp, twin):
            shutil.rmtree(comp)
            comp.symlink_to(os.path.relpath(twin, folder))
            linked.append(comp.name)
    return linked


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/gnri_longtail"))
    ap.add_argument("--out", type=Path, default=LONGTAIL_DIR)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        assemble(args.work, Path(tmp))
        for name in ("sd", "flux"):
            shutil.rmtree(args.out / name, ignore_errors=True)
            args.out.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(tmp) / name), args.out / name)
            linked = link_shared(args.out / name, WORLD_DIR / name)
            print(f"{args.out / name}: shared with the world: {', '.join(linked) or 'nothing'}")


if __name__ == "__main__":
    main()
