"""Docs that run (issue 18, item 9): every command in README.md, run.py's docstring and the
comments of conf/**/*.yaml is checked, so a command the docs suggest cannot name a config that
does not exist (``schedule=ddim4``) or settings that stop the run.

What "checked" means, per kind of command (running each one fully would take the benchmark's
minutes):

- ``python run.py ARGS`` (also the ``run.py ARGS`` part of ``accelerate launch ... run.py`` and
  ``torchrun ... run.py``): what run.py does before Hydra (a paper preset's ``smoke=true``
  arguments, :func:`run.check_group_choices`), then,
  for the jobs of the sweep (command-line sweeps and an experiment's ``hydra.sweeper.params``):
  the full product of the keys validation checks against each other (:data:`CROSSED`: model,
  schedule, dataset, task, guidance, ...), with every value of every other swept key (inverter
  options) in at least one job. An inverter sweep where nothing sets inverter options composes
  its first name only: every name is checked by run.py's group check above and every shipped
  inverter config by ``tests/test_validate.py``. For each job: Hydra's composition, run.py's
  pre-load validation (:func:`run.validated_dataset`: inverter options, schedule against the
  model family, guidance against the model, the dataset's path and entries, the task against
  the dataset) and :func:`run.build_settings`. No model is loaded; a hub checkpoint (``sd15``,
  ``sdxl_turbo``, ...) is validated the same way, though it runs only where its weights are.
- Commands whose data or checkpoint folder is not on this machine (a ``dataset.path``,
  ``dataset.images`` or ``model.path`` that does not exist here, e.g. ``/data/coco``) are composed
  and validated for config only: the dataset's path and entries and the model folder are
  replaced by stand-ins, everything else is checked as above.
- A launcher whose Hydra plugin is not installed (``hydra/launcher=ray``): its config file must
  exist; the job's own overrides are checked without it.
- ``bash scripts/X.sh``: the script exists and parses (``bash -n``); ``python scripts/X.py``: it
  exists and compiles.
- README ```python blocks compile; a block that needs nothing from outside (no hub checkpoint, no
  GPU, no file that is not here) is executed, and the new-inverter tutorial is run on an analytic
  denoiser (:mod:`gnri.toy`).
- A command the docs show failing on purpose (:data:`EXPECTED_ERRORS`) must fail with that line.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import re
import shlex
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Iterator

import pytest
import torch
from omegaconf import OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Commands the docs show failing on purpose -> the line they must print.
EXPECTED_ERRORS = {"python run.py inverter=nope": "run.py: unknown inverter 'nope' (conf/inverter/nope.yaml not found)"}
# Overrides naming input data or a checkpoint folder; one that does not exist here makes the command config-only.
EXTERNAL_KEYS = ("dataset.path", "dataset.images", "model.path", "model.pretrained", "model.folder")
LAUNCHER_PLUGINS = {"submitit": "hydra_plugins.hydra_submitit_launcher", "joblib": "hydra_plugins.hydra_joblib_launcher",
                    "ray": "hydra_plugins.hydra_ray_launcher"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    """One documented command: where it is written and its text (continuations joined)."""

    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


# --- extraction -----------------------------------------------------------------------------------

def _join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join lines ending in a backslash with the next one; keep the first line's number."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        if pending is not None:
            number, line = pending[0], pending[1] + " " + line.strip()
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1].rstrip())
            continue
        pending = None
        out.append((number, line))
    if pending is not None:
        out.append(pending)
    return out


def _uncomment(line: str) -> str:
    """A shell line without its trailing comment (``#`` after whitespace), stripped."""
    return re.sub(r"(^|\s)#.*$", "", line).strip()


def _fenced_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """(first line number, dedented body) of every ```language block (indented ones too)."""
    blocks, body, start, lines = [], None, 0, text.splitlines()
    for i, line in enumerate(lines, 1):
        stripped = line.strip()
        if body is None and stripped == f"```{language}":
            body, start = [], i + 1
        elif body is not None and stripped == "```":
            blocks.append((start, textwrap.dedent("\n".join(body))))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def readme_commands() -> list[Command]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = []
    for start, body in _fenced_blocks(text, "bash"):
        lines = [(start + k, line) for k, line in enumerate(body.splitlines()) if line.strip()]
        for number, line in _join_continuations(lines):
            if not line.lstrip().startswith("#"):
                found.append(Command(f"README.md:{number}", _uncomment(line)))
    for number, line in enumerate(text.splitlines(), 1):
        for match in re.finditer(r"`((?:python run\.py|bash scripts/)[^`]*)`", line):
            found.append(Command(f"README.md:{number}", match.group(1)))
    return found


def docstring_commands(run_module: ModuleType) -> list[Command]:
    lines = (run_module.__doc__ or "").splitlines()
    return [Command(f"run.py docstring line {i}", _uncomment(line)) for i, line in enumerate(lines, 1)
            if line.strip().startswith("python run.py")]


def _is_command(text: str) -> bool:
    words = [w for w in text.split() if not ENV_ASSIGNMENT.match(w)]
    return bool(words) and (words[0] in ("python", "accelerate", "torchrun") or text.startswith("bash scripts/"))


def yaml_comment_commands() -> list[Command]:
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        comments = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = re.match(r"^\s*#\s?(.*)$", line)
            if match:
                comments.append((number, match.group(1)))
        for number, text in _join_continuations(comments):
            if _is_command(text.strip()):
                found.append(Command(f"{path.relative_to(ROOT)}:{number}", _uncomment(text)))
    return found


@functools.lru_cache(maxsize=1)
def run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gnri_bench_run_docs", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def all_commands() -> list[Command]:
    return readme_commands() + docstring_commands(run_module()) + yaml_comment_commands()


# --- checking run.py arguments -------------------------------------------------------------------

def _split_flags(args: list[str]) -> tuple[bool, list[str]]:
    """(multirun, overrides) of run.py's arguments; flags other than -m are refused (unknown here)."""
    multirun, overrides = False, []
    for arg in args:
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg.startswith("-"):
            raise AssertionError(f"run.py flag {arg!r} is not understood by this test; teach it")
        else:
            overrides.append(arg)
    return multirun, overrides


def _external(override: str) -> bool:
    key, _, value = override.partition("=")
    if key.lstrip("+") not in EXTERNAL_KEYS or value in ("", "null"):
        return False
    path = Path(value).expanduser()
    return not (path if path.is_absolute() else ROOT / path).exists()


def _launcher_installed(name: str) -> bool:
    module = LAUNCHER_PLUGINS.get(name.split("_")[0])
    return module is None or importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def _stand_ins(monkeypatch: pytest.MonkeyPatch, dataset: bool, model: bool) -> Iterator[None]:
    """Config-only checking: no dataset path/entries (two stand-in edit pairs), no model folder."""
    from eval import validate

    with monkeypatch.context() as patch:
        if dataset:
            patch.setattr(validate, "check_dataset_config", lambda *a, **k: None)
            stand_in = [SimpleNamespace(target_caption="b", caption="a")] * 2
            real = __import__("hydra.utils", fromlist=["instantiate"]).instantiate

            def instantiate(node: Any, *args: Any, **kwargs: Any) -> Any:
                if OmegaConf.is_config(node) and "path" in node and _dataset_like(node):
                    return stand_in
                return real(node, *args, **kwargs)

            patch.setattr("hydra.utils.instantiate", instantiate)
        if model:
            patch.setattr(validate, "check_model_config", lambda *a, **k: None)
            patch.setattr(validate, "adapter_family", lambda cfg: None)
        yield


# Swept keys whose values validation checks against each other (model x schedule, dataset x task,
# guidance x model): their full product is composed; every other swept key (inverter options,
# seeds, ...) is spread over it, each value in at least one job.
CROSSED = ("model", "schedule", "dataset", "task", "experiment", "guidance_scale", "true_cfg_scale", "device", "dtype")


def _key(override: Any) -> str:
    return str(override.input_line).split("=", 1)[0]


def _crossed(key: str) -> bool:
    return re.split(r"[./@]", key.lstrip("+~"), maxsplit=1)[0] in CROSSED


def _dataset_like(node: Any) -> bool:
    target = str(node.get("_target_", ""))
    return target.startswith("eval.") and "data" in target


class RunChecker:
    """Composes and validates every job of a run.py command, sharing work between commands."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from hydra.core.hydra_config import HydraConfig

        self.tmp, self.monkeypatch = tmp, monkeypatch
        monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)  # restored after the test
        self.parser = OverridesParser.create()
        self.done: dict[tuple[str, ...], str | None] = {}
        self.closers: list[Any] = []
        self.datasets: dict[str, Any] = {}

    def jobs(self, overrides: list[str], multirun: bool) -> list[list[str]]:
        """Every job's overrides: command-line sweeps and the experiment's sweeper params, expanded."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        parsed = self.parser.parse_overrides(overrides)
        if any(o.is_sweep_override() for o in parsed) and not multirun:
            raise AssertionError("a sweep (a,b) without -m: Hydra refuses it")
        first = BasicSweeper.split_arguments(parsed, None)[0][0]
        params = self._compose(first).hydra.sweeper.params or {}
        given = {o.get_key_element() for o in parsed}
        extra = [f"{k}={v}" for k, v in params.items() if k not in given]
        if extra and not multirun:
            return [first]
        parsed += self.parser.parse_overrides(extra)
        crossed = [o for o in parsed if not o.is_sweep_override() or _crossed(_key(o))]
        spread = [(_key(o), list(o.sweep_string_iterator())) for o in parsed if o not in crossed]
        if not any(k.lstrip("+~").startswith("inverter.") for k, _ in spread) and not any(
                _key(o).lstrip("+~").startswith("inverter.") for o in crossed) and not self._sets_inverter(first):
            spread = [(k, v[:1]) if k == "inverter" else (k, v) for k, v in spread]
        jobs = [list(job) for job in BasicSweeper.split_arguments(crossed, None)[0]]
        width = max([len(jobs)] + [len(v) for _, v in spread])
        return [jobs[n % len(jobs)] + [f"{k}={v[n % len(v)]}" for k, v in spread] for n in range(width)]

    def _sets_inverter(self, job: list[str]) -> bool:
        """Whether the job's experiment sets inverter options in its body."""
        names = [o.split("=", 1)[1] for o in job if o.split("=", 1)[0].lstrip("+") == "experiment"]
        return any("inverter" in (OmegaConf.load(CONF / "experiment" / f"{n}.yaml") or {}) for n in names
                   if (CONF / "experiment" / f"{n}.yaml").is_file())

    def _compose(self, overrides: list[str]) -> Any:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        if not self.closers:  # one Hydra for every job: it caches the config files it has read
            run_module().register_configs()  # the method catalog's defaults, as run.py registers them
            GlobalHydra.instance().clear()
            context = initialize_config_dir(config_dir=str(CONF), version_base="1.3")
            context.__enter__()
            self.closers.append(lambda: context.__exit__(None, None, None))
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)

    def close(self) -> None:
        """Leave Hydra's global state as it was."""
        while self.closers:
            self.closers.pop()()

    def check(self, args: list[str]) -> str | None:
        """None if every job of ``run.py ARGS`` composes and validates, else the first problem (one line)."""
        from eval.presets import smoke_arguments

        run = run_module()
        args, error = smoke_arguments(args, CONF)  # what run.py does first (paper presets' smoke=true)
        args = run.default_schedule(run.inverter_overrides(args))  # ++inverter.<key>=, the family's schedule, as run.py
        error = error or run.check_group_choices(args)
        if error:
            return error
        multirun, overrides = _split_flags(args)
        launcher = [o for o in overrides if o.startswith("hydra/launcher=")]
        if launcher:
            name = launcher[0].split("=", 1)[1]
            if not (CONF / "hydra" / "launcher" / f"{name}.yaml").is_file():
                return f"conf/hydra/launcher/{name}.yaml not found"
            if not _launcher_installed(name):  # the plugin is an extra (pip install -e '.[ray]')
                overrides = [o for o in overrides if not o.startswith(("hydra/launcher=", "hydra.launcher."))]
        try:
            jobs = self.jobs(overrides, multirun)
        except Exception as err:  # noqa: BLE001 - any composition failure is the finding
            return f"composition: {str(err).strip().splitlines()[0]}"
        for job in jobs:
            key = tuple(sorted(job))
            if key not in self.done:
                self.done[key] = self._check_job(job)
            if self.done[key]:
                return f"job {' '.join(job)}: {self.done[key]}"
        return None

    def _check_job(self, job: list[str]) -> str | None:
        from hydra.core.hydra_config import HydraConfig

        run = run_module()
        try:
            cfg = self._compose(job)
        except Exception as err:  # noqa: BLE001
            return f"composition: {str(err).strip().splitlines()[0]}"
        HydraConfig.instance().set_config(cfg)  # what @hydra.main sets: runtime choices for run.py
        with open_dict(cfg):
            del cfg["hydra"]  # the job's own config, as run.py's main receives it
        dataset_external = any(_external(o) for o in job if o.startswith(("dataset.", "+dataset.")))
        model_external = any(_external(o) for o in job if o.startswith(("model.", "+model.")))
        stderr = io.StringIO()
        try:
            with _stand_ins(self.monkeypatch, dataset_external, model_external), contextlib.redirect_stderr(stderr):
                with self._shared_datasets(dataset_external):
                    run.dataset_limit(cfg)
                    run.validated_dataset(cfg)
                run.build_settings(cfg, self.tmp / "run", None, "cpu")
        except SystemExit as stop:
            return f"exit {stop.code}: {stderr.getvalue().strip()}"
        except Exception as err:  # noqa: BLE001
            return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        return None

    @contextlib.contextmanager
    def _shared_datasets(self, external: bool) -> Iterator[None]:
        """Build each dataset config once across jobs (the world renders its scenes once)."""
        import hydra.utils

        if external:
            yield
            return
        real = hydra.utils.instantiate

        def instantiate(node: Any, *args: Any, **kwargs: Any) -> Any:
            if args or kwargs or not OmegaConf.is_config(node) or not _dataset_like(node):
                return real(node, *args, **kwargs)
            key = OmegaConf.to_yaml(node)
            if key not in self.datasets:
                self.datasets[key] = real(node)
            return self.datasets[key]

        with self.monkeypatch.context() as patch:
            patch.setattr(hydra.utils, "instantiate", instantiate)
            yield


