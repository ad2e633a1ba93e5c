"""The library entry point on plain diffusers pipelines (tiny, offline)."""

from __future__ import annotations

import pytest
import torch

import gnri
from gnri.api import family_of, resolve_method
from gnri.models.tiny import tiny_pipeline


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 40, 48, generator=g)  # not the model's size: the one resize rule applies


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux"])
def test_invert_a_plain_pipeline_then_regenerate_and_edit(family: str, image: torch.Tensor) -> None:
    pipe = tiny_pipeline(family)
    assert family_of(pipe) == family
    inv = gnri.invert(pipe, image, "a red circle", method="ddim")  # the family's default schedule
    rec = inv.regenerate()
    assert rec.shape == (1, 3, *inv.adapter.image_size()) and 0 <= rec.min() and rec.max() <= 1
    again = inv.regenerate("a red circle")
    assert torch.equal(rec, again)  # the same prompt reproduces the reconstruction exactly
    edit = inv.regenerate("a blue square")
    assert not torch.equal(rec, edit)


def test_method_by_name_or_callable_and_hyperparameters_reach_it(image: torch.Tensor) -> None:
    """Names resolve in gnri.methods then baselines; hyperparameters go to the inverter."""
    from baselines import fixed_point

    pipe = tiny_pipeline("sd")
    schedule = gnri.ScheduleSpec("ddim", 4, "leading")
    by_name = gnri.invert(pipe, image, "a red circle", method="fixed_point", schedule=schedule, max_iters=3)
    by_callable = gnri.invert(pipe, image, "a red circle", method=fixed_point.invert, schedule=schedule, max_iters=3)
    assert by_name.result.iterations == [3, 3, 3, 3]
    assert torch.equal(by_name.z, by_callable.z)
    official = gnri.invert(pipe, image, "a red circle", method="gnri_official", schedule=schedule)
    assert official.result.iterations == [2, 2, 2, 2]


def test_unknown_method_and_pipeline_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        resolve_method("nope")
    with pytest.raises(ValueError, match="unsupported pipeline class"):
        family_of(object())
