"""scripts/bench_scale.py: the full-size configs are the published architectures, and the timing
path runs end to end (on the tiny models, CPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_scale() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "scripts" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family, attr, billions", [
    ("sd15", "unet", 0.8595), ("sdxl_turbo", "unet", 2.5675), ("flux_schnell", "transformer", 11.8912),
])
def test_full_size_networks_have_the_published_parameter_counts(
    bench_scale: ModuleType, family: str, attr: str, billions: float
) -> None:
    """Built on the meta device (no memory): SD 1.5 859.5 M, SDXL 2.567 B, FLUX.1 11.89 B."""
    pipe = bench_scale.full_size_pipeline(family, torch.device("meta"), torch.bfloat16)
    params = sum(p.numel() for p in getattr(pipe, attr).parameters())
    assert params / 1e9 == pytest.approx(billions, abs=1e-4)
    assert next(getattr(pipe, attr).parameters()).dtype == torch.bfloat16
    schedule = getattr(pipe.scheduler, "alphas_cumprod", None)  # built outside the bf16 / meta context
    assert schedule is None or (schedule.dtype == torch.float32 and schedule.device.type == "cpu")


def test_tiny_run_prints_every_method(bench_scale: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    code = bench_scale.main(["--tiny", "--device", "cpu", "--dtype", "float32", "--families", "sdxl_turbo",
                             "flux_schnell", "--warmup", "0", "--repeats", "1", "--attention", "math"])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in bench_scale.methods():
        assert out.count(f"  {name} ") == 2
    assert "gnri_official" in out and "fwd  12  bwd   8" in out  # gnri: 3 forwards + 2 VJPs per step, 4 steps