@pytest.fixture
def checker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunChecker]:
    run_checker = RunChecker(tmp_path, monkeypatch)
    yield run_checker
    run_checker.close()


def check_command(command: Command, checker: RunChecker) -> str | None:
    """None if ``command`` is sound (see the module docstring), else what is wrong."""
    words = shlex.split(command.text, comments=True)
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return "empty command"
    if words[0] == "bash":
        script = ROOT / words[1]
        if not script.is_file():
            return f"{words[1]} does not exist"
        parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        return None if parsed.returncode == 0 else f"{words[1]} does not parse: {parsed.stderr.strip()}"
    if words[0] in ("python", "python3") and len(words) > 1 and words[1].startswith("scripts/"):
        script = ROOT / words[1]
        if not script.is_file():
            return f"{words[1]} does not exist"
        compile(script.read_text(encoding="utf-8"), str(script), "exec")
        return None
    if "run.py" in words and words[0] in ("python", "python3", "accelerate", "torchrun"):
        args = [w for w in words[words.index("run.py") + 1:] if w != "..."]
        return checker.check(args)
    return f"not a kind of command this test knows ({words[0]}); teach it"


# --- the tests -----------------------------------------------------------------------------------

def test_the_extraction_finds_the_documented_commands() -> None:
    """The extractor itself: the known commands of each source are found, continuations joined."""
    found = [str(c) for c in all_commands()]
    texts = {c.text for c in all_commands()}
    assert any(t.startswith("accelerate launch") and "hydra.run.dir=" in t for t in texts)  # 3 lines joined
    assert "bash scripts/benchmark.sh" in texts and "python run.py inverter=nope" in texts
    assert any(w.startswith("run.py docstring") for w in found)
    assert any(c.where.startswith("conf/hydra/launcher/submitit_slurm.yaml") and "experiment=world_euler4" in c.text
               for c in all_commands())  # a comment continued with a backslash
    assert len(texts) >= 40


