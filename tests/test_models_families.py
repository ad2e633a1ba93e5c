"""The model boundary: the one table of family facts and every view derived from it, the adapter
protocol every adapter meets, and the editing hooks (attention processors, module hooks) restoring
what they replace."""

from __future__ import annotations

import typing

import pytest
import torch

import gnri.api as api
from eval import validate
from gnri import models
from gnri.models import families
from gnri.models.base import AdapterDefaults, ModelAdapter, ScheduleSpec
from gnri.models.tiny import TINY_FAMILIES, tiny_adapter, tiny_pipeline

# What each family was before the table existed (gnri/models/__init__.py, gnri/api.py, eval/validate.py, run.py).
BEFORE = {
    "sd": dict(cls="SDAdapter", maths="vp", dtype="float16", library=ScheduleSpec("ddim", 50, "leading"), run=None),
    "sdxl": dict(cls="SDXLAdapter", maths="vp", dtype="float16", library=ScheduleSpec("euler", 4, "trailing"),
                 run=None),
    "flux": dict(cls="FluxAdapter", maths="flow", dtype="bfloat16", library=ScheduleSpec("flow_euler", 4),
                 run="flow4"),
}


def test_table_matches_what_each_place_knew() -> None:
    assert models.FAMILIES == TINY_FAMILIES == ("sd", "sdxl", "flux") == tuple(BEFORE)
    for family, was in BEFORE.items():
        assert models.adapter_class(family).__name__ == was["cls"]
        assert validate.FAMILY_OF[family] == families.maths_family(family) == was["maths"]
        assert models.GPU_DTYPES[family] == was["dtype"]
        assert families.default_schedule_name(family) == was["run"]
        assert api.resolve_schedule(families.library_schedule_name(family)) == was["library"]
    assert models.PIPELINE_FAMILIES == {
        "StableDiffusionPipeline": "sd", "StableDiffusionImg2ImgPipeline": "sd", "StableDiffusionXLPipeline": "sdxl",
        "StableDiffusionXLImg2ImgPipeline": "sdxl", "FluxPipeline": "flux", "FluxImg2ImgPipeline": "flux"}
    assert api.PIPELINE_FAMILIES == {"StableDiffusionXL": "sdxl", "Flux": "flux", "StableDiffusion": "sd"}
    assert [api.family_of(type(n, (), {})()) for n in ("StableDiffusionXLImg2ImgPipeline", "StableDiffusionPipeline",
                                                       "FluxKontextPipeline")] == ["sdxl", "sd", "flux"]
    with pytest.raises(ValueError, match="supported: StableDiffusion\\*, StableDiffusionXL\\*, Flux\\*"):
        api.family_of(object())
    with pytest.raises(ValueError, match="model.family must be one of"):
        models.adapter_class("sd3")


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux"])
def test_each_adapter_meets_the_protocol_and_knows_its_families(family: str) -> None:
    adapter = tiny_adapter(family)
    members = [n for n in dir(ModelAdapter) if not n.startswith("_")] + list(typing.get_type_hints(ModelAdapter))
    assert all(hasattr(adapter, n) for n in members), [n for n in members if not hasattr(adapter, n)]
    assert adapter.loader_family == family and adapter.family == BEFORE[family]["maths"]
    assert adapter.compile_clock is None and adapter.device == torch.device("cpu") and adapter.dtype == torch.float32
    assert api.default_schedule(adapter) == BEFORE[family]["library"]
    assert type(tiny_pipeline(family)).__name__ in families.TABLE[family].pipelines
    assert adapter.guidance_problem(1.0) is None and adapter.prompt_warning("a cat") is None


def test_default_schedule_of_an_adapter_without_a_loader_family() -> None:
    flow = type("Toy", (AdapterDefaults,), {"family": "flow"})()
    sdxl = type("SDXLToy", (AdapterDefaults,), {})()
    assert api.default_schedule(flow) == BEFORE["flux"]["library"]
    assert api.default_schedule(sdxl) == BEFORE["sdxl"]["library"]
    assert api.default_schedule(AdapterDefaults()) == BEFORE["sd"]["library"]
    with pytest.raises(ValueError, match="offers no attention layers"):
        AdapterDefaults().attention_processors(lambda name, proc: proc)


def test_attention_processors_and_module_hooks_restore_what_they_replace(tiny_sd_adapter) -> None:  # noqa: ANN001
    adapter = tiny_sd_adapter
    before = dict(adapter.network.attn_processors)
    seen: list[str] = []

    class Counting:
        def __init__(self, name, inner):  # noqa: ANN001
            self.name, self.inner = name, inner

        def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
            seen.append(self.name)
            return self.inner(*args, **kwargs)

    resnets = adapter.module_names("ResnetBlock2D")
    features: dict[str, tuple[int, ...]] = {}

    def record(name: str):  # noqa: ANN202
        def hook(module, args, out) -> None:  # noqa: ANN001
            features[name] = tuple(out.shape)  # a forward hook returning None leaves the output as it is

        return hook

    hooks = {n: record(n) for n in resnets}
    latent = torch.zeros(adapter.latent_shape())
    cond = adapter.encode_prompts(["a cat"])
    grid = adapter.grid(ScheduleSpec("ddim", 2), tuple(latent.shape))
    with torch.no_grad():
        plain = adapter.denoiser()(latent, grid.levels[1], cond).eps
        with adapter.attention_processors(Counting), adapter.module_hooks(hooks):
            hooked = adapter.denoiser()(latent, grid.levels[1], cond).eps
    assert torch.equal(plain, hooked)
    assert sorted(set(seen)) == sorted(adapter.attention_layers()) and set(features) == set(resnets) and resnets
    after = adapter.network.attn_processors
    assert all(after[n] is before[n] for n in before)
    assert all(not m._forward_hooks for m in adapter.network.modules())
    with pytest.raises(ValueError, match="has no module 'nope'"):
        with adapter.module_hooks({"nope": lambda *a: None}):
            pass
    with pytest.raises(ValueError, match="offers no Flux single-stream attention"):
        adapter.value_processor(None, lambda name, v: None, "x")


def test_p2p_processor_module_still_works(tiny_sd_adapter) -> None:  # noqa: ANN001
    from gnri.edit.p2p_processor import P2PAttnProcessor, attention_control, place_in_unet

    unet = tiny_sd_adapter.network
    before = dict(unet.attn_processors)
    with attention_control(unet, lambda probs, is_cross, place: probs):
        assert all(isinstance(p, P2PAttnProcessor) for p in unet.attn_processors.values())
    assert all(unet.attn_processors[n] is before[n] for n in before)
    assert place_in_unet("mid_block.attentions.0") == "mid"


def test_load_pipeline_reads_a_folder_for_the_library(tmp_path) -> None:  # noqa: ANN001
    from gnri.models.tiny import save_tiny

    folder = save_tiny("sd", tmp_path / "sd")
    pipe = models.load_pipeline(folder)
    assert api.family_of(pipe) == models.folder_family(folder) == "sd"
