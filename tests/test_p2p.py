"""Prompt-to-Prompt: token mappers as in google/prompt-to-prompt's seq_aligner, the controller's
rewrite of the target half, its schedules, and on the tiny SD model: a word swap changes the
image, full attention replacement keeps the source layout closer than a plain prompt swap, the
source branch is the reconstruction (also for null-text and EDICT states), processors restored."""

from __future__ import annotations

import pytest
import torch

from baselines import ddim, edict, null_text
from gnri.core import reconstruct
from gnri.edit import edit_conditioning, make_controller, p2p_edit, prompt_swap
from gnri.edit.p2p import P2PController, refinement_mapper, replacement_mapper, word_token_indices
from gnri.models.base import AdapterDefaults, ScheduleSpec
from gnri.models.tiny import tiny_clip_tokenizer

L = 77
PAIRS = (("a photo of a cat", "a photo of a dog"), ("a red circle", "a blue square"))
FULL = {"cross_replace_steps": 1.0, "self_replace_steps": 1.0}


@pytest.fixture(scope="module")
def tok():
    return tiny_clip_tokenizer()  # byte level: one token per character


def test_word_token_indices(tok) -> None:
    assert word_token_indices("a photo of a cat", 4, tok) == [10, 11, 12]  # "c", "a", "t" after <start>
    assert word_token_indices("a red circle", 1, tok) == [2, 3, 4]


def test_replacement_mapper_swaps_words(tok) -> None:
    same = replacement_mapper("a photo of a cat", "a photo of a dog", tok, L)
    assert torch.equal(same, torch.eye(L))  # equal token counts: position to position
    m = replacement_mapper("a red circle", "a blue circle", tok, L)
    assert torch.equal(m[:2, :2], torch.eye(2))  # start token and "a" map to themselves
    for row in (2, 3, 4):  # 'r','e','d' spread evenly over 'b','l','u','e'
        assert torch.allclose(m[row, 2:6], torch.full((4,), 0.25)) and m[row].sum() == 1
    with pytest.raises(ValueError, match="same number of words"):
        replacement_mapper("a red circle", "a big red circle", tok, L)


def test_refinement_mapper_aligns_tokens(tok) -> None:
    mapper, alphas = refinement_mapper("a cat", "a cat", tok, L)
    assert torch.equal(mapper, torch.arange(L)) and bool(alphas.eq(1).all())
    src, tgt = "a red circle", "a red circle at the top"
    mapper, alphas = refinement_mapper(src, tgt, tok, L)
    n_src, n_tgt = len(tok.encode(src)), len(tok.encode(tgt))
    assert int(alphas[:n_tgt].eq(0).sum()) == n_tgt - n_src  # the inserted words keep their own maps
    kept = alphas[:n_tgt].eq(1)
    assert torch.equal(torch.tensor(tok.encode(src))[mapper[:n_tgt][kept]], torch.tensor(tok.encode(tgt))[kept])


def test_controller_rewrites_only_the_conditional_target_half(tok) -> None:
    c = make_controller(tok, ["a red circle"], ["a blue circle"], 10, mode="replace", **FULL)
    heads, q = 2, 4
    probs = torch.rand(2 * 2 * heads, q, L).softmax(-1)  # [uncond src, uncond tgt, cond src, cond tgt]
    c.begin(step=3, branches=2)
    out = c(probs.clone(), True)
    c.end()
    assert torch.equal(out[: 3 * heads], probs[: 3 * heads])  # unconditional branch and the source untouched
    expected = torch.einsum("hqw,wn->hqn", probs[2 * heads: 3 * heads], c.mapper[0])
    torch.testing.assert_close(out[3 * heads:], expected)
    self_probs = torch.rand(2 * heads, 16, 16).softmax(-1)  # no guidance: one branch
    c.begin(step=0, branches=1)
    out = c(self_probs.clone(), False)
    assert torch.equal(out[heads:], self_probs[:heads]) and torch.equal(out[:heads], self_probs[:heads])
    c.end()
    assert torch.equal(c(probs, True), probs)  # outside a denoiser call: pass through


