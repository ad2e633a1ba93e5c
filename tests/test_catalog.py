"""The method catalog (gnri.catalog): one resolver, declared metadata, and the fair columns the
harness derives from them (kept_latents, exact_by_construction) on gnri.toy's analytic denoisers."""

from __future__ import annotations

import functools

import pytest
import torch

from eval import validate
from eval.metrics.latent import kept_latents
from gnri import catalog
from gnri.core import Conditioning, reconstruct
from gnri.toy import GaussianDenoiser, flow_grid, vp_grid

STEPS = 4
X0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
COND = Conditioning({"shift": torch.full((2, 4, 8, 8), 0.1, dtype=torch.float64)},
                    {"shift": torch.zeros(2, 4, 8, 8, dtype=torch.float64)}, guidance_scale=2.0)
SMALL = {"max_iters": 2, "num_inner_steps": 2, "n_iters": 2}
# What each method keeps, in latents, at STEPS steps (the methods not named keep 1 latent).
KEPT = {"edict": 2.0, "edit_friendly": 1.0 + STEPS, "null_text": 1.0 + STEPS, "ftedit": 1.0 + STEPS + 1,
        "rf_inversion": 2.0}


def test_resolve_takes_dotted_and_entry_point_forms() -> None:
    from baselines import fixed_point

    assert catalog.resolve("baselines.fixed_point.invert") is fixed_point.invert
    assert catalog.resolve("baselines.fixed_point:invert") is fixed_point.invert
    assert catalog.resolve("baselines.fixed_point:fixed_point3.func") is fixed_point.invert
    assert validate.locate("baselines.fixed_point:invert") is fixed_point.invert  # one resolver everywhere
    with pytest.raises(ModuleNotFoundError):
        catalog.resolve("no_such_pkg.mod.invert")
    with pytest.raises(AttributeError):
        catalog.resolve("baselines.fixed_point.nope")


def test_inverter_info_declares_and_legacy_attributes_still_read() -> None:
    @catalog.inverter_info(families=("flow",), tasks=("edit",), task_note="why", exact_reconstruction=True,
                           keeps="2 latents")
    def inv(denoiser, x0, grid, cond, *, k: int = 1):  # noqa: ANN001, ANN202
        return None

    info = catalog.info_of(functools.partial(inv, k=2))
    assert (info.families, info.tasks, info.exact_reconstruction, info.keeps) == (("flow",), ("edit",), True, "2 latents")
    assert validate.family_refusal(inv, "vp") == "does not apply to the vp family (it runs on flow models)"
    assert validate.family_refusal(inv, "flow") is None and validate.family_refusal(inv, None) is None
    assert validate.task_refusal(inv, "reconstruct") == "why; task=reconstruct does not apply (it runs for task=edit)"

    def legacy(denoiser, x0, grid, cond):  # noqa: ANN001, ANN202
        return None

    legacy.batch_separable = False  # type: ignore[attr-defined]
    assert catalog.info_of(legacy).batch_separable is False and catalog.info_of(legacy).families == ("vp", "flow")
    with pytest.raises(ValueError, match="families must be among"):
        catalog.inverter_info(families=("ve",))


def test_shipped_metadata() -> None:
    methods = catalog.methods()
    flow_only = sorted(n for n, m in methods.items() if m.info().families == ("flow",))
    assert flow_only == ["fireflow", "flowedit", "ftedit", "rf_inversion", "rf_solver", "uni_inv"]
    exact = sorted(n for n, m in methods.items() if m.info().exact_reconstruction)
    assert exact == ["edict", "edit_friendly", "ftedit"]
    assert methods["flowedit"].info().tasks == ("edit",)
    assert all(m.info().batch_separable for m in methods.values())
    undeclared = [n for n, m in methods.items() if not isinstance(getattr(m.function(), "inverter_info", None),
                                                                  catalog.InverterInfo)]
    assert not undeclared, f"shipped inverters without @inverter_info: {undeclared}"


@pytest.mark.parametrize("name", sorted(catalog.methods()))
def test_kept_latents_and_exactness_match_what_reconstruction_replays(name: str) -> None:
    """kept_latents counts the latent, the sampler's bound tensors and per-step embeddings (the
    prompt not); a method declared exact reconstructs the latent to round-off, on the toy."""
    entry = catalog.method(name)
    flow = entry.info().families == ("flow",)
    grid = flow_grid(STEPS) if flow else vp_grid(STEPS)
    den = GaussianDenoiser(0.2, 0.8)
    options = {k: v for k, v in SMALL.items() if k in entry.defaults()}
    result = entry.load()(den, X0, grid, COND, **options)
    assert kept_latents(result, COND) == KEPT.get(name, 1.0), name
    if entry.info().exact_reconstruction:
        assert (reconstruct(den, result, grid, COND) - X0).abs().max() < 1e-6, name
