"""The library's first hour: one name per method, metrics, progress, batches, schedule names, save/load."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import gnri
from gnri.api import check_hyperparameters, image_tensor, psnr, resolve_method
from gnri import catalog
from gnri.registry import SCHEDULES

CONF = Path(__file__).resolve().parents[1] / "conf"
META = ("_target_", "_partial_")
STEPS4 = gnri.ScheduleSpec("ddim", 4, "leading")
PROMPT = "a red circle"


def _yaml(group: str) -> dict[str, dict]:
    return {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in sorted((CONF / group).glob("*.yaml"))}


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))


def test_each_inverter_yaml_holds_only_its_target_and_the_values_that_differ() -> None:
    """conf/inverter names the catalog's shipped methods; each file holds ``_target_``, ``_partial_``
    and only the values that differ from the function's signature, equal to the catalog's."""
    confs = _yaml("inverter")
    shipped = {n: m for n, m in catalog.methods().items() if m.origin == "shipped"}
    assert set(shipped) == set(confs), "conf/inverter and the pyproject.toml entry points must name the same methods"
    for name, node in confs.items():
        entry = shipped[name]
        assert node["_partial_"] is True and catalog.resolve(node["_target_"]) is entry.function(), name
        values = {k: v for k, v in node.items() if k not in META}
        signature = catalog.signature_defaults(entry.function())
        assert values == entry.bound_overrides(), name  # the same overrides in the YAML and the catalog
        repeated = [k for k, v in values.items() if signature.get(k, object()) == v]
        assert not repeated, f"conf/inverter/{name}.yaml repeats signature defaults: {repeated}"
        check_hyperparameters(name, entry.function(), values)  # every value reaches a real parameter


def test_catalog_defaults_are_the_signature_with_the_overrides() -> None:
    for name, entry in catalog.methods().items():
        expected = {**catalog.signature_defaults(entry.function()), **entry.bound_overrides()}
        assert entry.defaults() == expected, name
    assert catalog.method("fixed_point3").defaults()["max_iters"] == 3  # the variant's one value
    assert catalog.method("fixed_point").defaults()["max_iters"] == 30


def test_pyproject_entry_points_are_the_installed_ones() -> None:
    """The clone's pyproject.toml table (what the catalog reads) equals the installed metadata
    (scripts/setup.sh reinstalls when pyproject.toml changes)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        installed = {ep.name: ep.value for ep in distribution(catalog.DIST).entry_points if ep.group == catalog.GROUP}
    except PackageNotFoundError:
        pytest.skip("gnri-bench is not installed (a bare clone): the catalog reads pyproject.toml alone")
    assert installed == catalog._pyproject_entries()


def test_schedule_registry_equals_conf_schedule_exactly() -> None:
    confs = _yaml("schedule")
    assert set(SCHEDULES) == set(confs), "conf/schedule and gnri/registry.py SCHEDULES must name the same schedules"
    for name, node in confs.items():
        assert SCHEDULES[name] == node, name
        assert asdict(gnri.ScheduleSpec(**node)) == SCHEDULES[name]


def test_config_names_run_the_config_target_with_its_defaults(tiny_sd_adapter, image) -> None:
    from baselines import anderson as aidi
    from gnri.methods import anderson as gnri_aa

    assert resolve_method("anderson").func is aidi.invert  # the AIDI baseline, as inverter=anderson
    assert resolve_method("gnri_aa").func is gnri_aa.invert
    fp3 = gnri.invert(tiny_sd_adapter, image, PROMPT, method="fixed_point3", schedule=STEPS4, progress=False)
    assert fp3.result.iterations == [3, 3, 3, 3] and fp3.hyperparameters["max_iters"] == 3
    two = gnri.invert(tiny_sd_adapter, image, PROMPT, method="fixed_point3", schedule=STEPS4, progress=False,
                      max_iters=2)  # a keyword overrides the config's default
    assert two.result.iterations == [2, 2, 2, 2] and two.hyperparameters == {**fp3.hyperparameters, "max_iters": 2}


def test_unknown_names_give_one_line_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        resolve_method("nope")
    text = str(err.value)
    assert "\n" not in text and "'nope'" in text and all(name in text for name in catalog.methods())
    from gnri.api import resolve_schedule

    with pytest.raises(ValueError, match=r"unknown schedule 'ddim4'; valid names: .*ddim10.*flow4"):
        resolve_schedule("ddim4")


def test_a_misspelt_hyperparameter_names_the_valid_ones(tiny_sd_adapter, image) -> None:
    with pytest.raises(ValueError, match=r"method 'ddim' has no hyperparameter 'max_iter'; its hyperparameters: timestep$"):
        gnri.invert(tiny_sd_adapter, image, PROMPT, method="ddim", schedule=STEPS4, progress=False, max_iter=3)


def test_list_methods_names_every_config_with_its_docstring_and_origin(capsys) -> None:
    docs = gnri.list_methods(show=True)
    assert set(_yaml("inverter")) <= set(docs) and list(docs) == sorted(docs)
    for name in _yaml("inverter"):
        fn = catalog.method(name).function()
        assert docs[name].doc and docs[name].doc == fn.__doc__.strip().splitlines()[0].strip(), name
        assert docs[name].origin == "shipped"
    assert docs["edict"].exact_reconstruction and not docs["ddim"].exact_reconstruction
    assert docs["rf_solver"].families == ("flow",)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(docs) and printed[0].startswith("anderson ") and " shipped " in printed[0]


