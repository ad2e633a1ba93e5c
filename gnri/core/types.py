"""Core value types shared by every model adapter and every inverter.

Every supported model family is written as ``z = a(level) * x0 + s(level) * eps``:
VP/DDPM (SD, SDXL) has ``a = sqrt(alphabar)``, ``s = sqrt(1 - alphabar)``; rectified flow
(Flux) has ``a = 1 - sigma``, ``s = sigma``. Nothing here imports diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Protocol

import torch

Tensor = torch.Tensor
FAMILIES = ("vp", "flow")


@dataclass(frozen=True)
class Level:
    """One noise level.

    ``t`` is the value the network is conditioned on, in the adapter's own convention
    (a DDPM timestep index for SD/SDXL, sigma in [0, 1] for Flux). ``a`` and ``s`` are the
    signal and noise scales of ``z = a * x0 + s * eps``.
    """

    t: float
    a: float
    s: float


@dataclass(frozen=True)
class Grid:
    """Noise levels ordered clean -> noisy (inversion order).

    ``levels[0]`` is where the data latent sits (the sampler's final level); ``levels[-1]`` is
    where inversion ends. ``noises[i]``, when given, is the fixed noise the (deterministic
    ancestral) sampler adds when it steps from ``levels[i + 1]`` down to ``levels[i]``.
    ``family`` says which network output a step's implicit equation holds fixed: ``vp`` the
    noise prediction (DDIM, arXiv 2312.12540 Eq. 4), ``flow`` the velocity ``eps - x0`` (its
    Euler form); set by the adapter that built the grid.
    """

    levels: tuple[Level, ...]
    noises: tuple[Tensor, ...] | None = None
    family: Literal["vp", "flow"] = "vp"

    def __post_init__(self) -> None:
        if len(self.levels) < 2:
            raise ValueError(f"a grid needs at least 2 levels, got {len(self.levels)}")
        if self.family not in FAMILIES:
            raise ValueError(f"grid family must be one of {FAMILIES}, got {self.family!r}")
        if self.noises is not None and len(self.noises) != len(self.levels) - 1:
            raise ValueError(
                f"grid has {len(self.levels) - 1} steps but {len(self.noises)} stored noises"
            )

    @property
    def num_steps(self) -> int:
        return len(self.levels) - 1

    def noise(self, i: int) -> Tensor | None:
        """The stored noise of step ``i`` (levels[i+1] -> levels[i]), or None if deterministic."""
        return None if self.noises is None else self.noises[i]

    def truncate(self, strength: float) -> Grid:
        """Keep the ``round(strength * num_steps)`` cleanest steps (partial inversion, img2img)."""
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        keep = max(1, int(round(strength * self.num_steps)))
        noises = None if self.noises is None else self.noises[:keep]
        return Grid(self.levels[: keep + 1], noises, self.family)

    def with_noises(self, noises: tuple[Tensor, ...] | None) -> Grid:
        return replace(self, noises=noises)


@dataclass(frozen=True)
class Prediction:
    """Canonical network prediction at a level: ``a * x0 + s * eps == z`` (no clipping)."""

    x0: Tensor
    eps: Tensor


@dataclass(frozen=True)
class Conditioning:
    """Prompt conditioning, opaque to inverters except for its documented fields.

    ``positive`` and ``negative`` map the adapter's own keyword names to tensors (for SD:
    ``prompt_embeds``; SDXL adds ``text_embeds`` and ``time_ids``; Flux adds pooled and id
    tensors). With ``negative`` set and ``guidance_scale != 1`` the denoiser applies
    classifier-free guidance and costs two network forwards per call: ``guidance_scale`` is that
    weight between the branches (a UNet run's ``guidance_scale``; a FLUX run's ``true_cfg_scale``).
    A distilled guidance value the network itself takes (FLUX.1-dev's guidance embedding, the FLUX
    run's ``guidance_scale``) is an adapter keyword in ``positive`` (Flux: ``guidance``, one forward
    per call), not this field. Null-text inversion
    optimises the float tensors of ``negative``. ``guidance_distilled``: the model was distilled
    to sample without classifier-free guidance (SDXL-Turbo, FLUX.1 schnell/dev); inverters built
    on CFG refuse it, while editing may still apply a guidance scale (GNRI's SDXL-Turbo edits: 1.2).
    """

    positive: dict[str, Tensor]
    negative: dict[str, Tensor] | None = None
    guidance_scale: float = 1.0
    guidance_distilled: bool = False

    @property
    def uses_cfg(self) -> bool:
        return self.negative is not None and self.guidance_scale != 1.0

    def with_negative(self, negative: dict[str, Tensor]) -> Conditioning:
        return replace(self, negative=negative)

    def with_guidance(self, guidance_scale: float) -> Conditioning:
        return replace(self, guidance_scale=guidance_scale)


class Denoiser(Protocol):
    """A network wrapped to return the canonical prediction at any level.

    ``forwards_per_call(cond)`` is the number of network forward passes one call costs
    (2 with classifier-free guidance, else 1).
    """

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction: ...

    def forwards_per_call(self, cond: Conditioning) -> int: ...


@dataclass(frozen=True)
class StepInfo:
    """What an inner solver reports for one inversion step.

    ``iters`` is the number of inner iterations used; ``series`` holds per-iteration
    diagnostics (each a tuple of 0-d or (B,) tensors kept on the device), e.g. ``residual``,
    ``objective``, ``step_size``.
    """

    iters: int = 0
    series: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)


# A sampler override: (denoiser, grid, cond, z_T) -> latent at grid.levels[0].
Sampler = Callable[[Denoiser, Grid, Conditioning, Tensor], Tensor]


@dataclass(frozen=True)
class InversionResult:
    """Output of every inverter.

    ``z`` is the latent at ``grid.levels[-1]``; ``trajectory`` holds the latent at every level
    (``trajectory[0]`` is the input); ``steps`` one :class:`StepInfo` per inversion step.
    ``cond_per_step[i]``, when set, is the conditioning that reconstruction uses for step ``i``
    (null-text). ``sampler``, when set, replaces the shared sampler for reconstruction and
    editing (EDICT's coupled pair); ``pure_latent`` is False whenever either is set.
    ``extras`` holds method-specific tensors.
    """

    z: Tensor
    trajectory: tuple[Tensor, ...]
    steps: tuple[StepInfo, ...]
    cond_per_step: tuple[Conditioning, ...] | None = None
    sampler: Sampler | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def pure_latent(self) -> bool:
        return self.cond_per_step is None and self.sampler is None

    @property
    def iterations(self) -> list[int]:
        return [s.iters for s in self.steps]
