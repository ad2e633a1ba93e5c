"""Every config composes (and instantiates where that needs no network); run.py end to end.

run.py is loaded from its file (it is a script, not part of the installed package).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from eval.data import Entry
from eval.metrics import build_metrics, registry
from eval.records import RESULTS_FILE, read_records
from eval.summary import SUMMARY_FILE
from gnri.models.base import ScheduleSpec

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = ("model", "schedule", "inverter", "dataset", "metrics", "logger", "experiment")
REQUIRED_COLUMNS = {
    "run_id", "model", "schedule", "inverter", "image", "metric", "value", "status", "reason",
    "higher_is_better", "git_commit", "torch_version", "diffusers_version", "transformers_version",
    "device", "dtype", "inverter_params", "config",
}
CHEAP_METRICS = ("psnr",)  # others load weights on construction; their own tests cover them


def _all_configs() -> list[tuple[str, str]]:
    return [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.fixture(scope="module")
def run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gnri_bench_run", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _locate(target: str) -> object:
    module, _, attr = target.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _has_missing(node: DictConfig) -> bool:
    return any(OmegaConf.is_missing(node, key) for key in node)


@pytest.mark.parametrize("group,name", _all_configs())
def test_every_config_composes_and_instantiates(group: str, name: str, run_module: ModuleType) -> None:
    cfg = _compose([f"{group}={name}"])
    node = cfg.get(group) if group != "experiment" else cfg
    if group == "model":
        assert callable(_locate(cfg.model._target_))
        if name.startswith("tiny"):  # built in code, offline
            adapter = instantiate(cfg.model, device="cpu", dtype="float32")
            assert adapter.name.startswith("tiny") and len(adapter.image_size()) == 2
    elif group == "schedule":
        assert isinstance(run_module.build_schedule(node), ScheduleSpec)
    elif group == "inverter":
        assert node._partial_ is True
        inverter = instantiate(node, _convert_="all")
        assert isinstance(inverter, functools.partial)
        params = list(inspect.signature(inverter.func).parameters)
        assert params[:4] == ["denoiser", "x0", "grid", "cond"], f"conf/inverter/{name}.yaml"
        inspect.signature(inverter.func).bind(None, None, None, None, **inverter.keywords)
    elif group == "dataset":
        assert callable(_locate(node._target_))
        if not _has_missing(node):
            entries = instantiate(node)
            assert entries and all(isinstance(e, Entry) for e in entries)
    elif group == "metrics":
        names = list(node.names)
        assert set(names) <= set(registry()), f"conf/metrics/{name}.yaml"
        options = OmegaConf.to_container(node).get("options") or {}  # type: ignore[union-attr]
        assert set(options) <= set(names)
        cheap = [n for n in names if n in CHEAP_METRICS]
        assert [m.name for m in build_metrics(cheap, {k: v for k, v in options.items() if k in cheap})] == cheap
    elif group == "logger":
        if node.get("_target_"):
            assert callable(_locate(node._target_))
    for key in ("seed", "guidance_scale", "device", "dtype", "warmup", "repeats", "max_images"):
        assert key in cfg


def test_defaults() -> None:
    cfg = _compose([])
    choices = {g: cfg[g] for g in ("model", "schedule", "inverter")}
    assert choices["model"]._target_ == "gnri.models.tiny.tiny_adapter"
    assert cfg.schedule.num_steps == 10 and cfg.inverter._target_ == "baselines.ddim.invert"
    assert cfg.guidance_scale == 1.0 and cfg.device == "auto" and cfg.warmup == 1 and cfg.repeats == 1
    assert "_target_" not in cfg.logger


def test_unknown_names_give_one_line_listing_valid_ones(run_module: ModuleType) -> None:
    check = run_module.check_group_choices
    assert check(["inverter=ddim", "model=tiny_sd", "seed=3", "hydra.run.dir=/x"]) is None
    assert check(["-m", "inverter=ddim,fixed_point", "schedule=glob(ddim*)"]) is None
    for args, bad in ((["inverter=nope"], "nope"), (["-m", "inverter=ddim,nope2"], "nope2"),
                      (["model=choice(tiny_sd,nope3)"], "nope3"), (["+experiment=nope4"], "nope4")):
        message = check(args)
        assert message is not None and "\n" not in message and repr(bad) in message
    message = check(["inverter=nope"])
    valid = message.split("valid: ")[1].split(", ")
    assert valid == run_module.config_names("inverter") and "ddim" in valid


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )


def test_run_py_rejects_unknown_name_in_one_line(tmp_path: Path) -> None:
    proc = _run(["inverter=nope", f"hydra.run.dir={tmp_path}"], ROOT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown inverter 'nope'" in lines[0] and "ddim" in lines[0]
    assert not (tmp_path / RESULTS_FILE).exists()


def test_run_py_tiny_sd_ddim_writes_results_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(["model=tiny_sd", "inverter=ddim", "schedule.num_steps=3", "max_images=1",
                 "progress=false", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = read_records(out / RESULTS_FILE)
    assert REQUIRED_COLUMNS <= set(df.columns) and (df["status"] == "ok").all()
    assert set(df["model"]) == {"tiny_sd"} and set(df["inverter"]) == {"ddim"}
    assert set(df[df["metric"] == "nfe_forward"]["value"]) == {3.0}
    summary = (out / SUMMARY_FILE).read_text()
    assert "Tiny random-weight model" in summary and "| tiny_sd | ddim10 | ddim |" in summary
    assert (out / "provenance.json").exists()


def test_multirun_writes_one_folder_per_job(tmp_path: Path) -> None:
    inverters = ["ddim"] + (["fixed_point"] if (CONF / "inverter" / "fixed_point.yaml").exists() else ["ddim"])
    schedules = [s for s in run_module_schedules() if _compose([f"schedule={s}"]).schedule.kind == "ddim"][:2]
    assert len(schedules) == 2, "need two ddim schedules in conf/schedule"
    sweep = tmp_path / "sweep"
    proc = _run(["-m", f"inverter={','.join(dict.fromkeys(inverters))}", f"schedule={','.join(schedules)}",
                 "schedule.num_steps=2", "max_images=1", "warmup=0", "progress=false",
                 f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    expected = len(dict.fromkeys(inverters)) * len(schedules)
    assert len(jobs) == expected
    assert (sweep / ".cache" / "image").is_dir()  # the shared per-image cache lives in the sweep folder
    sweep_summary = (sweep / SUMMARY_FILE).read_text()  # the sweep's own summary (eval.loggers.sweep_summary)
    assert all(f"| {i} |" in sweep_summary for i in dict.fromkeys(inverters))
    seen = set()
    for job in jobs:
        df = read_records(job / RESULTS_FILE)
        assert (job / SUMMARY_FILE).exists() and (df["status"] == "ok").all()
        seen.add((df["inverter"].iloc[0], df["schedule"].iloc[0]))
    assert len(seen) == expected


def run_module_schedules() -> list[str]:
    return sorted(p.stem for p in (CONF / "schedule").glob("*.yaml"))


def test_run_py_attention_backend_option(tmp_path: Path) -> None:
    """``attention=math`` runs (recorded in provenance); an unknown backend is a one-line error."""
    proc = _run(["attention=nope", f"hydra.run.dir={tmp_path / 'bad'}"], ROOT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown attention 'nope'" in lines[0] and "efficient" in lines[0]
    out = tmp_path / "run"
    proc = _run(["model=tiny_sd", "inverter=ddim", "schedule.num_steps=2", "max_images=1", "attention=math",
                 "progress=false", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (read_records(out / RESULTS_FILE)["status"] == "ok").all()
    assert '"attention": "math"' in (out / "provenance.json").read_text()
