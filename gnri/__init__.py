"""Guided Newton-Raphson Inversion (GNRI) and the shared machinery of the inversion benchmark.

``gnri.invert(pipeline, image, prompt)`` is the library entry point (:mod:`gnri.api`).
"""

from gnri.api import Inversion, invert
from gnri.models.base import ScheduleSpec

__all__ = ["Inversion", "ScheduleSpec", "invert"]
