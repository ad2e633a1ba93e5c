"""Guidance means what the model's diffusers pipeline means (issue 18, item 5).

FLUX (FluxPipeline): ``guidance_scale`` feeds the transformer's guidance embedding (FLUX.1-dev;
one forward per call) and a transformer without one (FLUX.1-schnell) takes only 1;
``true_cfg_scale > 1`` is true classifier-free guidance (two forwards per call). SD/SDXL
(SDXL-Turbo included): ``guidance_scale > 1`` is classifier-free guidance, ``true_cfg_scale``
stays 1. Costs are read off the transformer itself (forward hooks: the rows each call sees, the
``guidance`` it is given), independent of the adapter's own ``forwards_per_call``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import gnri
from eval import validate
from eval.settings import RunSettings
from gnri.models import load_adapter
from gnri.models.base import ScheduleSpec
from gnri.models.tiny import save_tiny, tiny_flux_pipeline

ROOT = Path(__file__).resolve().parents[1]
FLOW4 = ScheduleSpec("flow_euler", 4)
PROMPT = "a red circle"


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def schnell_like():
    """A FLUX.1-schnell-shaped tiny adapter: no guidance embedding."""
    return load_adapter("flux", tiny_flux_pipeline(guidance_embeds=False, dynamic_shift=False))


@contextmanager
def transformer_calls(network: torch.nn.Module) -> Iterator[list[dict[str, Any]]]:
    """Record each call of ``network``: the batch rows it evaluates and the ``guidance`` it gets."""
    calls: list[dict[str, Any]] = []

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        latent = kwargs.get("hidden_states", kwargs.get("sample", args[0] if args else None))
        guidance = kwargs.get("guidance")
        calls.append({"rows": latent.shape[0], "guidance": None if guidance is None else guidance.tolist()})

    handle = network.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def test_flux_dev_guidance_scale_feeds_the_embedding_one_forward_per_call(tiny_flux_adapter, image) -> None:
    adapter = tiny_flux_adapter
    assert adapter.guidance_embeds
    with transformer_calls(adapter.pipe.transformer) as calls:
        inv = gnri.invert(adapter, image, PROMPT, method="ddim", schedule=FLOW4, guidance_scale=3.5, progress=False)
    assert inv.nfe.forward == 4 and len(calls) == 4  # DDIM-style inversion: one call per step
    assert all(c["rows"] == 1 and c["guidance"] == [3.5] for c in calls)  # one branch; 3.5 reaches the embedding
    plain = gnri.invert(adapter, image, PROMPT, method="ddim", schedule=FLOW4, guidance_scale=1.0, progress=False)
    assert plain.nfe.forward == 4
    assert (inv.z - plain.z).abs().max() > 1e-4  # the embedding's input changes the network's output
    assert inv.guidance == {"guidance_scale": 3.5, "true_cfg_scale": 1.0} and "guidance=3.5" in repr(inv)


def test_flux_true_cfg_scale_costs_two_forwards(tiny_flux_adapter, image) -> None:
    adapter = tiny_flux_adapter
    with transformer_calls(adapter.pipe.transformer) as calls:
        inv = gnri.invert(adapter, image, PROMPT, method="ddim", schedule=FLOW4, true_cfg_scale=2.0, progress=False)
    assert inv.nfe.forward == 8 and len(calls) == 4  # [negative, positive] stacked: 2 rows per call
    assert all(c["rows"] == 2 and c["guidance"] == [1.0, 1.0] for c in calls)  # both branches, the run's 1.0
    assert inv.cond.guidance_scale == 2.0 and inv.cond.negative is not None
    plain = gnri.invert(adapter, image, PROMPT, method="ddim", schedule=FLOW4, progress=False)
    assert plain.nfe.forward == 4 and (inv.z - plain.z).abs().max() > 1e-4
    # the saved inversion keeps both switches, and regenerating reuses them
    assert "true_cfg=2" in repr(inv)
    torch.testing.assert_close(inv.regenerate(), inv.regenerate(PROMPT))


def test_flux_true_cfg_is_uncond_plus_scale_times_difference(tiny_flux_adapter) -> None:
    """By hand: two separate transformer calls, combined as FluxPipeline does."""
    adapter = tiny_flux_adapter
    z = torch.randn(adapter.latent_shape(1), generator=torch.Generator().manual_seed(1))
    level = adapter.grid(FLOW4, z.shape).levels[2]
    guided = adapter.encode_prompts([PROMPT], 3.5, true_cfg_scale=4.0)
    pos = adapter.encode_prompts([PROMPT], 3.5)
    neg = adapter.encode_prompts([""], 3.5)
    with torch.no_grad():
        out = adapter.denoiser()(z, level, guided).eps
        e_pos, e_neg = adapter.denoiser()(z, level, pos).eps, adapter.denoiser()(z, level, neg).eps
    torch.testing.assert_close(out, e_neg + 4.0 * (e_pos - e_neg), rtol=1e-4, atol=1e-5)


def test_flux_without_embedding_refuses_guidance_scale(schnell_like, image) -> None:
    with pytest.raises(ValueError, match=r"guidance_scale=3.5 has nothing to feed.*true_cfg_scale=3.5") as err:
        schnell_like.encode_prompts([PROMPT], 3.5)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^gnri.invert: guidance_scale=3.5 has nothing to feed"):
        gnri.invert(schnell_like, image, PROMPT, method="ddim", schedule=FLOW4, guidance_scale=3.5, progress=False)
    with transformer_calls(schnell_like.pipe.transformer) as calls:
        inv = gnri.invert(schnell_like, image, PROMPT, method="ddim", schedule=FLOW4, true_cfg_scale=3.5,
                          progress=False)
    assert inv.nfe.forward == 8 and all(c["rows"] == 2 and c["guidance"] is None for c in calls)


def test_unet_guidance_is_classifier_free_and_true_cfg_is_refused(tiny_sd_adapter, image) -> None:
    sd = tiny_sd_adapter
    with transformer_calls(sd.pipe.unet) as calls:
        inv = gnri.invert(sd, image, PROMPT, method="ddim", schedule=ScheduleSpec("ddim", 2), guidance_scale=3.0,
                          progress=False)
    assert inv.nfe.forward == 4 and len(calls) == 2 and all(c["rows"] == 2 for c in calls)
    for call in (lambda: sd.encode_prompts([PROMPT], 1.0, true_cfg_scale=2.0),
                 lambda: gnri.invert(sd, image, PROMPT, true_cfg_scale=2.0, progress=False)):
        with pytest.raises(ValueError, match="true_cfg_scale=2 applies to FLUX models.*use guidance_scale=2"):
            call()


def test_sdxl_turbo_edit_guidance_with_empty_negative_still_works() -> None:
    """GNRI's SDXL-Turbo editing: guidance 1.2 with negative "" is classifier-free guidance (as
    StableDiffusionXLPipeline, guidance > 1); the Turbo card's 0.0 is one forward."""
    from gnri.models.tiny import tiny_adapter

    turbo = tiny_adapter("sdxl", guidance_distilled=True)
    edit = turbo.encode_prompts([PROMPT], 1.2, [""])
    assert edit.uses_cfg and edit.guidance_scale == 1.2 and turbo.denoiser().forwards_per_call(edit) == 2
    card = turbo.encode_prompts([PROMPT], 0.0)
    assert not card.uses_cfg and turbo.denoiser().forwards_per_call(card) == 1


