"""Every config composes (and instantiates where that needs no network); run.py end to end.

run.py is loaded from its file (it is a script, not part of the installed package).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
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
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py

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


def _multirun_axes() -> tuple[list[str], list[str]]:
    inverters = ["ddim"] + (["fixed_point"] if (CONF / "inverter" / "fixed_point.yaml").exists() else ["ddim"])
    schedules = [s for s in run_module_schedules() if _compose([f"schedule={s}"]).schedule.kind == "ddim"][:2]
    return inverters, schedules


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int], dict[str, str]]:
    """This module's run.py runs in one child process (tests/run_many.py: run.py's __main__ once per run, each
    with its own exit status, stderr and working directory): (their folder, exit codes, stderrs). attention=math
    runs last, so that no run after it could pass on a backend it left set."""
    root = tmp_path_factory.mktemp("config_runs")
    inverters, schedules = _multirun_axes()
    for cwd in ("tiny", "sweep", "math"):
        (root / cwd).mkdir()
    runs = [
        ("unknown", ["inverter=nope", f"hydra.run.dir={root / 'unknown'}"], ROOT),
        ("attention_bad", ["attention=nope", f"hydra.run.dir={root / 'bad'}"], ROOT),
        ("tiny", ["model=tiny_sd", "inverter=ddim", "schedule.num_steps=3", "max_images=1", "progress=false",
                  f"hydra.run.dir={root / 'tiny' / 'run'}"], root / "tiny"),
        ("sweep", ["-m", f"inverter={','.join(dict.fromkeys(inverters))}", f"schedule={','.join(schedules)}",
                   "schedule.num_steps=2", "max_images=1", "warmup=0", "progress=false",
                   f"hydra.sweep.dir={root / 'sweep' / 'sweep'}"], root / "sweep"),
        ("math", ["model=tiny_sd", "inverter=ddim", "schedule.num_steps=2", "max_images=1", "attention=math",
                  "progress=false", f"hydra.run.dir={root / 'math' / 'run'}"], root / "math"),
    ]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    codes = run_in_one_process(runs, root / "logs", env=env, timeout=900)
    return root, codes, {name: (root / "logs" / f"{name}.err").read_text(encoding="utf-8") for name in codes}


def test_run_py_rejects_unknown_name_in_one_line(runs) -> None:
    root, codes, stderr = runs
    assert codes["unknown"] == 2
    lines = stderr["unknown"].strip().splitlines()
    assert len(lines) == 1 and "unknown inverter 'nope'" in lines[0] and "ddim" in lines[0]
    assert not (root / "unknown" / RESULTS_FILE).exists()


def test_run_py_tiny_sd_ddim_writes_results_and_summary(runs) -> None:
    root, codes, stderr = runs
    out = root / "tiny" / "run"
    assert codes["tiny"] == 0, stderr["tiny"][-2000:]
    df = read_records(out / RESULTS_FILE)
    assert REQUIRED_COLUMNS <= set(df.columns) and (df["status"] == "ok").all()
    assert set(df["model"]) == {"tiny_sd"} and set(df["inverter"]) == {"ddim"}
    assert set(df[df["metric"] == "nfe_forward"]["value"]) == {3.0}
    summary = (out / SUMMARY_FILE).read_text()
    assert "Tiny random-weight model" in summary and "| tiny_sd | ddim10 | ddim |" in summary
    assert (out / "provenance.json").exists()


def test_multirun_writes_one_folder_per_job(runs) -> None:
    root, codes, stderr = runs
    inverters, schedules = _multirun_axes()
    assert len(schedules) == 2, "need two ddim schedules in conf/schedule"
    sweep = root / "sweep" / "sweep"
    assert codes["sweep"] == 0, stderr["sweep"][-2000:]
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


def test_run_py_attention_backend_option(runs) -> None:
    """``attention=math`` runs (recorded in provenance); an unknown backend is a one-line error."""
    root, codes, stderr = runs
    assert codes["attention_bad"] == 2
    lines = stderr["attention_bad"].strip().splitlines()
    assert len(lines) == 1 and "unknown attention 'nope'" in lines[0] and "efficient" in lines[0]
    out = root / "math" / "run"
    assert codes["math"] == 0, stderr["math"][-2000:]
    assert (read_records(out / RESULTS_FILE)["status"] == "ok").all()
    assert '"attention": "math"' in (out / "provenance.json").read_text()
