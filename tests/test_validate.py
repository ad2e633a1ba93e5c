"""Settings mistakes stop the run with one line before any model loads (eval.validate, run.py)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from eval import validate
from eval.data import sample_dataset
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _run_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gnri_bench_run", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


RUN = _run_module()


def _compose(overrides: list[str]):
    """The config as run.py composes it: the catalog's defaults registered, inverter.<key>= set with ++."""
    assert RUN.register_configs() is None
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=RUN.inverter_overrides(overrides))


def _params(node) -> dict:
    data = OmegaConf.to_container(node, resolve=True)
    return {k: v for k, v in data.items() if not k.startswith("_")}


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "inverter").glob("*.yaml")))
def test_every_shipped_inverter_config_is_valid(name: str) -> None:
    """The composed node holds every keyword of the function with the catalog's value (signature
    default or the name's override), and passes the same check run.py makes."""
    from gnri import catalog

    cfg = _compose([f"inverter={name}"])
    params = _params(cfg.inverter)
    assert params == catalog.method(name).defaults(), name
    fn = validate.inverter_function(name, cfg.inverter._target_)
    keywords = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert sorted(params) == sorted(keywords), name
    assert validate.check_inverter(name, cfg.inverter._target_, params) is None
    assert validate.family_refusal(fn, "vp") is None or validate.family_refusal(fn, "flow") is None


@pytest.mark.parametrize("override, message", [
    ("inverter.max_iters=0", "inverter.max_iters=0 must be >= 1"),
    ("inverter.lam=-1", "inverter.lam=-1 must be >= 0"),
    ("inverter.max_iters=abc", "inverter.max_iters='abc' must be an integer"),
    ("inverter.keep_best=3", "inverter.keep_best=3 must be true or false"),
    ("+inverter.foo=1", "unknown option inverter.foo; valid: lam, max_iters"),
])
def test_bad_inverter_options_are_one_line(override: str, message: str) -> None:
    cfg = _compose(["inverter=gnri", override])
    with pytest.raises(validate.ConfigError, match=message.replace("(", r"\(")) as err:
        validate.check_inverter("gnri", cfg.inverter._target_, _params(cfg.inverter))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "inverter").glob("*.yaml")))
def test_every_word_option_is_checked_before_loading(name: str) -> None:
    """A string option is a choice (its annotation a ``Literal``), so a misspelt value stops the run
    with one line before the model loads, instead of becoming a row per image at run time."""
    cfg = _compose([f"inverter={name}"])
    for key, value in _params(cfg.inverter).items():
        if isinstance(value, str):
            with pytest.raises(validate.ConfigError, match=f"inverter.{key}='not-a-choice' must be one of"):
                validate.check_inverter(name, cfg.inverter._target_, {key: "not-a-choice"})


def test_literal_choices_and_fractions() -> None:
    with pytest.raises(validate.ConfigError, match="one of 'dst', 'src'"):
        validate.check_inverter("ddim", "baselines.ddim.invert", {"timestep": "middle"})
    with pytest.raises(validate.ConfigError, match="damping=1.5 must be <= 1"):
        validate.check_inverter("anderson", "baselines.anderson.invert", {"damping": 1.5})
    validate.check_inverter("fixed_point", "baselines.fixed_point.invert", {"tol": None, "max_iters": 3})


def test_schedule_must_fit_the_model_family() -> None:
    with pytest.raises(validate.ConfigError, match="schedule=flow4 .* does not apply to model=tiny_sd"):
        validate.check_schedule("tiny_sd", {"family": "sd"}, "flow4", "flow_euler")
    with pytest.raises(validate.ConfigError, match="does not apply to model=world_flux"):
        validate.check_schedule("world_flux", {"model": "flux"}, "ddim10", "ddim")
    validate.check_schedule("world_sd", {"model": "sd"}, "euler4_trailing", "euler")


def test_task_must_fit_the_dataset() -> None:
    with pytest.raises(validate.ConfigError, match="task=edit needs edit pairs, and dataset=sample has none"):
        validate.check_task_fits("edit", "sample", sample_dataset())
    validate.check_task_fits("reconstruct", "sample", sample_dataset())


def test_dataset_path_missing_or_absent() -> None:
    cfg = _compose(["dataset=folder"])
    with pytest.raises(validate.ConfigError, match="dataset=folder needs dataset.path="):
        validate.check_dataset_config("folder", cfg.dataset)
    cfg = _compose(["dataset=folder", "dataset.path=/no/such/folder"])
    with pytest.raises(validate.ConfigError, match="dataset.path=/no/such/folder does not exist"):
        validate.check_dataset_config("folder", cfg.dataset)


STOPS = [
    (["inverter=gnri", "inverter.max_iters=0"], "run.py: inverter=gnri: inverter.max_iters=0 must be >= 1"),
    (["schedule=flow4"], "run.py: schedule=flow4 (kind flow_euler) does not apply to model=sd15"),
]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """The runs of STOPS in one child process (tests/run_many.py: run.py's __main__ once per run, each with its
    own exit status and stderr): (their folder, exit codes). The model points at a folder that does not exist:
    loading it would fail with another error."""
    root = tmp_path_factory.mktemp("stops")
    runs = [(str(i), ["model=sd15", f"model.pretrained={root / str(i) / 'absent'}", *overrides,
                      f"hydra.run.dir={root / str(i) / 'run'}"]) for i, (overrides, _) in enumerate(STOPS)]
    return root, run_in_one_process(runs, root / "logs", timeout=600)


@pytest.mark.parametrize("case", range(len(STOPS)))
def test_run_py_stops_before_loading_the_model(stopped: tuple[Path, dict[str, int]], case: int) -> None:
    root, codes = stopped
    message = STOPS[case][1]
    stderr = (root / "logs" / f"{case}.err").read_text(encoding="utf-8")
    assert codes[str(case)] == 2
    assert stderr.strip().splitlines() == [message + stderr.strip().removeprefix(message)]
    assert stderr.strip().startswith(message)
    assert not (root / str(case) / "run" / "results.csv").exists()
