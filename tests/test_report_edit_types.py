"""Verdicts per edit type, the scorer of each row and the no-mask note (issue 25, items 2 and 5).

Synthetic tidy frames with hand-set differences: the oracles are the differences planted, not the
code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from eval.metrics.edit import NO_MASK
from eval.report.aggregate import aggregate
from eval.report.edit_type_report import edit_types_markdown, type_grid, write_edit_types
from eval.report.edit_types import (
    EDIT_TYPE, add_edit_types, pairs_per_type, per_type_verdicts, types_from_dataset, world_type,
)
from eval.report.mask_note import no_mask_note
from eval.report.paired import BETTER, NO_DIFFERENCE
from eval.report.plots import _save_png
from eval.report.scorers import SCORER, WORLD_CLIP, add_scorers, scorer_notes, scorers_of
from eval.report.tables import paper_markdown

REF, GNRI = "ddim+prompt_swap", "gnri+prompt_swap"
TYPES = ("size", "colour", "shape")
N = 8  # pairs per type: >= MIN_PAIRED_IMAGES, so verdicts are real
EDIT_TASK = {"name": "edit", "editor": "prompt_swap", "clip": {"backend": "transformers", "weights": "auto"},
             "lpips_net": "alex", "structure": {"weights": None, "standin": "auto"}}
WORLD = json.dumps({"task": EDIT_TASK, "dataset": {"_target_": "eval.edit_data.world_edit_dataset"}})


def edit_rows(values: dict[str, dict[str, float]], metric: str = "bg_psnr", config: str = WORLD,
              status: str = "ok", reason: str = "") -> list[dict]:
    """One row per method x image: ``values[method][image]``."""
    return [{"run_id": f"{m}-run", "model": "world_sd", "schedule": "euler4", "inverter": m, "adapter": "world_sd",
             "image": image, "caption": f"src {image} -> target of {image}", "metric": metric,
             "value": v if status == "ok" else float("nan"), "status": status, "reason": reason,
             "higher_is_better": True, "num_steps": 4, "machine": json.dumps({"cpu_count": 2, "load_1min": 0.1}),
             "config": config} for m, images in values.items() for image, v in images.items()]


def colour_only_frame() -> pd.DataFrame:
    """gnri is 2 dB better than ddim on every colour pair; on size and shape +-0.5 dB alternately (mean 0)."""
    rng = np.random.default_rng(0)
    ref, gnri = {}, {}
    for t, kind in enumerate(TYPES):
        for i in range(N):
            image = f"edit_{t * N + i:03d}_{kind}"
            ref[image] = 25.0 + 4.0 * rng.standard_normal()
            gnri[image] = ref[image] + (2.0 if kind == "colour" else 0.5 * (-1) ** i)
    return pd.DataFrame(edit_rows({REF: ref, GNRI: gnri}))


def verdict(frame: pd.DataFrame, kind: str) -> str:
    row = frame[(frame[EDIT_TYPE] == kind) & (frame["method"] == GNRI) & (frame["metric"] == "bg_psnr")]
    assert len(row) == 1, row
    return str(row["verdict"].iloc[0])


def test_world_ids_give_their_attribute() -> None:
    assert world_type("edit_003_colour") == "colour" and world_type("edit_12_background") == "background"
    assert world_type("cat.png") == "" and world_type("edit_003") == "" and world_type("xedit_003_size") == ""
    assert world_type("edit_003_size.png") == ""  # a user's file named like a world pair: no type from its name


def test_one_method_better_on_one_type_only() -> None:
    records = colour_only_frame()
    verdicts = per_type_verdicts(records, REF)
    assert len(verdicts) == len(TYPES)  # one method x one metric per type
    assert set(verdicts["n_pairs"]) == {N} and set(verdicts["reference"]) == {REF}
    assert verdict(verdicts, "colour") == BETTER
    assert verdict(verdicts, "size") == NO_DIFFERENCE and verdict(verdicts, "shape") == NO_DIFFERENCE
    colour = verdicts[verdicts[EDIT_TYPE] == "colour"].iloc[0]
    assert abs(colour["mean_diff"] - 2.0) < 1e-9
    assert list(pairs_per_type(add_edit_types(records)).items()) == [("shape", N), ("size", N), ("colour", N)]


def test_markdown_has_a_table_per_type_with_its_pair_count() -> None:
    records = add_edit_types(colour_only_frame())
    text = edit_types_markdown(records, REF, per_type_verdicts(records, REF))
    sections = {kind: text.split(f"\n### {kind} ({N} pairs)")[1].split("\n### ")[0] for kind in TYPES}
    assert "**better**" in sections["colour"] and GNRI in sections["colour"]
    assert "**better**" not in sections["size"] and "**better**" not in sections["shape"]
    assert "shape 8, size 8, colour 8" in text  # the world's order: position, shape, size, background, colour


def test_types_from_a_users_pairs_and_piebench(tmp_path: Path) -> None:
    (tmp_path / "edits.jsonl").write_text(json.dumps({"image": "a.png", "edit_type": "style"}) + "\n"
                                          + json.dumps({"image": "b.png"}) + "\n")
    assert types_from_dataset({"_target_": "eval.edit_data.edit_folder_dataset", "path": str(tmp_path)}) == {
        "a.png": "style"}
    (tmp_path / "mapping_file.json").write_text(json.dumps({"000000000001": {"editing_type_id": "6"}}))
    got = types_from_dataset({"_target_": "eval.edit_data.piebench_dataset", "path": str(tmp_path)})
    assert got == {"000000000001": "6 change colour"}
    config = json.dumps({"task": EDIT_TASK, "dataset": {"_target_": "eval.edit_data.edit_folder_dataset",
                                                       "path": str(tmp_path)}})
    rows = pd.DataFrame(edit_rows({REF: {"a.png": 1.0, "b.png": 2.0}}, config=config))
    assert add_edit_types(rows).set_index("image")[EDIT_TYPE].to_dict() == {"a.png": "style", "b.png": ""}


def _saved(run: Path, image: str, value: float) -> None:
    for folder in ("source", "edit"):
        _save_png(torch.full((3, 8, 8), value), run / "images" / folder / f"{image}.png")


def test_grid_keeps_pairs_every_method_saved(tmp_path: Path) -> None:
    runs = {REF: tmp_path / "a", GNRI: tmp_path / "b"}
    for image in ("edit_000_size", "edit_001_size", "edit_002_size"):
        _saved(runs[REF], image, 0.2)
    _saved(runs[GNRI], "edit_001_size", 0.8)
    rows = [(i, "a target") for i in ("edit_000_size", "edit_001_size", "edit_002_size")]
    assert type_grid(rows, runs, tmp_path / "g.png") == tmp_path / "g.png"  # edit_001 only: gnri saved no other
    type_grid(rows[1:2], runs, tmp_path / "one.png")
    _saved(runs[GNRI], "edit_000_size", 0.8)
    type_grid(rows, runs, tmp_path / "two.png")  # edit_000 and edit_001 now
    size = lambda name: Image.open(tmp_path / name).size  # noqa: E731
    assert size("g.png") == size("one.png") and size("two.png")[1] > size("one.png")[1]
    assert type_grid([("edit_009_size", "x")], runs, tmp_path / "none.png") is None  # nobody saved it
    assert not (tmp_path / "none.png").exists()


def test_write_edit_types_skips_frames_without_types(tmp_path: Path) -> None:
    plain = pd.DataFrame(edit_rows({REF: {"cat.png": 1.0}}))
    assert write_edit_types(plain, tmp_path, REF) == ([], "")
    assert not (tmp_path / "edit_types.csv").exists()


def test_aggregate_writes_per_type_tables_and_grids(tmp_path: Path) -> None:
    records = colour_only_frame()
    for method, block in records.groupby("inverter"):
        run = tmp_path / "runs" / method
        run.mkdir(parents=True)
        block.to_csv(run / "results.csv", index=False)
        for image in block["image"]:
            _saved(run, image, 0.5)
    out = aggregate([tmp_path / "runs"], tmp_path / "report", reference=REF)
    table = pd.read_csv(tmp_path / "report" / "edit_types.csv")
    assert len(table) == len(TYPES) and table.set_index(EDIT_TYPE).loc["colour", "verdict"] == BETTER
    assert "Paired verdicts per edit type" in (tmp_path / "report" / "paper_table.md").read_text()
    grids = sorted(p.name for p in out.plots if p.name.startswith("edits_type_"))
    assert grids == ["edits_type_colour.png", "edits_type_shape.png", "edits_type_size.png"]
    combined = pd.read_csv(tmp_path / "report" / "results_all.csv", keep_default_na=False)
    assert (combined[SCORER] == "").all()  # bg_psnr: no network


# ---------------------------------------------------------------- item 5: scorers and masks


def test_each_score_names_its_model() -> None:
    world = scorers_of(json.loads(WORLD))
    assert world["clip_whole"] == WORLD_CLIP == world["clip_edited"]
    assert world["lpips_to_source"].startswith("LPIPS alex") and world["structure_distance"].startswith("DINO ViT-B/8")
    assert "bg_psnr" not in world and "time_edit_s" not in world
    real = {**EDIT_TASK, "clip": {"backend": "transformers", "weights": "/m/openai/clip-vit-large-patch14"},
            "lpips_net": "vgg"}
    own = scorers_of({"task": real})
    assert own["clip_whole"] == "CLIP (transformers) from /m/openai/clip-vit-large-patch14"
    assert own["bg_lpips"].startswith("LPIPS vgg")
    recon = scorers_of({"task": {"name": "reconstruct"}, "metrics": {"names": ["psnr", "clip_score"], "options": {
        "clip_score": {"backend": "open_clip", "model_name": "ViT-B-32", "pretrained": "openai"}}}})
    assert recon == {"clip_score": "OpenCLIP ViT-B-32/openai (hub cache)"}


def test_world_clip_on_a_users_pairs_is_named_and_warned() -> None:
    user = json.dumps({"task": EDIT_TASK, "dataset": {"_target_": "eval.edit_data.edit_folder_dataset"}})
    rows = pd.DataFrame(edit_rows({REF: {"a.png": 30.0}}, metric="clip_whole", config=user)
                        + edit_rows({REF: {"a.png": 20.0}}, metric="bg_psnr", config=user))
    scored = add_scorers(rows).set_index("metric")[SCORER]
    assert scored["clip_whole"] == WORLD_CLIP and scored["bg_psnr"] == ""
    notes = "\n".join(scorer_notes(rows))
    assert f"- `clip_whole`: {WORLD_CLIP}" in notes and "`edit_folder_dataset`" in notes and "Warning" in notes
    world_rows = pd.DataFrame(edit_rows({REF: {"edit_000_size": 30.0}}, metric="clip_whole"))
    assert "Warning" not in "\n".join(scorer_notes(world_rows))
    assert f"`clip_whole`: {WORLD_CLIP}" in paper_markdown(rows, reference=REF)


def test_no_mask_note_names_the_metrics_and_the_fix() -> None:
    user = json.dumps({"task": EDIT_TASK, "dataset": {"_target_": "eval.edit_data.edit_folder_dataset"}})
    rows = pd.DataFrame(edit_rows({REF: {"a.png": 30.0, "b.png": 31.0}}, metric="clip_whole", config=user)
                        + edit_rows({REF: {"b.png": 0}}, metric="bg_psnr", config=user, status="unavailable",
                                    reason=NO_MASK)
                        + edit_rows({REF: {"b.png": 0}}, metric="clip_edited", config=user, status="unavailable",
                                    reason=NO_MASK)
                        + edit_rows({REF: {"a.png": 20.0}}, metric="bg_psnr", config=user))
    note = "\n".join(no_mask_note(rows))
    assert "1 pair:" in note and "`bg_psnr`, `clip_edited`" in note and '"mask"' in note and "edits.jsonl" in note
    assert "No edited-region mask for 1 pair" in paper_markdown(rows, reference=REF)
    assert no_mask_note(rows[rows["status"] == "ok"]) == []