def test_refinement_keeps_the_target_maps_of_new_tokens(tok) -> None:
    src, tgt = "a red circle", "a red circle at the top"
    c = make_controller(tok, [src], [tgt], 10, mode="refine", **FULL)
    probs = torch.rand(2 * 2, 4, L).softmax(-1)  # one branch, 2 heads
    c.begin(step=0, branches=1)
    out = c(probs.clone(), True)
    c.end()
    new = c.alphas[0].eq(0)
    assert int(new.sum()) > 0
    torch.testing.assert_close(out[2:][..., new], probs[2:][..., new])  # inserted words: the target's own maps
    kept = ~new
    expected = probs[:2][..., c.mapper[0][kept]]
    torch.testing.assert_close(out[2:][..., kept], expected)  # aligned tokens: the source's maps


def test_schedules_follow_the_public_code(tok) -> None:
    """Cross: int(b (n + 1)) rows of alpha_time_words; self: int(b n) steps (n = 10)."""
    c = make_controller(tok, ["a cat"], ["a dog"], 10, cross_replace_steps=0.4, self_replace_steps=(0.2, 0.6))
    assert [k for k in range(10) if c.cross_active(k)] == [0, 1, 2, 3]
    assert [k for k in range(10) if c.self_active(k)] == [2, 3, 4, 5]
    assert c.mode == "replace"
    assert make_controller(tok, ["a cat"], ["a black cat"], 10).mode == "refine"  # auto: word counts differ
    assert isinstance(c, P2PController)


def _setup(adapter, seed: int):
    torch.manual_seed(seed)
    latent = adapter.encode_images(torch.rand(1, 3, *adapter.image_size()))
    return latent, adapter.grid(ScheduleSpec("ddim", 10), tuple(latent.shape))


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


@torch.no_grad()
def test_word_swap_keeps_the_source_layout_closer_than_a_prompt_swap(tiny_sd_adapter) -> None:
    adapter, guidance = tiny_sd_adapter, 7.5
    before = {k: type(v) for k, v in adapter.pipe.unet.attn_processors.items()}
    for seed in (0, 1):
        latent, grid = _setup(adapter, seed)
        for source, target in PAIRS:
            result = ddim.invert(adapter.denoiser(), latent, grid, adapter.encode_prompts([source], 1.0))
            recon = reconstruct(adapter.denoiser(), result, grid, edit_conditioning(adapter, [source], guidance))
            swap = prompt_swap(adapter.denoiser(), result, grid, edit_conditioning(adapter, [target], guidance))
            src, p2p = p2p_edit(adapter, result, grid, [source], [target], guidance, **FULL)
            # the source branch is the reconstruction, up to float32 batch-of-2 vs batch-of-1 rounding under CFG 7.5
            torch.testing.assert_close(src, recon, atol=1e-3, rtol=1e-3)
            assert _rms(p2p, recon) > 1e-2, "the word swap did not change the image"
            assert _rms(p2p, recon) < _rms(swap, recon), f"{source!r} -> {target!r}, seed {seed}"
    assert {k: type(v) for k, v in adapter.pipe.unet.attn_processors.items()} == before


@pytest.mark.parametrize("name", ["null_text", "edict"])
@torch.no_grad()
def test_p2p_runs_on_per_step_and_own_sampler_states(tiny_sd_adapter, name: str) -> None:
    adapter, source = tiny_sd_adapter, PAIRS[0][0]
    latent, grid = _setup(adapter, 0)
    grid = adapter.grid(ScheduleSpec("ddim", 3), tuple(latent.shape))
    if name == "null_text":
        cond = adapter.encode_prompts([source], 7.5)
        result = null_text.invert(adapter.denoiser(), latent, grid, cond, num_inner_steps=2)
    else:
        cond = adapter.encode_prompts([source], 1.0)
        result = edict.invert(adapter.denoiser(), latent, grid, cond)
    recon = reconstruct(adapter.denoiser(), result, grid, cond)
    src, same = p2p_edit(adapter, result, grid, [source], [source], cond.guidance_scale, **FULL)
    atol = 2e-3 if name == "edict" else 1e-4  # EDICT amplifies batch round-off (see test_edit)
    torch.testing.assert_close(src, recon, atol=atol, rtol=0)
    torch.testing.assert_close(same, src, atol=1e-5, rtol=0)  # same prompt, same maps: same image


def test_p2p_needs_a_unet() -> None:
    flux_like = type("FluxLike", (AdapterDefaults,), {"name": "tiny_flux", "network_kind": "flux"})()
    with pytest.raises(ValueError, match="UNet"):
        p2p_edit(flux_like, None, None, ["a"], ["b"])  # type: ignore[arg-type]