def test_metrics_psnr_vae_ceiling_and_nfe(tiny_sd_adapter, image) -> None:
    ddim = gnri.invert(tiny_sd_adapter, image, PROMPT, method="ddim", schedule=STEPS4, progress=False)
    (m,) = ddim.metrics()
    pixels = image_tensor(image, tiny_sd_adapter.image_size())
    assert m["psnr"] == pytest.approx(psnr(ddim.regenerate(), pixels)[0])
    assert m["psnr_vae_ceiling"] == pytest.approx(psnr(tiny_sd_adapter.decode_latents(ddim.latent), pixels)[0])
    assert m["psnr_gap_to_vae"] == pytest.approx(m["psnr_vae_ceiling"] - m["psnr"])
    assert (m["nfe_forward"], m["nfe_backward"]) == (4, 0)  # one call per step, counted outside the inverter
    paper = gnri.invert(tiny_sd_adapter, image, PROMPT, method="gnri", schedule=STEPS4, progress=False,
                        max_iters=1, tol=0.0)
    (g,) = paper.metrics()
    assert g["nfe_forward"] >= 8 and g["nfe_backward"] == 4  # one VJP per Newton iteration and step


def test_progress_bar_and_callback_follow_the_steps(tiny_sd_adapter, image, capsys) -> None:
    seen: list[tuple[int, int]] = []
    gnri.invert(tiny_sd_adapter, image, PROMPT, method="fixed_point3", schedule=STEPS4,
                progress=lambda k, n: seen.append((k, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # one report per step reached, in order
    capsys.readouterr()
    gnri.invert(tiny_sd_adapter, image, PROMPT, method="ddim", schedule=STEPS4, progress=True)
    assert "4/4" in capsys.readouterr().err
    gnri.invert(tiny_sd_adapter, image, PROMPT, method="ddim", schedule=STEPS4, progress=False)
    assert capsys.readouterr().err == ""


def test_a_list_of_paths_and_pil_images_is_a_batch(tiny_sd_adapter, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    arrays = [(torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy() for h, w in ((40, 48), (64, 30))]
    path = tmp_path / "a.png"
    Image.fromarray(arrays[0]).save(path)
    pil = Image.fromarray(arrays[1])
    batch = gnri.invert(tiny_sd_adapter, [path, pil], [PROMPT, "a blue square"], method="ddim", schedule=STEPS4,
                        progress=False)
    assert batch.z.shape[0] == 2 and batch.prompts == [PROMPT, "a blue square"] and len(batch.metrics()) == 2
    for i, (one, prompt) in enumerate(((path, PROMPT), (pil, "a blue square"))):
        single = gnri.invert(tiny_sd_adapter, one, prompt, method="ddim", schedule=STEPS4, progress=False)
        assert torch.allclose(batch.z[i], single.z[0], atol=1e-4), i  # each image fitted as on its own
    with pytest.raises(ValueError, match="2 prompts for 1 images"):
        gnri.invert(tiny_sd_adapter, [path], [PROMPT, PROMPT], method="ddim", schedule=STEPS4, progress=False)


def test_schedule_by_config_name(tiny_sd_adapter, image) -> None:
    inv = gnri.invert(tiny_sd_adapter, image, PROMPT, method="ddim", schedule="ddim10", progress=False)
    assert inv.schedule == gnri.ScheduleSpec(**SCHEDULES["ddim10"]) and inv.grid.num_steps == 10


def test_repr_is_one_short_line(tiny_sd_adapter, image) -> None:
    inv = gnri.invert(tiny_sd_adapter, image, PROMPT, method="ddim", schedule=STEPS4, progress=False)
    text = repr(inv)
    assert "\n" not in text and len(text) < 240 and "method='ddim'" in text and "tensor" not in text


@pytest.mark.parametrize("method, options", [
    ("ddim", {}),
    ("null_text", {"guidance_scale": 3.0, "num_inner_steps": 1}),  # per-step conditioning
    ("edict", {}),  # a sampler with a second latent
])
def test_save_then_load_regenerates_and_edits_the_same(tiny_sd_adapter, image, tmp_path, method, options) -> None:
    inv = gnri.invert(tiny_sd_adapter, image, PROMPT, method=method, schedule="ddim10", progress=False, **options)
    path = inv.save(tmp_path / "inv.safetensors")
    back = gnri.load_inversion(path, tiny_sd_adapter)
    assert (back.method, back.hyperparameters, back.schedule, back.prompts) == (
        method, inv.hyperparameters, inv.schedule, inv.prompts)
    assert back.cond.guidance_scale == inv.cond.guidance_scale and repr(back) == repr(inv)
    assert torch.equal(back.z, inv.z)
    assert torch.allclose(back.regenerate(), inv.regenerate(), atol=1e-6)
    assert torch.allclose(back.regenerate("a blue square"), inv.regenerate("a blue square"), atol=1e-6)
    assert back.metrics()[0] == pytest.approx(inv.metrics()[0])


def test_save_refuses_state_it_cannot_write(tiny_sd_adapter, image, tmp_path) -> None:
    inv = gnri.invert(tiny_sd_adapter, image, PROMPT, method="ddim", schedule=STEPS4, progress=False)
    closure = replace(inv.result, sampler=lambda denoiser, grid, cond, z: z)
    with pytest.raises(ValueError) as err:
        replace(inv, result=closure).save(tmp_path / "x.safetensors")
    assert "\n" not in str(err.value) and "cannot be saved" in str(err.value)
    with pytest.raises(ValueError, match="not JSON"):
        replace(inv, hyperparameters={"weights": torch.zeros(1)}).save(tmp_path / "y.safetensors")
