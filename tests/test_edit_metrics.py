"""Edit metrics and data: region metrics ignore differences inside the edited region (and only
there), PIE-Bench's RLE masks and mapping file, the world's edit pairs (identical outside the
edited region), the edit/exact loops' tidy rows, the editing figure and grid, run.py task=edit."""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from baselines import ddim
from eval.data import sample_dataset
from eval.edit_data import EditEntry, decode_rle, fit_mask, piebench_dataset, strip_markers, world_edit_dataset
from eval.metrics.diagnostics import EDIT_METRIC_ORDER as EDIT_METRICS, EXACT_METRICS
from eval.tasks.edit import EditSettings, evaluate_edits
from eval.tasks.exact import evaluate_exact
from eval.metrics.masked import MaskedLPIPS, MaskedSSIM, masked_mse, masked_psnr, region_image
from eval.metrics.psnr import psnr
from eval.metrics.ssim import SSIM
from eval.records import RESULTS_FILE, read_records
from eval.report.aggregate import aggregate
from eval.report.edit_plots import edit_tradeoff, run_edit_grid
from gnri.images import load_image
from lpips_guard import lpips_expected
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py
from gnri.models.base import ScheduleSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, b, keep): two 48 px images that differ only inside a square (outside ``keep``)."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 48, 48, generator=g)
    edited = torch.zeros(2, 48, 48, dtype=torch.bool)
    edited[:, 10:30, 12:28] = True
    b = torch.where(edited[:, None], torch.rand(2, 3, 48, 48, generator=g), a)
    return a, b, ~edited


