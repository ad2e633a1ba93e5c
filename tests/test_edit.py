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

from gnri import catalog
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
    defaults = catalog.method(name).defaults()  # the signature's, with the config's values
    for key, value in FAST.items():
        if key in defaults:
            node[key] = min(int(defaults[key]), value)
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
# The rectified-flow inverters (they declare families=("flow",) and refuse VP grids): run on the tiny Flux model instead.
FLOW_ONLY = {name for name, m in catalog.methods().items() if m.info().families == ("flow",)}


def _invert(adapter, name: str):
    """(result, grid, cond) of inverter ``name``: at guidance ``CFG`` if it needs CFG, else 1."""
    inverter, denoiser = _inverter(name), adapter.denoiser()
    latent, grid, cond = _setup(adapter, CFG if name in NEEDS_CFG else 1.0)
    with torch.no_grad():
        return inverter(denoiser, latent, grid, cond), grid, cond


def replay(denoiser, result, grid, target, own_sampler: bool = True) -> torch.Tensor:
    """The edit by hand: DDIM/Euler steps from ``result.z`` with ``target``'s positive branch; a
    step with stored conditioning keeps its negative branch and guidance scale; a method's own
    sampler (EDICT) is called with ``target`` (``own_sampler=False``: the by-hand steps anyway).
    Written without ``reconstruct``/``sample``."""
    if result.sampler is not None and own_sampler:
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


# The methods with their own sampler: ``replay`` calls that sampler as ``reconstruct`` does, so the
# same-prompt edit is checked against something independent of it instead (measured on the tiny
# models, STEPS = 3, FAST budgets): "source" -- the source latent itself, max abs error at most the
# tolerance (exact by construction: EDICT 7e-5 in float32 through its mixing, edit-friendly 7e-9,
# FTEdit 2e-9, FlowEdit 0); "below_euler" -- RMS error under the fraction of plain Euler
# inversion's (rf_solver 0.015, fireflow 0.016, uni_inv 0.058 against Euler's 0.166);
# "euler_replay" -- the by-hand Euler steps (RF-Inversion's controller is off: its stop index
# int(0.25 * 3) = 0; test_rf_inversion_controller_lands_on_the_source checks it on).
OWN_SAMPLER = {
    "edict": ("source", 3e-4), "edit_friendly": ("source", 1e-6), "ftedit": ("source", 1e-6),
    "flowedit": ("source", 1e-6), "rf_solver": ("below_euler", 0.5), "fireflow": ("below_euler", 0.5),
    "uni_inv": ("below_euler", 0.5), "rf_inversion": ("euler_replay", 1e-6),
}


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


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
    assert (result.sampler is not None) == (name in OWN_SAMPLER), f"{name}: own sampler not listed in OWN_SAMPLER"
    if name in OWN_SAMPLER:
        kind, tol = OWN_SAMPLER[name]
        latent = _setup(adapter, 1.0)[0]
        if kind == "source":
            err = float((same - latent).abs().max())
            assert err <= tol, f"{name}: same-prompt edit is {err:.2e} from the source latent (max abs), allowed {tol}"
        elif kind == "below_euler":
            euler, _, _ = _invert(adapter, "ddim")
            ceiling = tol * _rms(replay(denoiser, euler, grid, cond) - latent)
            assert _rms(same - latent) < ceiling, (name, _rms(same - latent), ceiling)
        else:
            torch.testing.assert_close(same, replay(denoiser, result, grid, cond, own_sampler=False), rtol=0, atol=tol)
    torch.testing.assert_close(rebuilt, same, rtol=0, atol=0)
    target = edit_conditioning(adapter, [TARGET], cond.guidance_scale)
    other = prompt_swap(denoiser, result, grid, target)
    torch.testing.assert_close(other, replay(denoiser, result, grid, target), rtol=0, atol=1e-6)
    assert not torch.allclose(other, rebuilt), f"{name}: a different prompt left the image unchanged"


@torch.no_grad()
def test_rf_inversion_controller_lands_on_the_source(tiny_flux_adapter) -> None:
    """RF-Inversion's controlled reverse ODE with ``eta = 1`` on every step: the last step from
    ``sigma`` to 0 is ``z + sigma (y0 - z) / sigma = y0``, the source latent, whatever the network does."""
    from baselines import rf_inversion

    latent, grid, cond = _setup(tiny_flux_adapter, 1.0)
    denoiser = tiny_flux_adapter.denoiser()
    result = rf_inversion.invert(denoiser, latent, grid, cond, eta=1.0, start=0.0, stop=1.0)
    same = prompt_swap(denoiser, result, grid, edit_conditioning(tiny_flux_adapter, [SOURCE], 1.0))
    torch.testing.assert_close(same, latent, rtol=0, atol=1e-5)
    assert _rms(result.z - latent) > 0.1  # the inverted latent is far from the source


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
