"""Prompt-to-Prompt's attention processor, kept importable here; it lives on the model side now.

:class:`P2PAttnProcessor` and :func:`place_in_unet` are :mod:`gnri.models.processors`'; an adapter
makes the processor (:meth:`gnri.models.base.ModelAdapter.probability_processor`) and installs it
(:meth:`~gnri.models.base.ModelAdapter.attention_processors`). :func:`attention_control` does both
on a bare UNet module.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from gnri.models.processors import PLACES, Controller, P2PAttnProcessor, install_processors, place_in_unet


@contextlib.contextmanager
def attention_control(unet: Any, controller: Controller) -> Iterator[None]:
    """Route every attention layer of ``unet`` through ``controller`` inside the block."""
    with install_processors(unet, lambda name, _: P2PAttnProcessor(controller, place_in_unet(name))):
        yield


__all__ = ["PLACES", "Controller", "P2PAttnProcessor", "attention_control", "place_in_unet"]