def test_differences_inside_the_edited_region_do_not_count(pair) -> None:
    a, b, keep = pair
    assert torch.isinf(masked_psnr(b, a, keep)).all()
    assert torch.equal(masked_mse(b, a, keep), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(MaskedSSIM()(b, a, keep), torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)
    lpips = MaskedLPIPS()
    if lpips_expected():  # with the weights (always under CI=true) LPIPS must be computed
        assert lpips.unavailable_reason() is None, lpips.unavailable_reason()
        assert torch.equal(lpips(b, a, keep), torch.zeros(2, dtype=torch.float64))
    # PIE-Bench's zero-fill averages over the whole image: finite, mask-area dependent, not "identical"
    assert torch.isfinite(psnr(b, a)).all()


def test_differences_outside_count_and_reductions_match_the_plain_metrics(pair) -> None:
    a, _, keep = pair
    noisy = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    inside = keep[:, None].expand_as(a)
    mse = (noisy - a)[inside].reshape(2, -1).double().pow(2).mean(1)
    torch.testing.assert_close(masked_mse(noisy, a, keep), mse)
    torch.testing.assert_close(masked_psnr(noisy, a, keep), 10 * torch.log10(1 / mse))
    assert (MaskedSSIM()(noisy, a, keep) < 0.99).all()
    everything = torch.ones(48, 48, dtype=torch.bool)
    torch.testing.assert_close(MaskedSSIM()(noisy, a, everything).float(), SSIM()(noisy, a), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_psnr(noisy, a, everything).float(), psnr(noisy, a), atol=1e-4, rtol=0)
    lpips = MaskedLPIPS()
    if lpips_expected():
        assert lpips.unavailable_reason() is None, lpips.unavailable_reason()
        assert (lpips(noisy, a, keep) > 0).all()
    assert torch.equal(region_image(a, ~keep)[:, :, 0, 0], torch.zeros(2, 3))  # outside the region: 0
    with pytest.raises(ValueError, match="empty"):
        masked_mse(a, a, torch.zeros(48, 48, dtype=torch.bool))


def test_piebench_rle_masks_and_mapping(tmp_path: Path) -> None:
    mask = decode_rle([5, 3, 30, 2], (6, 6))
    inner = np.zeros((6, 6), bool)
    inner.flat[[5, 6, 7, 30, 31]] = True
    assert np.array_equal(mask[1:-1, 1:-1], inner[1:-1, 1:-1])
    assert mask[0].all() and mask[-1].all() and mask[:, 0].all() and mask[:, -1].all()  # border forced
    assert strip_markers("a [red] cat") == "a red cat"
    images = tmp_path / "annotation_images" / "0_random"
    images.mkdir(parents=True)
    Image.new("RGB", (512, 512), (10, 20, 30)).save(images / "one.jpg")
    Image.new("RGB", (256, 256)).save(images / "small.jpg")
    mapping = {
        "000000000000": {"image_path": "0_random/one.jpg", "original_prompt": "a [cat] sitting",
                         "editing_prompt": "a [dog] sitting", "blended_word": "cat dog", "editing_type_id": "1",
                         "mask": [512 * 100 + 100, 50]},
        "000000000001": {"image_path": "0_random/missing.jpg", "original_prompt": "x", "editing_prompt": "y",
                         "blended_word": "", "editing_type_id": "2", "mask": []},
        "000000000002": {"image_path": "0_random/small.jpg", "original_prompt": "x", "editing_prompt": "y",
                         "blended_word": "", "editing_type_id": "1", "mask": []},
    }
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    entries = piebench_dataset(tmp_path)
    first = entries[0]
    assert isinstance(first, EditEntry) and first.problem is None
    assert (first.caption, first.target_caption, first.blend_words, first.edit_type) == (
        "a cat sitting", "a dog sitting", ("cat", "dog"), "1")
    m = first.mask()
    assert m.shape == (512, 512) and m[100, 100:150].all() and not m[100, 150] and not m[50, 50]
    assert "not found" in entries[1].problem and "512" in entries[2].problem
    assert [e.image_id for e in piebench_dataset(tmp_path / "mapping_file.json", edit_types=[2])] == ["000000000001"]
    with pytest.raises(ValueError, match="dataset.path"):
        piebench_dataset(tmp_path / "nope")


def test_world_pairs_are_identical_outside_the_edited_region(tmp_path: Path) -> None:
    entries = world_edit_dataset(cache_dir=tmp_path, max_pairs=6)
    assert len(entries) == 6 and all(e.problem is None for e in entries)
    for e in entries:
        source, target = load_image(e.path)[None], load_image(e.target_path)[None]
        edited = torch.from_numpy(e.mask())
        assert edited.any() and not torch.equal(source, target)
        assert torch.isinf(masked_psnr(target, source, ~edited)).all(), e.image_id
        assert e.target_caption != e.caption and e.edit_type in e.image_id
    small = fit_mask(entries[0].mask(), (32, 32))
    assert small.shape == (32, 32) and small.any()
    only = world_edit_dataset(cache_dir=tmp_path, attributes=["colour"], max_pairs=2)
    assert all(e.edit_type == "colour" for e in only)


def test_world_pairs_balanced_per_edit_type(tmp_path: Path) -> None:
    """``per_type=N``: the first N pairs of each edit type, in manifest order (no image is rendered)."""
    import json
    from collections import Counter

    from eval.world_data import world_dir

    entries = world_edit_dataset(cache_dir=tmp_path, per_type=3)
    assert Counter(e.edit_type for e in entries) == {t: 3 for t in ("position", "shape", "size", "background", "colour")}
    lines = (world_dir() / "manifests" / "edits.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [(i, json.loads(line)["attribute"]) for i, line in enumerate(lines)]
    first = sorted(i for t in {a for _, a in rows} for i in [i for i, a in rows if a == t][:3])
    assert [int(e.image_id.split("_")[1]) for e in entries] == first  # image ids: edit_<index>_<type>
    with pytest.raises(ValueError, match="dataset.per_type must be >= 1"):
        world_edit_dataset(cache_dir=tmp_path, per_type=0)


@pytest.mark.parametrize("editor", ["prompt_swap", "p2p"])
def test_edit_loop_rows(tiny_sd_adapter, tmp_path: Path, editor: str) -> None:
    cache = tmp_path / "cache"  # a position edit changes the word count: P2P refinement, not word swap
    entries = world_edit_dataset(cache_dir=cache, max_pairs=1) + world_edit_dataset(
        cache_dir=cache, attributes=["position"], max_pairs=1)
    out = tmp_path / "run"
    df = evaluate_edits(
        tiny_sd_adapter, ScheduleSpec("ddim", 3), ddim.invert, "ddim", [*entries, sample_dataset()[0]],
        EditSettings(editor), progress=False, out_dir=out,
    )
    assert set(df["inverter"]) == {f"ddim+{editor}"} and len(df) == 3 * len(EDIT_METRICS)
    pairs = df[df["image"].isin([e.image_id for e in entries])]
    by = pairs.groupby("metric")["status"].agg(set)
    for name in ("bg_psnr", "bg_ssim", "bg_mse", "recon_psnr", "target_psnr", "edit_success", "nfe_forward_edit"):
        assert by[name] == {"ok"}, name
    assert by["structure_distance"] == {"unavailable"} and by["clip_whole"] <= {"ok", "unavailable"}
    # LPIPS rows: "ok" whenever the weights are installed (always under CI=true), never a silent "unavailable"
    lpips_status = {"ok"} if lpips_expected() else {"unavailable"}
    assert by["bg_lpips"] == lpips_status and by["lpips_to_source"] == lpips_status
    assert set(pairs[pairs["metric"] == "edit_success"]["value"]) <= {0.0, 1.0}
    assert set(df[df["image"] == sample_dataset()[0].image_id]["status"]) == {"skipped"}  # not an edit pair
    assert read_records(out / RESULTS_FILE).shape[0] == len(df)
    grid = run_edit_grid({f"ddim+{editor}": out}, tmp_path / "grid.png")
    assert grid is not None and grid.exists()
    report = aggregate([out], tmp_path / "report")  # an edit run's report: the editing figures and grid
    names = {p.name for p in report.plots}
    assert {"edit_background.png", "edits_tiny_sd.png"} <= names and "reconstructions_tiny_sd.png" in names


def test_exact_loop_rows(tiny_sd_adapter) -> None:
    df = evaluate_exact(tiny_sd_adapter, ScheduleSpec("ddim", 3), ddim.invert, "ddim", sample_dataset()[:2],
                        progress=False)
    assert set(df["metric"]) == set(EXACT_METRICS) and (df["status"] == "ok").all()
    assert len(df) == 2 * len(EXACT_METRICS)
    nmse = df[df["metric"] == "exact_latent_nmse"]["value"]
    assert ((nmse >= 0) & (nmse < 1)).all()


def _records(points: dict[str, tuple[float, float]]) -> pd.DataFrame:
    rows = []
    for method, (clip, lpips) in points.items():
        for image in ("a", "b"):
            for metric, value, higher in (("clip_whole", clip, True), ("lpips_to_source", lpips, False)):
                rows.append({"run_id": method, "model": "m", "schedule": "s", "inverter": method, "adapter": "m",
                             "image": image, "caption": "", "metric": metric, "value": value, "status": "ok",
                             "reason": "", "higher_is_better": higher, "num_steps": 4, "guidance_scale": 1.0,
                             "seed": 0})
    return pd.DataFrame(rows)


def test_editing_figure(tmp_path: Path) -> None:
    records = _records({"gnri+prompt_swap": (30.1, 0.18), "ddim+prompt_swap": (26.0, 0.22)})
    path = edit_tradeoff(records, tmp_path / "fig.png")
    assert path is not None and path.stat().st_size > 0
    assert edit_tradeoff(records, tmp_path / "none.png", y="edit_success") is None


def test_run_py_task_edit(tmp_path: Path) -> None:
    """Both run.py runs in one child process (tests/run_many.py: run.py's __main__ once per run, each with its own
    exit status and stderr), from tmp_path."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
                        "GNRI_BENCH_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    logs = tmp_path / "logs"
    codes = run_in_one_process([
        ("edit", ["task=edit", "task.editor=p2p", "dataset.max_pairs=1", "schedule.num_steps=2", "warmup=0",
                  "progress=false", f"hydra.run.dir={out}"], tmp_path),
        ("bad", ["task=nope"], tmp_path),
    ], logs, env=env, timeout=600)
    stderr = {name: (logs / f"{name}.err").read_text(encoding="utf-8") for name in codes}
    assert codes["edit"] == 0, stderr["edit"][-2000:]
    df = read_records(out / RESULTS_FILE)
    assert set(df["inverter"]) == {"ddim+p2p"} and set(df["metric"]) == set(EDIT_METRICS)
    assert math.isfinite(df[df["metric"] == "bg_psnr"]["value"].iloc[0])
    assert json.loads(df["config"].iloc[0])["task"]["name"] == "edit"
    assert codes["bad"] == 2 and "unknown task 'nope'" in stderr["bad"]


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml")))
def test_every_task_config_composes(name: str) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"task={name}"])
    assert cfg.task.name == name
    own = {"edit": "eval.edit_data.world_edit_dataset", "seed_select": "eval.concepts.world_concept_dataset"}
    assert cfg.dataset._target_ == own.get(name, "eval.data.sample_dataset")  # edit / seed_select bring their data


class _CountingAdapter:
    """A shared adapter seen through a wrapper that counts its encoder calls (the fixture stays untouched)."""

    def __init__(self, inner) -> None:
        self.inner, self.encodes, self.prompts = inner, 0, 0

    def encode_images(self, images):
        self.encodes += 1
        return self.inner.encode_images(images)

    def encode_prompts(self, *args, **kwargs):
        self.prompts += 1
        return self.inner.encode_prompts(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_edit_jobs_share_the_source_encodings(tiny_sd_adapter, tmp_path: Path) -> None:
    entries = world_edit_dataset(cache_dir=tmp_path / "world", max_pairs=2)
    tables, adapters = [], []
    for name in ("ddim", "fixed_point3"):
        adapter = _CountingAdapter(tiny_sd_adapter)
        tables.append(evaluate_edits(adapter, ScheduleSpec("ddim", 2), ddim.invert, name, entries, EditSettings(),
                                     progress=False, out_dir=tmp_path / name, cache_dir=tmp_path / "cache",
                                     save_images=False, warmup=0))
        adapters.append(adapter)
    assert adapters[0].encodes == 1 + 2 and adapters[1].encodes == 1  # the probe, then nothing: cached
    assert adapters[1].prompts == adapters[0].prompts - 2  # source captions cached; target captions per edit
    ok = [t[t["metric"] == "recon_psnr"]["value"].tolist() for t in tables]
    assert ok[0] == ok[1]


def test_every_editor_of_a_sweep_edits_one_inversion(tiny_sd_adapter, tmp_path: Path) -> None:
    """The edit task caches each source's inversion (eval.cache ``inversion``): a second job of the
    same inverter with another editor does not invert again and reports the first job's NFE and seconds."""
    import functools

    calls = []

    @functools.wraps(ddim.invert)
    def counted(*args, **kwargs):
        calls.append(1)
        return ddim.invert(*args, **kwargs)

    entries = world_edit_dataset(cache_dir=tmp_path / "world", max_pairs=2)
    tables = []
    for editor in ("prompt_swap", "sdedit"):
        before = len(calls)
        tables.append(evaluate_edits(tiny_sd_adapter, ScheduleSpec("ddim", 2), counted, "ddim", entries,
                                     EditSettings(editor), progress=False, out_dir=tmp_path / editor,
                                     cache_dir=tmp_path / "cache", save_images=False, warmup=1))
        assert len(calls) - before == (3 if editor == "prompt_swap" else 0)  # warm-up + 2 timed, then none
    first, second = (t.set_index(["image", "metric"])["value"] for t in tables)
    for metric in ("nfe_forward", "time_invert_s", "recon_psnr"):
        assert first.xs(metric, level="metric").equals(second.xs(metric, level="metric")), metric


def test_an_inversion_state_round_trips_through_the_cache(tiny_sd_adapter) -> None:
    """EDICT (a sampler bound to tensors) and null-text (per-step conditioning) come back whole."""
    from baselines import edict, null_text
    from eval.cache import result_from_tensors, result_to_tensors
    from gnri.core import reconstruct

    latent = tiny_sd_adapter.encode_images(torch.rand(1, 3, *tiny_sd_adapter.image_size()))
    grid = tiny_sd_adapter.grid(ScheduleSpec("ddim", 2), tuple(latent.shape))
    cond = tiny_sd_adapter.encode_prompts(["a red circle"], guidance_scale=3.0)
    den = tiny_sd_adapter.denoiser()
    for invert in (edict.invert, functools.partial(null_text.invert, num_inner_steps=1)):
        result = invert(den, latent, grid, cond)
        stored = result_to_tensors(result)
        assert stored is not None
        back = result_from_tensors(*stored)
        with torch.no_grad():
            assert torch.equal(reconstruct(den, back, grid, cond), reconstruct(den, result, grid, cond))
    result.extras["not a tensor"] = "x"
    assert result_to_tensors(result) is None  # not cached: inverted again by every job


@pytest.mark.parametrize("editor", ["sdedit", "direct_inversion", "direct_inversion_p2p", "pnp", "turboedit"])
def test_every_new_editor_runs_through_the_edit_task(tiny_sd_adapter, tmp_path: Path, editor: str) -> None:
    """The editors of the paper's Fig. 5 and PIE-Bench (each checked against its official loop in
    tests/test_editor_*.py) run by name (``task.editor``) with ok rows and their own label."""
    entries = world_edit_dataset(cache_dir=tmp_path / "world", max_pairs=1)
    df = evaluate_edits(tiny_sd_adapter, ScheduleSpec("ddim", 2), ddim.invert, "ddim", entries, EditSettings(editor),
                        progress=False, save_images=False, warmup=0)
    assert set(df["inverter"]) == {f"ddim+{editor}"}
    by = df.set_index("metric")["status"]
    for name in ("bg_psnr", "recon_psnr", "target_psnr", "edit_success", "nfe_forward_edit"):
        assert by[name] == "ok", (name, df[df["metric"] == name]["reason"].tolist())
    assert df.set_index("metric")["value"]["nfe_forward_edit"] > 0
