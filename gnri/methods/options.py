"""The word options of the GNRI family: each is a ``Literal`` alias, which ``eval.validate`` checks
before a model loads, and :func:`check_choice` checks the same values for a library call."""

from __future__ import annotations

from typing import Any, get_args


def check_choice(owner: str, name: str, value: Any, choices: Any) -> None:
    """Raise ``ValueError("<owner>: <name> must be one of (...), got <value>")`` unless ``value``
    is one of the ``Literal`` alias ``choices``."""
    options = get_args(choices)
    if value not in options:
        raise ValueError(f"{owner}: {name} must be one of {options}, got {value!r}")
