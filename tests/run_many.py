"""Run run.py several times in one Python process: one interpreter start and one import of torch,
diffusers and Hydra for many commands (tests/test_paper_presets.py's smoke sweeps, ...).

    python tests/run_many.py OUT RUNS.json     # RUNS.json: [[name, [run.py arguments...](, cwd)], ...]
    run_in_one_process([(name, args), ...], OUT)  # from a test: the same, in a child process
    run_in_one_process([(name, args, cwd), ...], OUT)  # a run with its own working directory

Each run is run.py's ``__main__`` block exactly as ``python run.py <arguments>`` from the project root
would run it, or as ``python /path/to/run.py <arguments>`` from ``cwd`` where a run names one
(:func:`runpy.run_path`: the preset's smoke arguments, the group checks, Hydra, the
sweep), one after another. A run's stdout and stderr (file descriptors 1 and 2) go to
``OUT/<name>.out`` / ``OUT/<name>.err``; ``OUT/exit_codes.json`` maps each name to run.py's exit
status (0: it returned; a SystemExit's code; 1, with the traceback in ``.err``, for any other
exception). One run's failure does not stop the next; each run sees once-per-location warnings afresh, as
its own process would. Not a test module (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _forget_warnings() -> None:
    """Each run shows a once-per-location warning again, as its own fresh process would."""
    warnings.onceregistry.clear()
    for module in list(sys.modules.values()):
        registry = getattr(module, "__warningregistry__", None)
        if isinstance(registry, dict):
            registry.clear()


def run_once(name: str, args: list[str], out: Path, cwd: str | None = None) -> int:
    """run.py's exit status for ``args`` (from ``cwd``, else the project root); its output in ``out/<name>.out``
    and ``.err``."""
    _forget_warnings()
    os.chdir(cwd or ROOT)
    saved_argv, saved_fds = sys.argv[:], (os.dup(1), os.dup(2))
    sys.stdout.flush()
    sys.stderr.flush()
    with open(out / f"{name}.out", "w") as stdout, open(out / f"{name}.err", "w") as stderr:
        os.dup2(stdout.fileno(), 1)
        os.dup2(stderr.fileno(), 2)
        sys.argv = ["run.py", *args]
        try:
            runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            if not isinstance(done.code, (int, type(None))):
                print(done.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - recorded; the next run still runs
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.argv = saved_argv
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0])
            os.close(saved_fds[1])
            os.chdir(ROOT)
    return code


def run_in_one_process(runs: list[tuple], out: Path, env: dict[str, str] | None = None,
                       timeout: float = 1800) -> dict[str, int]:
    """For a test: ``runs`` ((name, run.py arguments) pairs, or (name, arguments, working directory) triples) in
    one child process (this file as a script, from the project root, with ``env``); each run's exit status by
    name. Its output: ``out/<name>.out`` and ``.err``."""
    import subprocess

    out.mkdir(parents=True, exist_ok=True)
    listed = [[run[0], list(run[1]), *(str(cwd) for cwd in run[2:3])] for run in runs]
    (out / "runs.json").write_text(json.dumps(listed), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out), str(out / "runs.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return json.loads((out / "exit_codes.json").read_text(encoding="utf-8"))


def main(args: list[str]) -> int:
    out = Path(args[0]).resolve()
    runs = json.loads(Path(args[1]).read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    sys.path[0] = str(ROOT)  # as for python run.py: the project root first, not tests/
    codes = {run[0]: run_once(run[0], list(run[1]), out, *run[2:3]) for run in runs}
    (out / "exit_codes.json").write_text(json.dumps(codes, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
