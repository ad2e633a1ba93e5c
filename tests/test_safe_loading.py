"""Loading that cannot run code: safetensors only unless ``allow_pickle``; refusal before loading."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from gnri.models import SDAdapter, load_adapter
from gnri.models.tiny import save_tiny, tiny_pipeline
from gnri.models.weights import OVERRIDE, PickleWeightsError, safe_load_kwargs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny SD pipeline (seed 3) saved as safetensors and as pickle (.bin)."""
    root = tmp_path_factory.mktemp("tiny_saved")
    safe = save_tiny("sd", root / "safe", seed=3)
    pickled = root / "pickled"
    tiny_pipeline("sd", seed=3).save_pretrained(pickled, safe_serialization=False)
    for file in pickled.rglob("*.safetensors"):  # transformers 5 writes safetensors regardless
        torch.save(load_file(file), file.with_name("pytorch_model.bin"))
        file.unlink()
    return {"safe": safe, "pickled": pickled}


def _unet_weight(adapter: Any) -> torch.Tensor:
    return adapter.pipe.unet.conv_in.weight


def test_safetensors_folder_loads_with_use_safetensors(saved: dict[str, Path], monkeypatch) -> None:
    """A safetensors folder loads, and diffusers is told use_safetensors=True."""
    seen: dict[str, Any] = {}
    real = SDAdapter.pipeline_class.from_pretrained

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(SDAdapter.pipeline_class, "from_pretrained", spy)
    adapter = load_adapter("sd", str(saved["safe"]))
    assert seen.get("use_safetensors") is True
    torch.testing.assert_close(_unet_weight(adapter), _unet_weight(tiny_pipeline_adapter()))


def tiny_pipeline_adapter() -> Any:
    return load_adapter("sd", tiny_pipeline("sd", seed=3))


def test_pickle_only_folder_is_refused_before_loading(saved: dict[str, Path], monkeypatch) -> None:
    """.bin-only folder: one line naming the file and the override; diffusers is never called."""
    assert list(saved["pickled"].rglob("*.bin")) and not list(saved["pickled"].rglob("*.safetensors"))

    def must_not_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("from_pretrained was called")

    monkeypatch.setattr(SDAdapter.pipeline_class, "from_pretrained", must_not_load)
    with pytest.raises(PickleWeightsError) as err:
        load_adapter("sd", str(saved["pickled"]))
    message = str(err.value)
    assert "\n" not in message and OVERRIDE in message and ".bin" in message
    assert str(saved["pickled"]) in message


def test_allow_pickle_loads_the_pickle_folder(saved: dict[str, Path]) -> None:
    adapter = load_adapter("sd", str(saved["pickled"]), allow_pickle=True)
    torch.testing.assert_close(_unet_weight(adapter), _unet_weight(tiny_pipeline_adapter()))


def test_one_pickle_only_component_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    """Safetensors everywhere but the text encoder (.bin only): refused, naming that file."""
    mixed = tmp_path / "mixed"
    shutil.copytree(saved["safe"], mixed)
    shutil.rmtree(mixed / "text_encoder")
    shutil.copytree(saved["pickled"] / "text_encoder", mixed / "text_encoder")
    with pytest.raises(PickleWeightsError, match="text_encoder"):
        load_adapter("sd", str(mixed))
    for suffix in (".ckpt", ".pt"):
        single = tmp_path / f"model{suffix}"
        single.write_bytes(b"\x80\x04N.")
        with pytest.raises(PickleWeightsError, match=f"model{suffix}"):
            safe_load_kwargs(single)


def test_flux_pickle_folder_refused_before_loading(tmp_path: Path, monkeypatch) -> None:
    from gnri.models import flux

    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04N.")
    monkeypatch.setattr(flux.FluxPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(PickleWeightsError, match="allow_pickle"):
        load_adapter("flux", str(tmp_path))


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux"])
def test_hub_id_gets_use_safetensors_unless_allow_pickle(family: str, monkeypatch) -> None:
    """A hub id cannot be inspected offline: use_safetensors=True, none with allow_pickle."""
    from gnri.models import adapter_class, flux

    calls: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise Stop

    target = flux.FluxPipeline if family == "flux" else adapter_class(family).pipeline_class
    monkeypatch.setattr(target, "from_pretrained", fake)
    for allow in (False, True):
        with pytest.raises(Stop):
            load_adapter(family, "some-org/some-model-that-is-not-a-folder", allow_pickle=allow)
    assert calls[0].get("use_safetensors") is True
    assert "use_safetensors" not in calls[1]


def test_model_configs_that_load_weights_default_to_safetensors() -> None:
    """Every conf/model entry that can load a folder or hub id says allow_pickle: false."""
    for path in sorted((REPO / "conf" / "model").glob("*.yaml")):
        conf = yaml.safe_load(path.read_text())
        if "pretrained" in conf or "folder" in conf:
            assert conf.get("allow_pickle") is False, path.name


def test_every_torch_load_is_weights_only() -> None:
    """No torch.load in the repository's Python files without weights_only=True."""
    offenders = []
    for file in sorted(REPO.rglob("*.py")):
        if ".venv" in file.parts or "site-packages" in file.parts:
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    offenders.append(f"{file.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
