"""RF-Edit / FireFlow value injection on tiny_flux: processors in and out, the two limits, the window."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from baselines import fireflow, rf_solver
from gnri.core import CountingDenoiser, reconstruct
from gnri.edit.v_injection import (
    InjectionState,
    ValueInjectionProcessor,
    WindowDenoiser,
    injected_edit,
    single_block_names,
    single_stream_layers,
    value_injection,
)
from gnri.models.base import AdapterDefaults, ScheduleSpec
from gnri.models.tiny import tiny_adapter

STEPS = 4


@pytest.fixture(scope="module")
def setup():  # noqa: ANN201
    torch.manual_seed(0)
    adapter = tiny_adapter("flux")
    images = torch.rand(1, 3, *adapter.image_size(), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        latent = adapter.encode_images(images)
        grid = adapter.grid(ScheduleSpec(kind="flow_euler", num_steps=STEPS), tuple(latent.shape))
        source = adapter.encode_prompts(["a photo of a cat"])
        target = adapter.encode_prompts(["a painting of a red dog"])
        results = {m.METHOD: m.invert(adapter.denoiser(), latent, grid, source) for m in (rf_solver, fireflow)}
    return SimpleNamespace(adapter=adapter, grid=grid, source=source, target=target, results=results)


def _processors(adapter):  # noqa: ANN001, ANN202
    return dict(adapter.network.attn_processors)


@pytest.mark.parametrize("method", ["rf_solver", "fireflow"])
def test_inject_zero_is_the_prompt_swap_and_same_prompt_is_reconstruction(setup, method: str) -> None:  # noqa: ANN001
    s, result = setup, setup.results[method]
    with torch.no_grad():
        swap = reconstruct(s.adapter.denoiser(), result, s.grid, s.target)
        recon = reconstruct(s.adapter.denoiser(), result, s.grid, s.source)
        none = injected_edit(s.adapter, result, s.grid, s.source, s.target, inject=0, blocks="all")
        same = injected_edit(s.adapter, result, s.grid, s.source, s.source, inject=STEPS, blocks="all")
        edit = injected_edit(s.adapter, result, s.grid, s.source, s.target, inject=2, blocks="all")
    torch.testing.assert_close(none, swap, rtol=0, atol=1e-6)
    torch.testing.assert_close(same, recon, rtol=0, atol=1e-5)
    assert (edit - swap).abs().max() > 1e-4  # injection acts


def test_processors_installed_during_and_restored_after(setup) -> None:  # noqa: ANN001
    s = setup
    before = _processors(s.adapter)
    seen: list[dict] = []

    class Spy:
        def __init__(self, inner):  # noqa: ANN001
            self.inner = inner

        def forwards_per_call(self, cond):  # noqa: ANN001, ANN202
            return self.inner.forwards_per_call(cond)

        def __call__(self, z, level, cond):  # noqa: ANN001, ANN202
            seen.append(_processors(s.adapter))
            return self.inner(z, level, cond)

    with torch.no_grad():
        injected_edit(s.adapter, s.results["rf_solver"], s.grid, s.source, s.target, inject=1,
                      denoiser=Spy(s.adapter.denoiser()))
    chosen = single_block_names(s.adapter.attention_layers(), "auto")
    assert seen and all(isinstance(p[n], ValueInjectionProcessor) for p in seen for n in chosen)
    assert all(not isinstance(p[n], ValueInjectionProcessor) for p in seen for n in p if n not in chosen)
    after = _processors(s.adapter)
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)

    class Boom(Exception):
        pass

    def fail(z, level, cond):  # noqa: ANN001, ANN202
        raise Boom

    fail.forwards_per_call = lambda cond: 1  # type: ignore[attr-defined]
    with pytest.raises(Boom):
        injected_edit(s.adapter, s.results["rf_solver"], s.grid, s.source, s.target, inject=1, denoiser=fail)
    after = _processors(s.adapter)
    assert all(after[n] is before[n] for n in before)


@pytest.mark.parametrize("method,inject,calls", [
    ("rf_solver", 1, [0, 1]), ("rf_solver", 2, [0, 1, 2, 3]),   # 2 calls per step
    ("fireflow", 1, [0, 1]), ("fireflow", 3, [0, 1, 2, 3]),     # start call + one midpoint call per step
])
def test_the_window_is_the_first_inject_denoising_steps(setup, method: str, inject: int, calls: list[int]) -> None:  # noqa: ANN001
    s = setup
    names = single_block_names(single_stream_layers(s.adapter), "all")
    state = InjectionState(threshold_s=s.grid.levels[STEPS - inject].s)
    with value_injection(s.adapter, names, state), torch.no_grad():
        state.start("record")
        reconstruct(WindowDenoiser(s.adapter.denoiser(), state), s.results[method], s.grid, s.source)
    assert sorted({call for call, _, _ in state.values}) == calls
    assert {name for _, name, _ in state.values} == set(names)
    assert {visit for _, _, visit in state.values} == {0}  # one network run per call


def test_nfe_counts_both_passes(setup) -> None:  # noqa: ANN001
    s = setup
    counting = CountingDenoiser(s.adapter.denoiser())
    with torch.no_grad():
        injected_edit(s.adapter, s.results["fireflow"], s.grid, s.source, s.target, inject=1, denoiser=counting)
        assert counting.counter.forward == 2 * (STEPS + 1)
        counting.counter.reset()
        injected_edit(s.adapter, s.results["fireflow"], s.grid, s.source, s.target, inject=0, denoiser=counting)
        assert counting.counter.forward == STEPS + 1


def test_block_choice() -> None:
    fake = [f"single_transformer_blocks.{i}.attn.processor" for i in range(38)] + ["transformer_blocks.0.attn.processor"]
    auto = single_block_names(fake, "auto")
    assert [int(n.split(".")[1]) for n in auto] == list(range(20, 38))  # RF-Solver's id > 19, FireFlow's 20..37
    assert len(single_block_names(fake, "all")) == 38
    assert single_block_names(fake, [3, 1]) == [f"single_transformer_blocks.{i}.attn.processor" for i in (1, 3)]


def test_bad_inputs_one_line(setup) -> None:  # noqa: ANN001
    s, result = setup, setup.results["rf_solver"]
    cases = [
        ({"inject": STEPS + 1}, "inject must be an integer in \\[0, 4\\]"),
        ({"inject": -1}, "inject must be"),
        ({"blocks": "some"}, "blocks must be 'auto', 'all'"),
        ({"blocks": [7]}, "blocks must be indices in \\[0, 0\\]"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            injected_edit(s.adapter, result, s.grid, s.source, s.target, **options)
        assert "\n" not in str(info.value)
    unet_like = type("UNetLike", (AdapterDefaults,), {"name": "tiny_sd", "network_kind": "unet"})()
    with pytest.raises(ValueError, match="v_inject: needs a Flux transformer with single-stream blocks; model 'tiny_sd'"):
        injected_edit(unet_like, result, s.grid, s.source, s.target)


def test_edit_harness_smoke(setup, tmp_path) -> None:  # noqa: ANN001
    """task=edit task.editor=v_inject through eval.tasks.edit on one world pair: ok rows, both passes counted."""
    from eval.edit_data import world_edit_dataset
    from eval.tasks.edit import EditSettings, evaluate_edits

    entries = world_edit_dataset(cache_dir=tmp_path / "world", max_pairs=1)
    df = evaluate_edits(setup.adapter, ScheduleSpec("flow_euler", 2), fireflow.invert, "fireflow", entries,
                        EditSettings("v_inject", v_inject={"inject": 1}), progress=False, out_dir=tmp_path / "run",
                        save_images=False, warmup=0)
    assert set(df["inverter"]) == {"fireflow+v_inject"}
    by = df.set_index("metric")
    assert by.loc["recon_psnr", "status"] == "ok" and by.loc["bg_psnr", "status"] == "ok"
    assert by.loc["nfe_forward", "value"] == 3 and by.loc["nfe_forward_edit", "value"] == 6  # steps + 1, twice
    bad = evaluate_edits(setup.adapter, ScheduleSpec("flow_euler", 2), fireflow.invert, "fireflow", entries,
                         EditSettings("v_inject", v_inject={"inject": 3}), progress=False, out_dir=tmp_path / "bad",
                         save_images=False, warmup=0)
    assert set(bad["status"]) == {"skipped"} and bad["reason"].str.contains("v_inject: inject must be").all()
