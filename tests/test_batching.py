"""Batched inversion (``batch_size=B``): every inverter is batch-separable, a batch's rows equal
batch 1's, a broken image or a diverging image fails alone, and a method marked not separable
runs image by image."""

from __future__ import annotations

import functools
import inspect
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from baselines import ddim
from eval.data import Entry, sample_dataset
from eval.tasks.reconstruct import batch_separable, evaluate
from eval.metrics import build_metrics
from gnri.core import InversionResult
from gnri.models.base import ScheduleSpec
from run_many import run_in_one_process  # noqa: E402 - tests/run_many.py
from test_harness import ToyAdapter

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["a red ball on grass", "a blue cube", "two green trees by a lake"]


CONF = ROOT / "conf" / "inverter"
SHIPPED = sorted(p.stem for p in CONF.glob("*.yaml"))
# Small budgets (the configs' own hyperparameter names), as tests/test_edit.py: separability does
# not depend on how many iterations run, and per-image stopping rules still act within them.
FAST = {"max_iters": 3, "num_inner_steps": 2, "n_iters": 2, "newton_iters": 1, "num_renoise_steps": 2,
        "max_first_step_renoise_steps": 2}
RUN, NOT_SEPARABLE = "run", "not batch-separable"
FLOW_GRID = "needs a rectified-flow grid"
DISTILLED = "needs classifier-free guidance, which a guidance-distilled model"
FLOW_ONLY = ("fireflow", "flowedit", "ftedit", "rf_inversion", "rf_solver", "uni_inv")
# Every shipped method's expected outcome per family: "run" (then batch == single is checked),
# "not batch-separable" (the method says so: it runs image by image), or the refusal's substring.
# Written out name by name: a new shipped method fails the completeness test until it is named here.
EXPECTED: dict[str, dict[str, str]] = {
    "sd": {  # the tiny SD UNet, DDIM, CFG 3
        "anderson": RUN, "ddim": RUN, "edict": RUN, "edit_friendly": RUN, "fireflow": FLOW_GRID,
        "fixed_point": RUN, "fixed_point3": RUN, "flowedit": FLOW_GRID, "ftedit": FLOW_GRID, "gnri": RUN,
        "gnri_2x": RUN, "gnri_aa": RUN, "gnri_nk": RUN, "gnri_official": RUN, "gradient_descent": RUN,
        "negative_prompt": RUN, "null_text": RUN, "renoise": RUN, "rf_inversion": FLOW_GRID,
        "rf_solver": FLOW_GRID, "uni_inv": FLOW_GRID,
    },
    "flux": {  # the tiny guidance-distilled Flux transformer, flow Euler
        "anderson": RUN, "ddim": RUN, "edict": RUN, "edit_friendly": RUN, "fireflow": RUN,
        "fixed_point": RUN, "fixed_point3": RUN, "flowedit": RUN, "ftedit": RUN, "gnri": RUN,
        "gnri_2x": RUN, "gnri_aa": RUN, "gnri_nk": RUN, "gnri_official": RUN, "gradient_descent": RUN,
        "negative_prompt": DISTILLED, "null_text": DISTILLED, "renoise": RUN, "rf_inversion": RUN,
        "rf_solver": RUN, "uni_inv": RUN,
    },
}


def _inverter(name: str):
    """The config's partial with each FAST budget capped (the defaults live in the signature)."""
    fn = instantiate(OmegaConf.load(CONF / f"{name}.yaml"), _convert_="all")
    params = inspect.signature(fn.func).parameters
    capped = {key: min(int(fn.keywords.get(key, params[key].default)), value)
              for key, value in FAST.items() if key in params}
    return functools.partial(fn.func, *fn.args, **{**fn.keywords, **capped})


def _single_and_batch(adapter, fn, schedule: ScheduleSpec, guidance: float):
    captions = CAPTIONS[:2]  # two images with different latents and prompts are enough to see mixing
    torch.manual_seed(0)
    latents = torch.randn(len(captions), *adapter.encode_images(torch.zeros(1, 3, *adapter.image_size())).shape[1:])
    with torch.no_grad():
        batch = fn(adapter.denoiser(), latents, adapter.grid(schedule, tuple(latents.shape)),
                   adapter.encode_prompts(captions, guidance))
        singles = [
            fn(adapter.denoiser(), latents[i:i + 1], adapter.grid(schedule, (1, *latents.shape[1:])),
               adapter.encode_prompts([captions[i]], guidance)).z
            for i in range(len(captions))
        ]
    return batch.z, torch.cat(singles)


def test_the_expected_outcomes_name_every_shipped_method() -> None:
    assert len(SHIPPED) >= 21
    for family, expected in EXPECTED.items():
        assert sorted(expected) == SHIPPED, family
    assert {name for name, want in EXPECTED["sd"].items() if want == FLOW_GRID} == set(FLOW_ONLY)


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_every_registered_method_is_batch_separable(family: str, request) -> None:
    """Batch of 2 (different latents and prompts) == each image alone, for every shipped method:
    per-image iterates and stopping rules. A method that is not must say so (``batch_separable``);
    one that does not apply must refuse with its reason. Each outcome is named in ``EXPECTED``."""
    adapter = request.getfixturevalue(f"tiny_{family}_adapter")
    schedule = ScheduleSpec(kind="ddim", num_steps=2) if family == "sd" else ScheduleSpec(kind="flow_euler", num_steps=2)
    guidance = 3.0 if family == "sd" else 1.0  # CFG on the UNet, so null-text and NPI apply too
    got: dict[str, str] = {}
    for name in SHIPPED:
        fn = _inverter(name)
        if not batch_separable(fn):
            got[name] = NOT_SEPARABLE
            continue
        try:
            z_batch, z_single = _single_and_batch(adapter, fn, schedule, guidance)
        except ValueError as err:  # the method does not apply to this family / guidance
            want = EXPECTED[family][name]
            got[name] = want if want not in (RUN, NOT_SEPARABLE) and want in str(err) else f"refused: {err}"
            continue
        torch.testing.assert_close(z_batch, z_single, rtol=1e-4, atol=1e-4, msg=f"{name}: batch != single")
        got[name] = RUN
    wrong = {name: (EXPECTED[family].get(name), outcome) for name, outcome in got.items()
             if outcome != EXPECTED[family].get(name)}
    assert not wrong, f"{family}: (expected, got) per method: {wrong}"
    assert sorted(got) == SHIPPED


