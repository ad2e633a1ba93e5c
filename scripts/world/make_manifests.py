"""Write the embedded world's committed manifests (images are re-rendered from them at run time).

``datasets/world/manifests/heldout.jsonl``: held-out scenes 0..n-1 (caption, attributes,
parameters, render digest) and each one's four one-attribute-changed distractor captions;
``edits.jsonl``: edit pairs 0..n-1 (source and target scene records and the changed attribute).

    python -m scripts.world.make_manifests --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.world.generator import edit_pair, heldout_distractors, scene, scene_record, write_jsonl
from eval.world.grammar import caption
from scripts.world.common import WORLD_DIR

N_HELDOUT = 500
N_EDITS = 200


def heldout_rows(n: int, seed: int) -> list[dict]:
    return [{"split": "heldout", "index": i, "seed": seed, **scene_record(scene("heldout", i, seed)),
             "distractors": [caption(a) for a in heldout_distractors(i, 4, seed)]} for i in range(n)]


def edit_rows(n: int, seed: int) -> list[dict]:
    rows = []
    for i in range(n):
        pair = edit_pair(i, seed)
        rows.append({"index": i, "seed": seed, "attribute": pair.attribute,
                     "source": scene_record(pair.source), "target": scene_record(pair.target)})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=WORLD_DIR / "manifests")
    args = ap.parse_args(argv)
    write_jsonl(args.out / "heldout.jsonl", heldout_rows(N_HELDOUT, args.seed))
    write_jsonl(args.out / "edits.jsonl", edit_rows(N_EDITS, args.seed))
    print(f"wrote {N_HELDOUT} held-out scenes and {N_EDITS} edit pairs to {args.out}")


if __name__ == "__main__":
    main()