@pytest.mark.slow
def test_every_documented_command_composes_and_validates(checker: RunChecker) -> None:
    problems = []
    for command in all_commands():
        problem = check_command(command, checker)
        expected = EXPECTED_ERRORS.get(command.text)
        if expected is not None:
            if not (problem or "").startswith(expected):
                problems.append(f"{command}\n    should fail with {expected!r}, got {problem!r}")
        elif problem:
            problems.append(f"{command}\n    {problem}")
    assert not problems, "documented commands that do not run:\n" + "\n".join(problems)


def test_the_checker_catches_what_it_is_for(checker: RunChecker) -> None:
    """A checker that passes everything proves nothing: each kind of mistake is caught."""

    def problem(text: str) -> str | None:
        return check_command(Command("here", text), checker)

    assert "unknown schedule 'ddim4'" in problem("python run.py -m inverter=ddim,fixed_point schedule=ddim10,ddim4")
    assert "inverter.max_iters=0 must be >= 1" in problem("python run.py inverter=gnri inverter.max_iters=0")
    assert "does not apply to model=world_sd" in problem("python run.py model=world_sd schedule=flow4")
    assert "task=edit needs edit pairs" in problem("python run.py task=edit dataset=world")
    assert "does not exist" in problem("bash scripts/no_such_script.sh")
    assert "composition" in problem("python run.py no_such_key=1")
    assert "without -m" in problem("python run.py inverter=ddim,gnri")
    # config-only: external data is stood in for, the rest is still checked
    assert problem("python run.py dataset=folder dataset.path=/data/my_images") is None
    assert "inverter.lam=-1" in problem("python run.py dataset=folder dataset.path=/data/x inverter=gnri inverter.lam=-1")
    # an experiment's own sweep is expanded: the crossed keys in full, every other value at least once
    assert sorted(j[-2] for j in checker.jobs(["experiment=tiny_sweep"], multirun=True)) == [
        "schedule=ddim10", "schedule=ddim50"]
    rules = checker.jobs(["experiment=gnri_ablation_rules"], multirun=True)
    assert len(rules) == 2 and {o for j in rules for o in j if o.startswith("inverter.output=")} == {
        "inverter.output=f", "inverter.output=z"}
    both = checker.jobs(["inverter=fixed_point,gnri", "inverter.max_iters=2"], multirun=True)
    assert {o for j in both for o in j if o.startswith("inverter=")} == {"inverter=fixed_point", "inverter=gnri"}
    assert "inverter.max_iters" in problem("python run.py -m inverter=fixed_point,ddim inverter.max_iters=2")