def _world_rows(tiny_sd_adapter, batch_size: int, schedule: ScheduleSpec) -> pd.DataFrame:
    fn = instantiate(OmegaConf.load(CONF / "fixed_point3.yaml"), _convert_="all")
    return evaluate(tiny_sd_adapter, schedule, fn, "fixed_point3",
                    sample_dataset()[:3], build_metrics(["psnr"]), warmup=0, progress=False,
                    batch_size=batch_size, time_network=False)


@pytest.mark.parametrize("schedule", [ScheduleSpec(kind="ddim", num_steps=3),
                                      ScheduleSpec(kind="euler_ancestral", num_steps=3, spacing="trailing")],
                         ids=["ddim", "ancestral_stored_noise"])
def test_batch_rows_equal_batch_one(tiny_sd_adapter, schedule: ScheduleSpec) -> None:
    one = _world_rows(tiny_sd_adapter, 1, schedule)
    two = _world_rows(tiny_sd_adapter, 2, schedule)  # 3 images: a batch of 2, then a batch of 1
    timed = ("time_network_call_s", "time_network_backward_s", "overhead_ratio_bare")  # time_network=false
    for df in (one, two):
        assert (df[~df["metric"].isin(timed)]["status"] == "ok").all()
    assert set(one["batch_size"]) == {1} and set(two["batch_size"]) == {2}
    for metric, tol in (("psnr", 0.01), ("psnr_gap_to_vae", 0.01), ("nfe_forward", 0)):
        a = one[one["metric"] == metric].set_index("image")["value"]
        b = two[two["metric"] == metric].set_index("image")["value"]
        assert (a - b).abs().max() <= tol, metric
    per_image = two[two["metric"] == "time_invert_s"]["value"]
    assert (per_image > 0).all()


def test_a_broken_image_and_a_diverging_image_fail_alone(tmp_path: Path) -> None:
    entries = sample_dataset()[:3]
    broken = Entry(image_id="gone.png", path=tmp_path / "gone.png", caption="missing")
    calls = []

    def nan_in_second(denoiser, x0, grid, cond) -> InversionResult:
        calls.append(x0.shape[0])
        result = ddim.invert(denoiser, x0, grid, cond)
        z = result.z.clone()
        z[1] = math.nan
        return InversionResult(z, result.trajectory, result.steps)

    df = evaluate(ToyAdapter(), ScheduleSpec(num_steps=3), nan_in_second, "scripted", [entries[0], broken, *entries[1:]],
                  build_metrics(["psnr"]), warmup=0, progress=False, batch_size=4)
    assert calls == [3]  # the unreadable image never joins the batch
    status = df[df["metric"] == "psnr"].set_index("image")["status"]
    reason = df[df["metric"] == "psnr"].set_index("image")["reason"]
    assert status["gone.png"] == "skipped" and "cannot read image" in reason["gone.png"]
    assert status[entries[1].image_id] == "failed" and "non-finite latent" in reason[entries[1].image_id]
    assert status[entries[0].image_id] == "ok" and status[entries[2].image_id] == "ok"


def test_a_method_marked_not_separable_runs_image_by_image() -> None:
    shapes = []

    def one_at_a_time(denoiser, x0, grid, cond) -> InversionResult:
        shapes.append(x0.shape[0])
        return ddim.invert(denoiser, x0, grid, cond)

    one_at_a_time.batch_separable = False  # type: ignore[attr-defined]
    df = evaluate(ToyAdapter(), ScheduleSpec(num_steps=2), one_at_a_time, "scripted", sample_dataset()[:3],
                  build_metrics(["psnr"]), warmup=0, progress=False, batch_size=3)
    assert shapes == [1, 1, 1]
    assert set(df["batch_size"]) == {1} and (df[df["metric"] == "psnr"]["status"] == "ok").all()


REFUSALS = [
    (["batch_size=0"], "run.py: batch_size=0: must be an integer >= 1"),
    (["batch_size=2", "task=edit"], "run.py: batch_size=2: batches apply to task=reconstruct only (task=edit)"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """The runs of REFUSALS in one child process (tests/run_many.py: run.py's __main__ once per run, each with
    its own exit status and stderr): (their folder, exit codes)."""
    root = tmp_path_factory.mktemp("refusals")
    runs = [(str(i), ["model=sd15", f"model.pretrained={root / str(i) / 'absent'}", *overrides,
                      f"hydra.run.dir={root / str(i) / 'run'}"]) for i, (overrides, _) in enumerate(REFUSALS)]
    return root, run_in_one_process(runs, root / "logs", timeout=600)


@pytest.mark.parametrize("case", range(len(REFUSALS)))
def test_run_py_refuses_bad_batch_settings_before_loading(refused: tuple[Path, dict[str, int]], case: int) -> None:
    root, codes = refused
    stderr = (root / "logs" / f"{case}.err").read_text(encoding="utf-8")
    assert codes[str(case)] == 2 and stderr.strip() == REFUSALS[case][1]
