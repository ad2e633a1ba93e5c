"""Guided Newton-Raphson Inversion (GNRI) and the shared machinery of the inversion benchmark.

``gnri.invert(pipeline, image, prompt)`` is the library entry point (:mod:`gnri.api`);
``gnri.list_methods()`` names the inverters, ``gnri.load_inversion(path, pipeline)`` reads a saved one.
"""

from gnri.api import Inversion, invert, list_methods, load_inversion
from gnri.models.base import ScheduleSpec

__all__ = ["Inversion", "ScheduleSpec", "invert", "list_methods", "load_inversion"]