def _python_blocks() -> list[tuple[int, str]]:
    return _fenced_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "python")


def _self_contained(code: str) -> bool:
    """No GPU, no hub checkpoint, no file that is not here."""
    if "cuda" in code:
        return False
    for name in re.findall(r"from_pretrained\(\s*[\"']([^\"']+)[\"']", code):
        if not (ROOT / name).exists():
            return False
    return all((ROOT / name).exists() for name in re.findall(r"[\"']([^\"'\s]+\.(?:png|jpe?g|safetensors))[\"']", code)
               if "save" not in code.split(name)[0].rsplit("\n", 1)[-1])


def test_readme_python_blocks_compile_and_the_self_contained_ones_run(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _python_blocks()
    assert blocks, "README.md has no ```python block"
    (tmp_path / "datasets").symlink_to(ROOT / "datasets")  # relative paths as from the repository root
    monkeypatch.chdir(tmp_path)  # a snippet that writes files writes them here
    for start, code in blocks:
        compiled = compile(code, f"README.md:{start}", "exec")
        if "def invert(" in code:  # the new-inverter tutorial: define it, run it on an analytic denoiser
            from gnri.core import Conditioning
            from gnri.toy import GaussianDenoiser, vp_grid

            namespace: dict[str, Any] = {}
            exec(compiled, namespace)
            grid = vp_grid(4)
            x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
            result = namespace["invert"](GaussianDenoiser(), x0, grid, Conditioning({}), max_iters=2)
            assert result.z.shape == x0.shape and len(result.trajectory) == grid.num_steps + 1
        elif _self_contained(code):
            exec(compiled, {"__name__": "readme_snippet"})


def test_readme_lists_every_model_config() -> None:
    """Every ``conf/model`` config is named in the README (as `name`), so a user can find it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p.stem for p in sorted((CONF / "model").glob("*.yaml")) if f"`{p.stem}`" not in text
               and f"model={p.stem}" not in text]
    assert not missing, f"README.md does not list model configs: {missing}"
