"""Shared fixtures: tiny random-weight adapters (session-scoped, built in code, offline).

The adapters wrap real diffusers pipelines (``adapter.pipe``). They are shared by every test
file: never mutate them; ``copy.deepcopy(adapter.pipe)`` first and wrap the copy with
``gnri.models.load_adapter(family, pipe)``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may touch the network
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: one thread per worker, or N workers fight over the cores
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

import pytest  # noqa: E402

from gnri.models.tiny import tiny_adapter  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd_adapter():
    """SD 1.x-shaped, epsilon prediction, DDIM scheduler (clip_sample off), 32 px / 16x16 latents."""
    return tiny_adapter("sd")


@pytest.fixture(scope="session")
def tiny_sd_v_adapter():
    """The same SD shape with v-prediction (as SD 2.x 768)."""
    return tiny_adapter("sd", prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_sdxl_adapter():
    """SDXL-shaped: two text encoders, text_time conditioning, Euler scheduler."""
    return tiny_adapter("sdxl")


@pytest.fixture(scope="session")
def tiny_flux_adapter():
    """FLUX.1-dev-shaped: guidance embedding (fed encode_prompts' guidance_scale), dynamic shift, packed 64 x 16 latents."""
    return tiny_adapter("flux")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files by how many of their tests are marked ``slow`` (end-to-end runs of seconds to minutes),
    most first; each file's tests together and in order (its module fixtures are built once). Under
    ``pytest -n N --dist loadfile --no-loadscope-reorder`` (scripts/test.sh) the workers start on the
    long files and end on short ones, instead of one worker starting a long file while the other has run
    out of work."""
    slow: dict[object, int] = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.path])  # a stable sort: file order among equals
