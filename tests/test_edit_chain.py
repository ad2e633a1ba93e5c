"""``task=edit_chain`` (eval.tasks.edit_chain) and its world chains (eval.edit_chains).

Oracles: every world chain step is one valid edit of the previous, its masks cover every pixel
that changes; a chain of identity edits with an exact inverter (Edit-Friendly DDPM, exact
reconstruction by construction) through a pixel-exact "VAE" returns the source bit for bit;
in ``reinvert`` mode step k inverts step k-1's saved image with caption k-1 (the inverter's
inputs are recorded), in ``latent`` mode the source is inverted once; a tiny-model run gives the
fixed row set (ok / unavailable / skipped) in-process and through run.py with the preset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from baselines import ddim, edit_friendly
from eval.data import sample_dataset
from eval.edit_chains import ChainEntry, world_chain, world_chain_dataset
from eval.settings import RunSettings
from eval.tasks import run
from eval.tasks.edit_chain import CHAIN_METRICS, chain_directions
from eval.world.checker import check
from eval.world.generator import render
from eval.world.grammar import ATTRIBUTES, parse
from gnri.images import load_image
from gnri.models.base import ScheduleSpec

ROOT = Path(__file__).resolve().parents[1]
TARGET = "eval.tasks.edit_chain:EditChain"


def _settings(tmp_path: Path, steps: int = 2, **task: object) -> RunSettings:
    return RunSettings(ScheduleSpec("ddim", steps), "inv", task="edit_chain", task_params=task, progress=False,
                       out_dir=tmp_path / "run", cache_dir=tmp_path / "cache")


class PixelAdapter:
    """The tiny SD adapter seen through an exact "VAE" at 64 px: latent channels 0-2 are ``2x - 1``,
    channel 3 is zero; decoding reads channels 0-2 back (the shared fixture stays untouched)."""

    name = "tiny_sd_pixels"

    def __init__(self, inner) -> None:
        self.inner = inner

    def image_size(self) -> tuple[int, int]:
        return 64, 64

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.inner.device, self.inner.dtype) * 2 - 1
        return torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents[:, :3] + 1) / 2).clamp(0, 1)

    def __getattr__(self, attr: str):
        return getattr(self.inner, attr)


class Recording:
    """An inverter that records each call's clean latent and conditioning, then inverts with ``inner``."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def __call__(self, denoiser, x0, grid, cond):
        self.calls.append((x0.detach().clone(), cond))
        return self.inner(denoiser, x0, grid, cond)


def _table(df: pd.DataFrame, item: str) -> dict[str, tuple[str, float, str]]:
    rows = df[df["image"] == item]
    return {r.metric: (r.status, r.value, r.reason) for r in rows.itertuples()}


# ------------------------------------------------------------------ the world's chains


def test_world_chains_are_successive_single_edits_with_exact_masks(tmp_path: Path) -> None:
    entries = world_chain_dataset(max_chains=12, cache_dir=tmp_path)
    assert len(entries) == 12 and {len(e.steps) for e in entries} <= {3, 4, 5}
    assert len({len(e.steps) for e in entries}) > 1  # lengths vary
    for index, entry in enumerate(entries):
        scenes, edited = world_chain(index)
        captions = [entry.caption, *entry.steps]
        assert captions == [sc.caption for sc in scenes] and entry.target_caption == captions[-1]
        assert "background" not in edited and all(a != b for a, b in zip(edited, edited[1:]))
        for before, after, attribute in zip(captions, captions[1:], edited):
            a, b = parse(before).stated(), parse(after).stated()
            assert [k for k in ATTRIBUTES if a.get(k) != b.get(k)] == [attribute]
        assert check(load_image(entry.path), entry.caption).ok
        assert check(load_image(entry.target_path), entry.target_caption).ok
        touched = entry.mask()
        assert touched.any() and not touched.all()
        source = render(scenes[0])[0]
        for sc in scenes[1:]:  # nothing changes outside the chain's union mask, at any step
            assert np.array_equal(render(sc)[0][~touched], source[~touched])
        assert np.array_equal(np.logical_or.reduce([m() for m in entry.step_masks]), touched)
    again = world_chain_dataset(max_chains=12, cache_dir=tmp_path)
    assert [e.edit_type for e in again] == [e.edit_type for e in entries]  # deterministic
    with pytest.raises(ValueError, match="attributes"):
        world_chain_dataset(attributes=["texture"], cache_dir=tmp_path)


# ------------------------------------------------------------------ oracles on the task


def _identity_chain(tmp_path: Path, steps: int = 3) -> ChainEntry:
    entry = world_chain_dataset(max_chains=1, cache_dir=tmp_path / "world")[0]
    none = partial(np.zeros, (64, 64), dtype=bool)  # identity edits touch no pixel
    return ChainEntry("identity", entry.path, entry.caption, target_caption=entry.caption, mask=none,
                      steps=(entry.caption,) * steps, step_masks=(none,) * steps, edit_type="identity")


