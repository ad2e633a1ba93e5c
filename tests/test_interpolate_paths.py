"""Interpolation paths and per-path measures against hand-computed oracles: slerp and linear points,
the chi log-density and NAO's objective, NAO's path norms (the Gaussian shell), the norm deviation,
and the world checker's valid-scene fraction on a toy set of images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval.metrics.interp import NOT_WORLD, valid_fraction, valid_scene, world_reason
from eval.world.generator import RGB, render, scene
from gnri.edit.interpolate import slerp
from gnri.edit.paths import at_fraction, linear, log_chi, make_path, nao_objective, norm_deviation


def test_slerp_of_orthogonal_unit_vectors_by_hand() -> None:
    e1, e2 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    h = 1.0 / math.sqrt(2.0)
    torch.testing.assert_close(slerp(e1, e2, 0.5), torch.tensor([[h, h, 0.0]]))  # 45 degrees on the unit circle
    s3 = math.sqrt(3.0) / 2.0
    torch.testing.assert_close(slerp(e1, e2, 1.0 / 3.0), torch.tensor([[s3, 0.5, 0.0]]))  # 30 degrees
    torch.testing.assert_close(make_path("slerp")(e1, e2, 0.5), torch.tensor([[h, h, 0.0]]))


def test_linear_by_hand() -> None:
    z0, z1 = torch.tensor([[0.0, 4.0]]), torch.tensor([[2.0, 0.0]])
    torch.testing.assert_close(linear(z0, z1, 0.25), torch.tensor([[0.5, 3.0]]))
    torch.testing.assert_close(make_path("linear")(z0, z1, 0.5), torch.tensor([[1.0, 2.0]]))
    assert torch.equal(linear(z0, z1, 0.0), z0) and torch.equal(linear(z0, z1, 1.0), z1)


def test_log_chi_and_nao_objective_by_hand() -> None:
    r = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    # d = 1: the half-normal, log(2 / sqrt(2 pi)) - r^2 / 2; d = 2: the Rayleigh, log r - r^2 / 2
    torch.testing.assert_close(log_chi(1, r), math.log(2.0 / math.sqrt(2.0 * math.pi)) - r * r / 2)
    torch.testing.assert_close(log_chi(2, r), torch.log(r) - r * r / 2)
    # one unit segment from (1, 0) to (1, 1): midpoint norm sqrt(1.25); with eps = 0.5 the penalty is 0.5
    integral, penalty = nao_objective(torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64), 2, 0.5)
    assert integral.item() == pytest.approx(0.5 * math.log(1.25) - 0.625)
    assert penalty.item() == pytest.approx(0.5)
    torch.testing.assert_close(at_fraction(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]), 0.75),
                               torch.tensor([1.0, 0.5]))


def test_nao_path_norms_follow_the_shell() -> None:
    d = 64
    shell = math.sqrt(d - 1)  # the chi distribution's mode: NAO's path seeks it
    z0, z1 = torch.zeros(1, d), torch.zeros(1, d)
    z0[0, 0], z1[0, 1] = shell, shell
    nao = make_path("nao")
    assert torch.equal(nao(z0, z1, 0.0), z0) and torch.equal(nao(z0, z1, 1.0), z1)
    for w in (0.25, 0.5, 0.75):
        # ends on the shell, orthogonal: the path stays on it (the chord's midpoint is shell / sqrt(2))
        assert nao(z0, z1, w).norm().item() == pytest.approx(shell, rel=0.01)
        assert linear(z0, z1, 0.5).norm().item() == pytest.approx(shell / math.sqrt(2.0))
    # ends inside the shell (0.6 of its radius): slerp keeps the radius, NAO's midpoint climbs towards the shell
    inner0, inner1 = 0.6 * z0, 0.6 * z1
    mid_nao = nao(inner0, inner1, 0.5).norm().item()
    assert slerp(inner0, inner1, 0.5).norm().item() == pytest.approx(0.6 * shell)
    assert abs(mid_nao - shell) < 0.5 * abs(0.6 * shell - shell), mid_nao
    # the interpolant lies in the plane of the two ends
    assert nao(inner0, inner1, 0.5)[0, 2:].abs().max().item() < 1e-6


def test_norm_deviation_by_hand() -> None:
    z = torch.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    # |z| = 4, 2, 1 with sqrt(d) = 2: | |z| / 2 - 1 | = 1, 0, 0.5
    torch.testing.assert_close(norm_deviation(z), torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64))


def _square(image: np.ndarray, top: int, left: int, side: int, rgb: tuple[int, int, int]) -> None:
    image[top:top + side, left:left + side] = rgb


def test_valid_fraction_on_toy_images() -> None:
    world = render(scene("heldout", 0))[0]  # a world render: one object, every attribute named
    blank = np.zeros((64, 64, 3), np.uint8) + np.asarray(RGB["blue"], np.uint8)  # no object
    two = blank.copy()
    _square(two, 4, 4, 14, RGB["red"])
    _square(two, 44, 44, 14, RGB["red"])  # two objects
    grey = blank.copy()
    _square(grey, 24, 24, 16, (128, 128, 128))  # one object, colour outside the palette
    one = blank.copy()
    _square(one, 24, 24, 16, RGB["red"])  # one red square: valid
    assert [valid_scene(x) for x in (world, blank, two, grey, one)] == [True, False, False, False, True]
    frames = torch.from_numpy(np.stack([world, blank, two, grey, one])).permute(0, 3, 1, 2).float() / 255.0
    assert valid_fraction(frames) == pytest.approx(2 / 5)
    assert world_reason(["a red circle", "a blue square on a white background"]) is None
    assert world_reason(["a red circle", "a photo of a cat"]) == NOT_WORLD


def test_unknown_path_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="task.path must be one of"):
        make_path("cubic")
    with pytest.raises(ValueError, match="task.nao options apply to path=nao only"):
        make_path("slerp", steps=3)


def test_run_py_refuses_an_unknown_path_in_one_line(tmp_path):
    """A wrong ``task.path`` stops run.py with one line naming the option, before any model loads."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "run.py", "task=interpolate", "task.path=cubic", f"hydra.run.dir={tmp_path}"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["run.py: task.path must be one of ('slerp', 'linear', 'nao'), got 'cubic'"], lines
