"""Oracles for prompt-swap editing: with the source prompt an edit IS the reconstruction, bit for
bit, after every inverter (pure latents, null-text's and NPI's per-step negatives, EDICT's own
sampler); with another prompt it differs; stacked pair states sample as their halves.

``prompt_swap`` is implemented by ``reconstruct``, so comparing the two would compare a function
with itself: the edits are checked against :func:`replay`, a by-hand transcription of the
documented contract (the stored state sampled with the target's positive branch, per-step
negatives and guidance scales kept, a method's own sampler used as is)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gnri.core import Conditioning, reconstruct
from gnri.edit import edit_conditioning, prompt_swap, stack_pair
from gnri.models.base import ScheduleSpec

CONF = Path(__file__).resolve().parents[1] / "conf" / "inverter"
SOURCE, TARGET = "a photo of a cat", "a photo of a dog"
STEPS = 3
CFG = 7.5  # for the inverters that need classifier-free guidance (null-text, NPI)
# Small budgets so the sweep over every inverter stays fast; the hyperparameter names are the configs'.
FAST = {"max_iters": 4, "num_inner_steps": 3, "n_iters": 2, "newton_iters": 1}


def _inverter(name: str):
    node = OmegaConf.load(CONF / f"{name}.yaml")
    for key, value in FAST.items():
        if key in node:
            node[key] = min(int(node[key]), value)
    return instantiate(node, _convert_="all")


def _setup(adapter, guidance: float):
    torch.manual_seed(0)
    pixels = torch.rand(1, 3, *adapter.image_size())
    latent = adapter.encode_images(pixels)
    kind = "flow_euler" if adapter.family == "flow" else "ddim"
    grid = adapter.grid(ScheduleSpec(kind, STEPS), tuple(latent.shape))
    return latent, grid, adapter.encode_prompts([SOURCE], guidance)


# The inverters built on classifier-free guidance (they refuse guidance 1 with a ValueError);
# every other inverter runs at guidance 1, and any error it raises fails the test.
NEEDS_CFG = {"null_text", "negative_prompt"}
# The rectified-flow inverters (they refuse VP grids): run on the tiny Flux model instead.
FLOW_ONLY = {"rf_inversion", "rf_solver", "fireflow", "uni_inv", "ftedit", "flowedit"}


def _invert(adapter, name: str):
    """(result, grid, cond) of inverter ``name``: at guidance ``CFG`` if it needs CFG, else 1."""
    inverter, denoiser = _inverter(name), adapter.denoiser()
    latent, grid, cond = _setup(adapter, CFG if name in NEEDS_CFG else 1.0)
    with torch.no_grad():
        return inverter(denoiser, latent, grid, cond), grid, cond


def replay(denoiser, result, grid, target) -> torch.Tensor:
    """The edit by hand: DDIM/Euler steps from ``result.z`` with ``target``'s positive branch; a
    step with stored conditioning keeps its negative branch and guidance scale; a method's own
    sampler (EDICT) is called with ``target``. Written without ``reconstruct``/``sample``."""
    if result.sampler is not None:
        return result.sampler(denoiser, grid, target, result.z)
    z = result.z
    for i in reversed(range(grid.num_steps)):
        c = target
        if result.cond_per_step is not None:
            stored = result.cond_per_step[i]
            c = Conditioning(target.positive, stored.negative, stored.guidance_scale)
        src, dst = grid.levels[i + 1], grid.levels[i]
        pred = denoiser(z, src, c)
        z = dst.a * pred.x0 + dst.s * pred.eps
        assert grid.noise(i) is None  # DDIM grids here: no stored noise
    return z


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF.glob("*.yaml")))
@torch.no_grad()
def test_same_prompt_edit_is_the_reconstruction(request, name: str) -> None:
    adapter = request.getfixturevalue("tiny_flux_adapter" if name in FLOW_ONLY else "tiny_sd_adapter")
    result, grid, cond = _invert(adapter, name)
    denoiser = adapter.denoiser()
    rebuilt = reconstruct(denoiser, result, grid, cond)
    source = edit_conditioning(adapter, [SOURCE], cond.guidance_scale)  # re-encoded by the edit path
    same = prompt_swap(denoiser, result, grid, source)
    assert torch.equal(same, replay(denoiser, result, grid, cond)), f"{name}: the same-prompt edit is not the reconstruction"
    torch.testing.assert_close(rebuilt, same, rtol=0, atol=0)
    target = edit_conditioning(adapter, [TARGET], cond.guidance_scale)
    other = prompt_swap(denoiser, result, grid, target)
    torch.testing.assert_close(other, replay(denoiser, result, grid, target), rtol=0, atol=1e-6)
    assert not torch.allclose(other, rebuilt), f"{name}: a different prompt left the image unchanged"


@pytest.mark.parametrize("name", ["ddim", "null_text", "edict"])
@torch.no_grad()
def test_stacked_pair_samples_as_its_halves(tiny_sd_adapter, name: str) -> None:
    """The pair batch [source; target] regenerates the source and the prompt-swap edit.

    Batch-2 and batch-1 network calls differ by float32 round-off, which EDICT's mixing
    amplifies (measured: 3e-4 in float32, 6e-13 in float64), hence its looser tolerance.
    """
    adapter = tiny_sd_adapter
    result, grid, cond = _invert(adapter, name)
    target = edit_conditioning(adapter, [TARGET], cond.guidance_scale)
    pair, pair_cond = stack_pair(result, cond, target)
    assert pair.z.shape[0] == 2 and pair_cond.positive["prompt_embeds"].shape[0] == 2
    out = reconstruct(adapter.denoiser(), pair, grid, pair_cond)
    denoiser, atol = adapter.denoiser(), 2e-3 if name == "edict" else 1e-4
    torch.testing.assert_close(out[:1], reconstruct(denoiser, result, grid, cond), atol=atol, rtol=0)
    torch.testing.assert_close(out[1:], prompt_swap(denoiser, result, grid, target), atol=atol, rtol=0)


def test_gnri_edit_guidance_builds_an_empty_negative(tiny_sd_adapter) -> None:
    """GNRI's editing: edit guidance 1.2 with negative "" is classifier-free guidance against ""."""
    cond = edit_conditioning(tiny_sd_adapter, [TARGET], 1.2)
    empty = tiny_sd_adapter.encode_prompts([""], 1.0).positive["prompt_embeds"]
    assert cond.uses_cfg and cond.guidance_scale == 1.2
    assert torch.equal(cond.negative["prompt_embeds"], empty)
