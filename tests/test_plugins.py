"""Plug-in routes (issue 23): an installed package's entry points and a user's config folder run by
name through run.py and the library, without touching this project's files; a bad plug-in is one
line and exit status 2 before any model loads.

The example package (``examples/my_inverter``) is installed offline into a temporary folder
(``pip install --no-deps --no-build-isolation --no-index --target``); subprocesses get that folder on
``PYTHONPATH``, so ``importlib.metadata`` finds its entry points.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gnri import catalog
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_inverter"
# tiny_sd, one image, two steps, no warm-up or bare-network clock: the cheapest real run
FAST = ["model=tiny_sd", "dataset=sample", "max_images=1", "schedule.num_steps=2", "warmup=0",
        "time_network=false", "progress=false"]


def _install(source: Path, target: Path) -> Path:
    """pip-install a copy of ``source`` (the source tree stays clean) into ``target``, offline."""
    copy = target.parent / f"{source.name}-src"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", "--target", str(target), str(copy)], check=True, timeout=300)
    return target


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed into a temporary folder."""
    return _install(EXAMPLE, tmp_path_factory.mktemp("plugins") / "site")


@pytest.fixture(scope="module")
def clash_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package whose entry point ``ddim`` clashes with the shipped name."""
    root = tmp_path_factory.mktemp("clash")
    pkg = root / "clashing"
    (pkg / "clashing").mkdir(parents=True)
    (pkg / "clashing" / "__init__.py").write_text("from baselines.ddim import invert\n")
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "clashing"\nversion = "0.1"\n'
        '[project.entry-points."gnri_bench.inverters"]\nddim = "clashing:invert"\n'
        '[tool.setuptools]\npackages = ["clashing"]\n')
    return _install(pkg, root / "site")


def _env(*paths: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run(args: list[str], *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=_env(*paths), capture_output=True,
                          text=True, timeout=600)


def _rows(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "results.csv")


@pytest.fixture()
def plugin_path(site: Path):
    """The installed example on sys.path in this process too, with the entry-point cache cleared."""
    sys.path.insert(0, str(site))
    catalog.entry_point_methods.cache_clear()
    yield site
    sys.path.remove(str(site))
    for name in [m for m in sys.modules if m == "my_inverter" or m.startswith("my_inverter.")]:
        del sys.modules[name]
    catalog.entry_point_methods.cache_clear()


@pytest.mark.slow
def test_entry_point_plugins_run_by_name_in_a_sweep(site: Path, tmp_path: Path) -> None:
    """No YAML: inverter=my_ddim / relaxed_half run; my_ddim's rows equal ddim's (the A/A check);
    a flow-only method crossed with the SD model gives skipped rows (no model loaded) and the sweep goes on."""
    proc = _run(["-m", *FAST, "inverter=my_ddim,ddim,relaxed_half,rf_solver", f"hydra.sweep.dir={tmp_path}"], site)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = {_rows(d)["inverter"].iloc[0]: _rows(d) for d in sorted(tmp_path.iterdir()) if (d / "results.csv").exists()}
    assert set(jobs) == {"my_ddim", "ddim", "relaxed_half", "rf_solver"}
    for name in ("my_ddim", "ddim", "relaxed_half"):
        assert set(jobs[name]["status"]) <= {"ok", "unavailable"} and (jobs[name]["status"] == "ok").any(), name
    psnr = {n: df.loc[df["metric"] == "psnr", "value"].item() for n, df in jobs.items() if n != "rf_solver"}
    assert psnr["my_ddim"] == psnr["ddim"] and psnr["relaxed_half"] != psnr["ddim"]
    params = jobs["relaxed_half"]["inverter_params"].iloc[0]
    assert '"omega":0.5' in params and '"max_iters":4' in params  # the variant's value and the signature's
    skipped = jobs["rf_solver"]
    assert (skipped["status"] == "skipped").all() and len(skipped) == len(jobs["ddim"])  # every metric has a row
    assert skipped["reason"].str.contains("does not apply to the vp family").all()
    kept = {n: df.loc[df["metric"] == "kept_latents", "value"].item() for n, df in jobs.items() if n != "rf_solver"}
    assert kept == {"my_ddim": 1.0, "ddim": 1.0, "relaxed_half": 1.0}


@pytest.mark.slow
def test_config_folder_route_both_ways(tmp_path: Path) -> None:
    """A user's folder with inverter/my_method.yaml runs with --config-dir and with hydra.searchpath
    (the same unit: the second run resumes it); inverter.<keyword>= needs no '+'."""
    folder = tmp_path / "my_conf"
    (folder / "inverter").mkdir(parents=True)
    (folder / "inverter" / "my_method.yaml").write_text(
        "_target_: my_inverter.relaxed.invert\n_partial_: true\nomega: 0.5\n")
    out = tmp_path / "run"
    first = _run(["--config-dir", str(folder), "inverter=my_method", "inverter.max_iters=1", *FAST,
                  f"hydra.run.dir={out}"], EXAMPLE)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = _rows(out)
    assert (rows["status"] == "ok").any() and rows["inverter"].iloc[0] == "my_method"
    assert '"max_iters":1' in rows["inverter_params"].iloc[0] and '"omega":0.5' in rows["inverter_params"].iloc[0]
    second = _run([f"hydra.searchpath=[file://{folder}]", "inverter=my_method", "inverter.max_iters=1", *FAST,
                   f"hydra.run.dir={out}"], EXAMPLE)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed 1 of 1 units" in second.stderr + second.stdout


@pytest.mark.slow
def test_bad_plugins_are_one_line_and_exit_2_before_loading(site: Path, clash_site: Path, tmp_path: Path) -> None:
    """Each mistake stops run.py with one line on stderr and status 2; the model points at a folder
    that does not exist, so loading it would fail otherwise."""
    folder = tmp_path / "conf"
    (folder / "inverter").mkdir(parents=True)
    for name, target in {"gone": "no_such_pkg.mod.invert", "constant": "gnri.catalog.GROUP",
                         "wrong_signature": "gnri.catalog.first_doc_line"}.items():
        (folder / "inverter" / f"{name}.yaml").write_text(f"_target_: {target}\n_partial_: true\n")
    absent = ["model=sd15", f"model.pretrained={tmp_path / 'absent'}", f"hydra.run.dir={tmp_path / 'run'}"]
    cases = {
        "inverter=gone": "inverter=gone: _target_ no_such_pkg.mod.invert cannot be imported: ModuleNotFoundError",
        "inverter=constant": "inverter=constant: _target_ gnri.catalog.GROUP is a str, not a callable inverter",
        "inverter=wrong_signature": "inverter=wrong_signature: _target_ gnri.catalog.first_doc_line takes (obj)",
        "inverter=relaxed inverter.omegaa=1": "inverter=relaxed: unknown option inverter.omegaa; valid: max_iters, omega",
        "inverter=relaxed inverter.max_iters=abc": "inverter=relaxed: inverter.max_iters='abc' must be an integer",
        "inverter=rf_solver": "inverter=rf_solver does not apply to the vp family (it runs on flow models): model=sd15",
    }
    # the six cases in one process (tests/run_many.py: run.py's __main__ once per case, its own stderr each)
    out = tmp_path / "cases"
    runs = [(f"case{i}", ["--config-dir", str(folder), *args.split(), *absent]) for i, args in enumerate(cases)]
    codes = run_in_one_process(runs, out, env=_env(site), timeout=600)
    for i, (args, message) in enumerate(cases.items()):
        stderr = (out / f"case{i}.err").read_text(encoding="utf-8")
        assert codes[f"case{i}"] == 2, (args, stderr[-1500:])
        assert stderr.strip().splitlines() == [stderr.strip()], (args, stderr[-1500:])
        assert stderr.startswith(f"run.py: {message}"), (args, stderr)
    clash = _run(["inverter=ddim", *absent], site, clash_site)
    assert clash.returncode == 2 and len(clash.stderr.strip().splitlines()) == 1, clash.stderr[-1500:]
    assert "inverter ddim: the entry point of clashing (clashing:invert) clashes with the shipped one" in clash.stderr
    assert not (tmp_path / "run" / "results.csv").exists()


def test_list_methods_shows_each_origin_and_the_library_runs_a_plugin(plugin_path: Path, tmp_path: Path) -> None:
    import torch

    import gnri
    from gnri.core import Conditioning
    from gnri.toy import LinearEpsDenoiser, vp_grid

    folder = tmp_path / "conf"
    (folder / "inverter").mkdir(parents=True)
    (folder / "inverter" / "mine.yaml").write_text("_target_: my_inverter.relaxed.invert\n_partial_: true\nomega: 0.3\n")
    listed = gnri.list_methods(config_dirs=[folder])
    assert listed["ddim"].origin == "shipped"
    assert listed["relaxed"].origin == listed["my_ddim"].origin == "entry point of my-inverter"
    assert listed["mine"].origin == f"config folder {folder}" and listed["mine"].target == "my_inverter.relaxed.invert"
    assert catalog.method("mine", [folder]).defaults() == {"max_iters": 4, "omega": 0.3}
    assert catalog.method("relaxed_half").defaults() == {"max_iters": 4, "omega": 0.5}
    fn = gnri.api.resolve_method("relaxed")  # the library route: by name, defaults bound
    x0 = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    result = fn(LinearEpsDenoiser(0.3), x0, vp_grid(3), Conditioning({}))
    assert result.iterations == [4, 4, 4]
    with pytest.raises(catalog.CatalogError, match=r"config folder .* clashes with the shipped method"):
        (folder / "inverter" / "ddim.yaml").write_text("_target_: my_inverter.relaxed.invert\n")
        catalog.methods([folder])


def test_the_example_package_passes_its_own_tests(site: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
                           str(EXAMPLE / "tests")],
                          cwd=EXAMPLE, env=_env(site), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout
