"""Fast paths (issue 16, item 3): compile and channels-last are options that change how the network
runs, not what it computes, and compilation is timed apart (``adapter.compile_clock``).

torch.compile with the inductor backend takes about a minute on the tiny UNet on this 2-core CPU
(C++ code generation), too slow for the suite: these tests compile with ``backend="eager"``
(dynamo traces the UNet exactly as for inductor, then runs the captured graph eagerly), which
checks the plumbing (in-place compile, denoiser and bare-network clock both on the compiled
module, compile seconds and counts, equal outputs); inductor's own numerics are checked on a GPU
by ``scripts/gpu_check.sh``. Oracle for equality: the same module uncompiled.
"""

from __future__ import annotations

import functools

import pytest
import torch

from baselines import ddim
from eval.data import sample_dataset
from eval.tasks.reconstruct import evaluate
from eval.metrics import build_metrics
from gnri.models import load_adapter
from gnri.models.base import ScheduleSpec
from gnri.models.runtime import (
    RUNTIME_KEYS,
    CompileClock,
    RuntimeOptions,
    compile_seconds,
    runtime_options,
    signature,
)
from gnri.models.tiny import tiny_pipeline


def _inputs(adapter, batch: int = 1):
    z = torch.randn(adapter.latent_shape(batch), generator=torch.Generator().manual_seed(0))
    cond = adapter.encode_prompts(["a red circle"] * batch)
    grid = adapter.grid(ScheduleSpec("ddim", 4), tuple(z.shape))
    return z, grid.levels[2], cond


def _psnr(adapter) -> float:
    df = evaluate(adapter, ScheduleSpec("ddim", 3), functools.partial(ddim.invert), "ddim", sample_dataset()[:1],
                  build_metrics(["psnr"]), warmup=1, progress=False, time_network=False, cache_dir=None)
    return float(df[df["metric"] == "psnr"]["value"].iloc[0])


def test_compile_gives_the_uncompiled_output_and_times_compilation_apart() -> None:
    plain = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd")
    compiled = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd", compile=True, compile_backend="eager")
    assert plain.compile_clock is None and compile_seconds(plain) is None
    clock = compiled.compile_clock
    assert clock.compiles == 0 and compile_seconds(compiled) == 0.0  # lazy: nothing compiled yet
    z, level, cond = _inputs(plain)
    with torch.no_grad():
        want = plain.denoiser()(z, level, cond)
        got = compiled.denoiser()(z, level, cond)
    torch.testing.assert_close(got.eps, want.eps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.x0, want.x0, rtol=1e-5, atol=1e-5)
    assert clock.compiles == 1 and clock.seconds > 0
    first = clock.seconds
    compiled.denoiser().network_call(z, level, cond)()  # the bare-network clock: the same compiled call
    with torch.no_grad():
        compiled.denoiser()(z, level, cond)
    assert clock.compiles == 1 and clock.seconds == first  # same signature: no recompile, nothing timed
    # end to end: the compiled model's reconstruction is the uncompiled one's
    assert _psnr(compiled) == pytest.approx(_psnr(plain), abs=1e-3)
    assert clock.compiles == 1  # the harness's warm-up and timed calls reuse the compiled graph


def test_channels_last_gives_the_same_output() -> None:
    plain = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd")
    fast = load_adapter("sd", tiny_pipeline("sd"), name="tiny_sd", channels_last=True)
    conv = fast.pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    z, level, cond = _inputs(plain)
    with torch.no_grad():
        torch.testing.assert_close(fast.denoiser()(z, level, cond).eps, plain.denoiser()(z, level, cond).eps,
                                   rtol=1e-5, atol=1e-5)


def test_signature_follows_what_compile_guards_on() -> None:
    a = {"sample": torch.zeros(1, 4, 8, 8), "timestep": torch.tensor(1.0), "return_dict": False}
    same = {"sample": torch.ones(1, 4, 8, 8), "timestep": torch.tensor(500.0), "return_dict": False}
    assert signature(a) == signature(same)  # values never matter
    assert signature(a) != signature({**a, "sample": torch.zeros(2, 4, 8, 8)})  # a batch change does
    assert signature(a) != signature({**a, "sample": torch.zeros(1, 4, 8, 8, dtype=torch.float16)})
    with torch.enable_grad():
        with_grad = signature(a)
    with torch.no_grad():
        assert signature(a) != with_grad  # grad mode is part of it (a VJP's forward compiles anew)