@pytest.mark.parametrize("mode", ["reinvert", "latent"])
def test_identity_chain_with_an_exact_inverter_returns_the_source(tiny_sd_adapter, tmp_path: Path, mode: str) -> None:
    chain = _identity_chain(tmp_path)
    inverter = partial(edit_friendly.invert, eta=1.0, skip=0.0)
    df = run(_settings(tmp_path, 3, mode=mode, max_steps=4), PixelAdapter(tiny_sd_adapter), inverter, [chain],
             target=TARGET)
    rows = _table(df, "identity")
    assert list(rows) == list(chain_directions(4))
    source_success = rows["chain_source_success"][1]
    for k in (1, 2, 3):
        assert rows[f"chain_bg_drift_psnr_{k}"][:2] == ("ok", float("inf")), k  # the source, bit for bit
        assert rows[f"chain_edit_success_{k}"][:2] == ("ok", source_success)
        assert rows[f"chain_time_s_{k}"][0] == "ok"
    assert rows["chain_final_bg_drift_psnr"][1] == float("inf") and rows["chain_all_success"][1] == source_success
    assert rows["chain_edit_success_4"] == ("unavailable", rows["chain_edit_success_4"][1], "the chain has 3 edits")
    times = [rows[f"chain_time_s_{k}"][1] for k in (1, 2, 3)]
    assert times == sorted(times) and rows["chain_time_s"][1] == times[-1]  # cumulative


def test_reinvert_inverts_each_previous_result_with_its_caption(tiny_sd_adapter, tmp_path: Path) -> None:
    """Step k's inversion input is step k-1's saved (8-bit) image, with caption k-1; latent mode inverts once."""
    adapter = PixelAdapter(tiny_sd_adapter)
    chain = world_chain_dataset(max_chains=1, cache_dir=tmp_path / "world")[0]
    captions = [chain.caption, *chain.steps]
    recording = Recording(ddim.invert)
    run(_settings(tmp_path, 2, mode="reinvert"), adapter, recording, [chain], target=TARGET)
    strip = load_image(tmp_path / "run" / "images" / "chains" / f"{chain.image_id}.png")
    frames = strip.reshape(3, 64, len(captions), 64).permute(2, 0, 1, 3)  # source, step 1, ..., step K
    calls = recording.calls[-len(chain.steps):]  # after the warm-up's
    assert len(calls) == len(chain.steps)
    for k, (x0, cond) in enumerate(calls):  # step k + 1 inverts frame k with caption k
        assert torch.allclose(adapter.decode_latents(x0)[0], frames[k], rtol=0, atol=1e-6), k  # 8-bit: 1/255 apart
        expected = tiny_sd_adapter.encode_prompts([captions[k]], 1.0).positive["prompt_embeds"]
        assert torch.equal(cond.positive["prompt_embeds"], expected), k
    assert not torch.equal(frames[1], frames[0])  # the tiny model's edits do change the image

    latent = Recording(ddim.invert)
    df = run(_settings(tmp_path / "latent", 2, mode="latent"), adapter, latent, [chain], target=TARGET)
    assert len(latent.calls) == 1 + 1  # warm-up and the one inversion
    assert set(df["inverter"]) == {"inv+prompt_swap+latent"}


def test_tiny_run_has_the_fixed_rows(tiny_sd_adapter, tmp_path: Path) -> None:
    chains = world_chain_dataset(max_chains=2, min_steps=2, max_steps=3, cache_dir=tmp_path / "world")
    long = world_chain_dataset(max_chains=1, min_steps=5, max_steps=5, cache_dir=tmp_path / "world")[0]
    data = [*chains, long, sample_dataset()[0]]
    df = run(_settings(tmp_path, 2, max_steps=4), tiny_sd_adapter, ddim.invert, data, target=TARGET)
    names = list(chain_directions(4))
    assert len(names) == 3 * 4 + len(CHAIN_METRICS) and len(df) == len(data) * len(names)
    assert set(df["inverter"]) == {"inv+prompt_swap"}
    for chain in chains:
        rows = _table(df, chain.image_id)
        assert list(rows) == names
        n = len(chain.steps)
        assert rows["chain_length"][1] == n
        assert df[df["image"] == chain.image_id]["caption"].iloc[0] == " -> ".join([chain.caption, *chain.steps])
        for k in range(1, 5):
            for metric in ("chain_edit_success", "chain_bg_drift_psnr", "chain_time_s"):
                status, value, reason = rows[f"{metric}_{k}"]
                assert (status == "ok") == (k <= n), (metric, k)
                if k > n:
                    assert status == "unavailable" and reason == f"the chain has {n} edits"
            if k <= n:
                assert rows[f"chain_edit_success_{k}"][1] in (0.0, 1.0)
        assert {s for s, _, _ in rows.values()} == {"ok", "unavailable"}
    assert set(df[df["image"] == long.image_id]["status"]) == {"skipped"}  # 5 edits > max_steps=4
    assert set(df[df["image"] == sample_dataset()[0].image_id]["status"]) == {"skipped"}  # not a chain
    assert (tmp_path / "run" / "images" / "chains" / f"{chains[0].image_id}.png").is_file()
    again = run(_settings(tmp_path, 2, max_steps=4), tiny_sd_adapter, ddim.invert, data, target=TARGET)
    cols = ["image", "metric", "status", "value", "reason"]
    pd.testing.assert_frame_equal(again[cols].reset_index(drop=True), df[cols].reset_index(drop=True),
                                  check_dtype=False)  # resumed from results.csv
    with pytest.raises(ValueError, match="task.mode"):
        run(_settings(tmp_path, 2, mode="sideways"), tiny_sd_adapter, ddim.invert, data, target=TARGET)


def test_the_preset_runs_through_run_py(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(
        [sys.executable, "run.py", "experiment=world_edit_chain", "model=tiny_sd", "schedule=ddim10",
         "schedule.num_steps=2", "inverter=ddim", "max_images=1", "dataset.max_chains=1", "progress=false",
         f"dataset.cache_dir={tmp_path / 'world'}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(rows["metric"]) == list(chain_directions(5))
    assert set(rows["status"]) == {"ok", "unavailable"} and set(rows["inverter"]) == {"ddim+prompt_swap"}
