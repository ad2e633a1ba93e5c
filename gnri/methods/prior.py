"""GNRI's guidance prior (arXiv 2312.12540, Sec. 4.2, Eq. 9): the mean ``mu_t`` and weight of ``G``.

The paper anchors the root to the forward transition ``q(z_t | z_{t-1}) = N(gamma_t z_{t-1},
beta_t I)`` with ``G(z) = ||z - mu_t|| / beta_t`` (DDIM) or ``G(z) = ||z - mu_t||`` (Euler), and
defines neither ``gamma_t`` nor ``beta_t`` (``reference/gnri-paper-body.md`` 1.3). Here both are
derived from the two :class:`~gnri.core.Level` s alone, for every family
(``z = a x0 + s eps``):

- ``gamma_t = a_t / a_{t-1}``: the ratio of the marginal means. VP (``a^2 + s^2 = 1``):
  ``sqrt(alphabar_t / alphabar_{t-1})``, the effective transition over a skipped DDIM step.
  Flow (``a + s = 1``): ``(1 - sigma_t) / (1 - sigma_{t-1})``, the brief's ``flow_marginal``.
  In the VE coordinates ``z / a`` of an Euler scheduler it is the identity, ``mu = z_{t-1}``.
- ``beta_t = s_t^2 - gamma_t^2 s_{t-1}^2``: the variance of the Gaussian transition consistent
  with both marginals; for VP it reduces to ``1 - gamma_t^2``.

Choices (options of the inverter, never constants): ``prior_mean`` ``transition``
(``gamma_t z_{t-1}``) or ``identity`` (``z_{t-1}``); ``prior_weight`` ``inv_beta``
(``1 / beta_t``) or ``one``; ``auto`` picks the paper's case for the family: VP (DDIM) ->
``transition`` / ``inv_beta``; flow (Euler) -> ``identity`` / ``one`` (the choice of the fork
``tropylium/NewtonRaphsonInversion``; the paper's Euler ``mu_t`` is not known).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gnri.core import Level, Tensor
from gnri.methods.options import check_choice

PriorMean = Literal["auto", "transition", "identity"]
PriorWeight = Literal["auto", "inv_beta", "one"]


def transition(x_level: Level, z_level: Level) -> tuple[float, float]:
    """``(gamma_t, beta_t)`` of the Gaussian transition ``x_level -> z_level`` (see module doc)."""
    gamma = z_level.a / x_level.a
    beta = z_level.s**2 - gamma**2 * x_level.s**2
    return gamma, beta


@dataclass(frozen=True)
class GuidancePrior:
    """``mu_t = gamma * z_{t-1}`` and ``G(z) = weight * ||z - mu_t||`` (or its squared form)."""

    gamma: float
    weight: float

    def mean(self, x: Tensor) -> Tensor:
        return self.gamma * x


def guidance_prior(
    x_level: Level, z_level: Level, family: str, prior_mean: PriorMean = "auto", prior_weight: PriorWeight = "auto"
) -> GuidancePrior:
    """The prior of one inversion step ``x_level -> z_level`` for a ``vp`` or ``flow`` grid."""
    if family not in ("vp", "flow"):
        raise ValueError(f"gnri prior: family must be 'vp' or 'flow' here, got {family!r}")
    check_choice("gnri prior", "prior_mean", prior_mean, PriorMean)
    check_choice("gnri prior", "prior_weight", prior_weight, PriorWeight)
    mean = prior_mean if prior_mean != "auto" else ("transition" if family == "vp" else "identity")
    weight = prior_weight if prior_weight != "auto" else ("inv_beta" if family == "vp" else "one")
    gamma, beta = transition(x_level, z_level)
    if weight == "inv_beta" and beta <= 0.0:
        raise ValueError(f"gnri prior: transition variance beta_t={beta} <= 0 between {x_level} and {z_level}")
    return GuidancePrior(
        gamma=gamma if mean == "transition" else 1.0,
        weight=1.0 / beta if weight == "inv_beta" else 1.0,
    )