def test_validate_reads_the_transformer_config_without_loading(tmp_path: Path) -> None:
    dev = save_tiny("flux", tmp_path / "dev")
    schnell = save_tiny("flux", tmp_path / "schnell", guidance_embeds=False, dynamic_shift=False)
    assert validate.transformer_guidance_embeds({"path": str(dev)}) is True
    assert validate.transformer_guidance_embeds({"pretrained": str(schnell)}) is False
    world = {"_target_": "eval.world_data.world_adapter", "model": "flux", "folder": None}
    assert validate.transformer_guidance_embeds(world) is False  # datasets/world/flux, via weights_location
    code = {"_target_": "gnri.models.tiny.tiny_adapter", "family": "flux", "pretrained": None}
    assert validate.transformer_guidance_embeds(code) is None  # built in code: the adapter checks it
    assert validate.transformer_guidance_embeds({"pretrained": "nobody/not-downloaded"}) is None
    validate.check_guidance("local", {"path": str(dev)}, 3.5, 1.0)
    validate.check_guidance("local", {"path": str(schnell)}, 1.0, 3.5)
    with pytest.raises(validate.ConfigError, match=r"^model=world_flux: guidance_scale=3.5 has nothing to feed"):
        validate.check_guidance("world_flux", world, 3.5, 1.0)
    with pytest.raises(validate.ConfigError, match=r"^model=x: task.edit_guidance_scale=2 has nothing"):
        validate.check_guidance("x", {"path": str(schnell)}, 2.0, 1.0, option="task.edit_guidance_scale")
    with pytest.raises(validate.ConfigError, match="model=tiny_sd: true_cfg_scale=2 applies to FLUX"):
        validate.check_guidance("tiny_sd", {"family": "sd"}, 7.5, 2.0)
    with pytest.raises(validate.ConfigError, match="true_cfg_scale=0.5 must be >= 1"):
        validate.check_guidance("tiny_flux", code, 1.0, 0.5)
    with pytest.raises(validate.ConfigError, match="guidance_scale='abc' must be a finite number"):
        validate.check_guidance("tiny_flux", code, "abc", 1.0)


