"""Plug-ins written the way outside authors write them: options after the four inputs as
positional-or-keyword parameters, ``**kwargs``, a callable object, and a wrong return type."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from eval import validate
from eval.finite import checked_result
from gnri import catalog

MODULE = textwrap.dedent('''
    def positional(denoiser, x0, grid, cond, scale: float = 1.0):
        return None

    def open_kwargs(denoiser, x0, grid, cond, *, k: int = 2, **extra):
        return None

    class _Solver:
        def __call__(self, denoiser, x0, grid, cond, *, k: int = 2):
            return None

    solver = _Solver()
''')


@pytest.fixture()
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "outside_plugin.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "outside_plugin"


def test_a_positional_option_after_the_inputs_is_an_option(plugin_module: str) -> None:
    target = f"{plugin_module}.positional"
    assert catalog.signature_defaults(catalog.resolve(target)) == {"scale": 1.0}
    validate.check_inverter("positional", target, {"scale": 2.0})
    with pytest.raises(validate.ConfigError, match=r"inverter.scale='x' must be a number"):
        validate.check_inverter("positional", target, {"scale": "x"})


def test_kwargs_take_any_option_and_named_ones_keep_their_types(plugin_module: str) -> None:
    target = f"{plugin_module}.open_kwargs"
    validate.check_inverter("open_kwargs", target, {"anything": 3, "k": 4})
    with pytest.raises(validate.ConfigError, match=r"inverter.k='x' must be an integer"):
        validate.check_inverter("open_kwargs", target, {"k": "x"})


def test_a_callable_object_has_its_call_checked(plugin_module: str) -> None:
    target = f"{plugin_module}.solver"
    assert catalog.signature_defaults(catalog.resolve(target)) == {"k": 2}
    with pytest.raises(validate.ConfigError, match=r"inverter.k='x' must be an integer"):
        validate.check_inverter("solver", target, {"k": "x"})
    with pytest.raises(validate.ConfigError, match=r"unknown option inverter.kk"):
        validate.check_inverter("solver", target, {"kk": 1})


def test_a_result_that_is_not_an_inversion_result_is_a_clear_failure() -> None:
    with pytest.raises(TypeError, match=r"returned a Tensor, not a gnri.core.InversionResult"):
        checked_result(torch.zeros(1))