def test_compile_clock_counts_new_signatures_and_clones_under_cuda_graphs() -> None:
    calls = []
    buffer = torch.zeros(3)

    def fn(x: torch.Tensor) -> tuple[torch.Tensor]:
        calls.append(x.shape)
        buffer.copy_(x.sum() * torch.ones(3))
        return (buffer,)  # as a CUDA-graph replay: the same output storage every call

    clock = CompileClock()
    plain = clock.wrap(fn)
    plain(torch.ones(2)), plain(torch.ones(2)), plain(torch.ones(5))
    assert clock.compiles == 2 and len(calls) == 3
    graphs = CompileClock().wrap(fn, cudagraphs=True)
    first = graphs(torch.ones(2))[0]
    graphs(torch.ones(4))
    assert first.tolist() == [2.0, 2.0, 2.0]  # cloned: the next replay does not overwrite it


def test_options_are_checked_with_one_line_errors() -> None:
    assert RuntimeOptions() == runtime_options({})
    options = {"compile": True, "compile_mode": None, "name": "x"}
    assert runtime_options(options) == RuntimeOptions(compile=True) and options == {"name": "x"}
    bad = [({"compile_mode": "fast"}, "model.compile_mode must be one of"),
           ({"compile_backend": "tvm"}, "model.compile_backend must be one of"),
           ({"compile": "yes"}, "model.compile must be true or false"),
           ({"offload": "sequential"}, "model.offload must be one of"),
           ({"compile": True, "offload": "model"}, "does not combine")]
    for given, message in bad:
        with pytest.raises(ValueError, match=message):
            runtime_options(dict(given))
    with pytest.raises(ValueError, match="needs model.compile_backend=inductor"):
        load_adapter("sd", tiny_pipeline("sd"), compile=True, compile_backend="eager", compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match="model.channels_last=true applies to UNets"):
        load_adapter("flux", tiny_pipeline("flux"), channels_last=True)


def test_model_configs_carry_the_runtime_keys_at_their_defaults() -> None:
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "model"
    defaults = RuntimeOptions()
    for stem in ("sd15", "sd21", "sd21_base", "sdxl_turbo", "flux_schnell", "local", "world_sd", "world_flux"):
        cfg = OmegaConf.to_container(OmegaConf.load(conf / f"{stem}.yaml"))
        unet = "flux" not in stem
        keys = [k for k in RUNTIME_KEYS if unet or k != "channels_last"]
        assert {k: cfg[k] for k in keys} == {k: getattr(defaults, k) for k in keys}, stem


def test_gpu_check_table_has_bare_network_overhead_memory_and_compile_columns(capsys) -> None:
    """scripts/bench_scale.py's table (what scripts/gpu_check.sh prints), on hand-made rows: the
    in-run overhead (inversion / network time inside it: 0.24 / 0.2 = 1.2), the bare ratio beside it
    (0.24 / 0.16 = 1.5), peak beyond generation = 6.0 - 5.0 GiB; the target reads the in-run ratio."""
    import importlib.util
    import sys
    from pathlib import Path

    from eval.timing import InRunNetwork

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale_table", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    slow = InRunNetwork(0.2, 0.0, 1.2, 1 - 0.2 / 0.24, 0)
    fast = InRunNetwork(0.2, 0.0, 1.05, 1 - 0.2 / 0.21, 0)
    rows = [bench.Row("gnri_official", 0.24, 0.3, 8, 0, 6.0 * 1024, 0.16, False, 5.0 * 1024, slow),
            bench.Row("gnri_official", 0.21, 0.3, 8, 0, 6.0 * 1024, 0.16, True, 5.0 * 1024, fast)]
    bench.print_table("sdxl_turbo", 2.5675e9, rows, 42.0, 1)
    out = capsys.readouterr().out
    assert "| method | compile | invert s | network in run s | overhead ratio | bare network s | overhead ratio (bare) " in out
    assert "| gnri_official | off | 0.240 | 0.200 | 1.200 | 0.160 | 1.500 | 8 | 0 | 6.00 | +1.00 | 0.300 |" in out
    assert "| gnri_official | on | 0.210 | 0.200 | 1.050 | 0.160 | 1.312 |" in out
    assert "compile on: 42.0 s compiling" in out
    assert "overhead 1.200 (<= 1.05): NOT met" in out and "overhead 1.050 (<= 1.05): met" in out


def test_a_bad_runtime_option_stops_before_loading_with_one_line() -> None:
    from omegaconf import OmegaConf

    from eval.validate import ConfigError, check_model_config

    cfg = OmegaConf.create({"_target_": "gnri.models.tiny.tiny_adapter", "family": "sd", "compile_mode": "fast"})
    with pytest.raises(ConfigError, match=r"^model=tiny_sd: model.compile_mode must be one of"):
        check_model_config("tiny_sd", cfg)
    check_model_config("tiny_sd", OmegaConf.create({"_target_": "gnri.models.tiny.tiny_adapter", "family": "sd",
                                                    "compile": True, "compile_backend": "eager"}))