def test_true_cfg_scale_enters_the_unit_key_only_when_on() -> None:
    base = RunSettings()
    assert "true_cfg_scale" not in base.key_fields()  # keys of earlier runs stay valid
    assert base.guidance_options() == {"guidance_scale": 1.0}
    on = base.with_(true_cfg_scale=2.0)
    assert on.key_fields()["true_cfg_scale"] == 2.0 and on.key_fields() != base.key_fields()
    assert on.guidance_options() == {"guidance_scale": 1.0, "true_cfg_scale": 2.0}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_run_py_refuses_guidance_on_a_flux_without_embedding_before_loading(tmp_path: Path) -> None:
    """A schnell-shaped folder whose transformer weights are gone: loading would fail differently,
    so the one line (exit 2) proves nothing was loaded."""
    folder = save_tiny("flux", tmp_path / "my_schnell", guidance_embeds=False, dynamic_shift=False)
    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.unlink()
    out = _run("model=local", f"model.path={folder}", "schedule=flow4", "guidance_scale=3.5", "max_images=1",
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("run.py: model=local: guidance_scale=3.5 has nothing to feed")
    assert not (tmp_path / "run" / "results.csv").exists()


def test_run_py_checks_a_model_built_in_code_when_it_is_built(capsys, monkeypatch) -> None:
    """What the config cannot tell (a FLUX transformer built in code) is one line, exit 2, when
    run.py builds the model (its adapter factory, in process)."""
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # no @hydra.main here: the model's own name
    spec = importlib.util.spec_from_file_location("gnri_bench_run", ROOT / "run.py")
    run = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(run)  # type: ignore[union-attr]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["schedule=flow4", "guidance_scale=2"])
    model = {"_target_": "gnri.models.load_adapter", "family": "flux", "name": "code_schnell", "device": "cpu",
             "dtype": "float32", "pretrained": {"_target_": "gnri.models.tiny.tiny_flux_pipeline",
                                                "guidance_embeds": False, "dynamic_shift": False}}
    OmegaConf.set_struct(cfg, False)
    cfg.model = OmegaConf.create(model)
    assert validate.transformer_guidance_embeds(OmegaConf.to_container(cfg.model)) is None  # unknown before
    with pytest.raises(SystemExit) as stop:
        run._adapter_factory(cfg, "cpu", False)()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["run.py: model=code_schnell: " + err[0].split(": ", 2)[2]] and "has nothing to feed" in err[0]
    cfg.guidance_scale = 1.0
    assert run._adapter_factory(cfg, "cpu", False)().guidance_embeds is False  # a usable scale builds


def test_the_benchmark_loops_pass_true_cfg_to_the_model(tiny_flux_adapter) -> None:
    """Reconstruction and editing both run FLUX's true CFG when the run sets it (two forwards per call)."""
    from baselines import ddim
    from eval.data import sample_dataset
    from eval.tasks.reconstruct import evaluate
    from eval.metrics import build_metrics
    from gnri.core import CountingDenoiser
    from gnri.edit.edit import edit_conditioning
    from gnri.models.base import ScheduleSpec

    schedule = ScheduleSpec(kind="flow_euler", num_steps=2)
    df = evaluate(tiny_flux_adapter, schedule, ddim.invert, "ddim", sample_dataset()[:1], build_metrics(["psnr"]),
                  warmup=0, progress=False, time_network=False, true_cfg_scale=2.0)
    assert df.query("metric == 'nfe_forward'")["value"].tolist() == [4.0]
    assert set(df["true_cfg_scale"]) == {2.0}
    cond = edit_conditioning(tiny_flux_adapter, ["a dog"], 1.0, "", true_cfg_scale=2.0)
    assert cond.uses_cfg and CountingDenoiser(tiny_flux_adapter.denoiser()).forwards_per_call(cond) == 2
