"""The library entry point: invert an image for a plain diffusers pipeline, then regenerate or edit.

No Hydra, no harness::

    import gnri
    from gnri.models import load_pipeline

    pipe = load_pipeline("stabilityai/sdxl-turbo")  # diffusers' AutoPipelineForText2Image, safetensors only
    inv = gnri.invert(pipe, "cat.png", "a photo of a cat", method="gnri", schedule="euler4_trailing")
    same = inv.regenerate()                                  # (1, 3, H, W) in [0, 1]
    edit = inv.regenerate("a photo of a dog", guidance_scale=1.2)
    inv.metrics()                                            # PSNR, VAE ceiling, NFE per image
    inv.save("cat.safetensors")                              # later: gnri.load_inversion(path, pipe)

``method`` is a name of the method catalog (:func:`list_methods`: the shipped methods, the same
names and defaults as the harness's ``inverter`` group, and any installed plug-in's entry point in
group ``gnri_bench.inverters``; keyword arguments override the defaults) or any callable with the
inverter signature;
``schedule`` a name of ``conf/schedule`` or a :class:`ScheduleSpec`.

Guidance takes the command line's two switches, meaning what the model's diffusers pipeline
means (:func:`gnri.models.base.guidance_error`): ``guidance_scale`` is classifier-free guidance
on SD/SDXL (SDXL-Turbo included: > 1 is on, two network calls per step) and the guidance
embedding's input on FLUX.1-dev (one call; FLUX.1-schnell has no embedding and takes only 1);
``true_cfg_scale > 1`` is FLUX's true classifier-free guidance with ``negative_prompt``
(``""`` unless given; two calls per step). A scale the model cannot use is a one-line ValueError::

    inv = gnri.invert(flux_dev, "cat.png", "a cat", guidance_scale=3.5)          # embedding, 1 call/step
    inv = gnri.invert(flux_dev, "cat.png", "a cat", true_cfg_scale=2.0, negative_prompt="")  # true CFG
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import torch
from PIL import Image

from gnri.core import (
    Conditioning, CountingDenoiser, Grid, InversionResult, Level, NFECounter, Prediction, StepInfo, Tensor, reconstruct,
)
from gnri.images import fit_to_size, load_image, to_rgb_tensor
from gnri.models.base import ModelAdapter, ScheduleSpec
from gnri.models.families import PIPELINE_PREFIXES, TABLE, library_schedule_name, prefix_family
from gnri import catalog, quality
from gnri.catalog import method_entry, resolve
from gnri.registry import schedule_fields

PIPELINE_FAMILIES = PIPELINE_PREFIXES  # pipeline class-name prefix -> loader family (gnri.models.families)
FORMAT = "gnri-inversion/1"  # the safetensors metadata key and version of Inversion.save
OneImage = Union[str, Path, Image.Image, Tensor]
ProgressCallback = Callable[[int, int], None]  # (levels reached, total steps)


def family_of(pipeline: Any) -> str:
    """``sd``, ``sdxl`` or ``flux`` from a diffusers pipeline's class name."""
    name = type(pipeline).__name__
    family = prefix_family(name)
    if family is None:
        supported = ", ".join(f"{f.class_prefix}*" for f in TABLE.values())
        raise ValueError(f"gnri.invert: unsupported pipeline class {name}; supported: {supported}")
    return family


def as_adapter(model: Any, **options: Any) -> ModelAdapter:
    """An adapter as is, or one wrapping a diffusers pipeline object."""
    if hasattr(model, "denoiser") and hasattr(model, "grid"):
        return model
    from gnri.models import load_adapter

    return load_adapter(family_of(model), model, **options)


@dataclass(frozen=True)
class MethodSummary:
    """One row of :func:`list_methods`: where a method comes from and what it declares."""

    doc: str  # the first line of its inverter's docstring
    origin: str  # shipped | entry point of <distribution> | config folder <dir>
    target: str
    families: tuple[str, ...] = ()
    exact_reconstruction: bool = False
    keeps: str = ""


def list_methods(show: bool = False, config_dirs: Sequence[str | Path] = ()) -> dict[str, MethodSummary]:
    """Every method name (shipped, installed plug-ins, and ``config_dirs``' ``inverter/*.yaml``) ->
    its :class:`MethodSummary`, sorted by name. With ``show`` also prints them, one per line."""
    out: dict[str, MethodSummary] = {}
    for name, entry in catalog.methods(config_dirs).items():
        try:
            info = entry.info()
            out[name] = MethodSummary(entry.doc(), entry.origin, entry.target, info.families,
                                      info.exact_reconstruction, info.keeps)
        except catalog.CatalogError as err:  # a broken plug-in is listed with why, not hidden
            out[name] = MethodSummary(str(err), entry.origin, entry.target)
    if show:
        width = max(map(len, out))
        origin = max(len(s.origin) for s in out.values())
        print("\n".join(f"{name:<{width}}  {s.origin:<{origin}}  {s.doc}" for name, s in out.items()))
    return out


def resolve_method(method: str | Callable[..., InversionResult]) -> Callable[..., InversionResult]:
    """An inverter by config name with that config's hyperparameters bound (overridable), or the callable itself.

    Raises ValueError naming the valid names for an unknown name.
    """
    if callable(method):
        return method
    if not isinstance(method, str):
        raise ValueError(f"gnri.invert: method must be a name or a callable, got {type(method).__name__}")
    fn, defaults = method_entry(method)
    return functools.partial(fn, **defaults)


def check_hyperparameters(name: str, fn: Callable[..., Any], hyperparameters: dict[str, Any]) -> None:
    """Raise a one-line ValueError naming the method's hyperparameters if a keyword is not one of them."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise ValueError(f"gnri.invert: method {name!r} has no hyperparameter {unknown[0]!r}; "
                         f"its hyperparameters: {', '.join(known) or 'none'}")


def resolve_schedule(schedule: ScheduleSpec | str) -> ScheduleSpec:
    """A :class:`ScheduleSpec` as is, or the one a ``conf/schedule`` name describes."""
    if isinstance(schedule, ScheduleSpec):
        return schedule
    if not isinstance(schedule, str):
        raise ValueError(f"gnri.invert: schedule must be a name or a ScheduleSpec, got {type(schedule).__name__}")
    return ScheduleSpec(**schedule_fields(schedule))


def image_tensor(image: OneImage | Sequence[OneImage], size: tuple[int, int]) -> Tensor:
    """A path, PIL image, (3, H, W)/(B, 3, H, W) tensor in [0, 1], or a list of them -> (B, 3, *size).

    Every image is fitted to ``size`` on its own (cover, then center-crop), so sizes may differ.
    """
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("gnri.invert: image is an empty list")
        return torch.cat([image_tensor(one, size) for one in image])
    if isinstance(image, (str, Path)):
        image = load_image(image)
    elif isinstance(image, Image.Image):
        image = to_rgb_tensor(image)
    batch = image if image.dim() == 4 else image[None]
    return torch.stack([fit_to_size(one, size) for one in batch])


def psnr(pred: Tensor, target: Tensor) -> list[float]:
    """Per-image PSNR (dB) of (B, 3, H, W) images in [0, 1] (MSE over each image, never pooled): the
    project's one PSNR, :func:`gnri.quality.psnr`, as a list."""
    return quality.psnr(pred, target.to(pred.device)).tolist()


@dataclass
class ProgressDenoiser:
    """Wraps a denoiser and reports the index of each grid level it is evaluated at (for a progress bar).

    Only the outer loop's levels count; ``report(k)`` gets ``k`` in ``1..grid.num_steps``.
    """

    inner: Any
    levels: dict[Level, int]
    report: Callable[[int], None]

    def forwards_per_call(self, cond: Conditioning) -> int:
        return self.inner.forwards_per_call(cond)

    def __call__(self, z: Tensor, level: Level, cond: Conditioning) -> Prediction:
        k = self.levels.get(level)
        if k:
            self.report(k)
        return self.inner(z, level, cond)


class _Bar:
    """A monotone progress reporter over the grid's steps: a tqdm bar and/or a user callback."""

    def __init__(self, total: int, progress: bool | ProgressCallback, desc: str) -> None:
        self.total, self.done = total, 0
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step")

    def __call__(self, k: int) -> None:
        if k <= self.done:
            return
        if self.bar is not None:
            self.bar.update(k - self.done)
        self.done = k
        if self.callback is not None:
            self.callback(k, self.total)

    def close(self) -> None:
        self(self.total)
        if self.bar is not None:
            self.bar.close()


@dataclass(repr=False)
class Inversion:
    """An inverted image (or batch): the latent, and everything needed to regenerate, edit, measure or save it."""

    adapter: ModelAdapter
    grid: Grid
    cond: Conditioning
    result: InversionResult
    latent: Tensor  # the encoded images, at grid.levels[0]
    prompts: list[str]  # the source prompts, one per image
    pixels: Tensor | None = None  # the source images fitted to the model's size, (B, 3, H, W) in [0, 1]
    method: str = "custom"  # the method's name, or the dotted path of a callable
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # those the method ran with (defaults included)
    schedule: ScheduleSpec | None = None
    negative_prompts: list[str] | None = None
    nfe: NFECounter = field(default_factory=NFECounter)  # network passes of the inversion (the whole batch)
    guidance_scale: float | None = None  # the run's guidance_scale (None: the conditioning's scale)
    true_cfg_scale: float = 1.0  # the run's true_cfg_scale (FLUX's true classifier-free guidance)

    @property
    def guidance(self) -> dict[str, float]:
        """The guidance the inversion ran with, as :func:`invert` took it."""
        scale = self.cond.guidance_scale if self.guidance_scale is None else self.guidance_scale
        return {"guidance_scale": float(scale), "true_cfg_scale": float(self.true_cfg_scale)}

    @property
    def z(self) -> Tensor:
        """The inverted latent at the grid's noisiest level."""
        return self.result.z

    def __repr__(self) -> str:
        prompt = repr(self.prompts[0]) + (f" (+{len(self.prompts) - 1} more)" if len(self.prompts) > 1 else "")
        steps = f"{self.schedule.kind} {self.schedule.num_steps}" if self.schedule else f"{self.grid.num_steps} steps"
        return (f"Inversion(method={self.method!r}, model={getattr(self.adapter, 'name', '?')!r}, images={len(self.prompts)}, "
                f"schedule='{steps}', prompt={prompt}, guidance={self.guidance['guidance_scale']:g}, "
                + (f"true_cfg={self.true_cfg_scale:g}, " if self.true_cfg_scale != 1 else "") +
                f"z={tuple(self.z.shape)}, nfe={self.nfe.forward}+{self.nfe.backward}vjp)")

    @torch.no_grad()
    def regenerate(
        self, prompt: str | list[str] | None = None, guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None, true_cfg_scale: float | None = None,
    ) -> Tensor:
        """Sample from the inverted latent: the source prompt reconstructs, another one edits.

        ``guidance_scale`` / ``true_cfg_scale`` (None: the inversion's) as in :func:`invert`. Uses
        the method's own sampler or per-step conditioning when it has them (EDICT, null-text).
        Returns images (B, 3, H, W) in [0, 1].
        """
        cond = self.cond
        if any(v is not None for v in (prompt, guidance_scale, negative_prompt, true_cfg_scale)):
            scales = dict(self.guidance)
            scales.update({k: v for k, v in (("guidance_scale", guidance_scale), ("true_cfg_scale", true_cfg_scale))
                           if v is not None})
            prompts = self.prompts if prompt is None else _as_list(prompt, self.latent.shape[0])
            negatives = None if negative_prompt is None else _as_list(negative_prompt, len(prompts))
            cond = self.adapter.encode_prompts(prompts, scales["guidance_scale"], negatives, **_true_cfg(scales))
        return self.adapter.decode_latents(reconstruct(self.adapter.denoiser(), self.result, self.grid, cond))

    @torch.no_grad()
    def metrics(self) -> list[dict[str, float]]:
        """One dict per image: ``psnr`` of the reconstruction, ``psnr_vae_ceiling`` (decode(encode(x))),
        ``psnr_gap_to_vae``, and ``nfe_forward`` / ``nfe_backward`` of the inversion call (counted
        outside the inverter, for the whole batch; classifier-free guidance counts 2)."""
        if self.pixels is None:
            raise ValueError("Inversion.metrics: no source pixels kept (an Inversion built by hand); pass pixels=")
        recon = psnr(self.regenerate(), self.pixels)
        ceiling = psnr(self.adapter.decode_latents(self.latent), self.pixels)
        return [{"psnr": p, "psnr_vae_ceiling": c, "psnr_gap_to_vae": c - p,
                 "nfe_forward": float(self.nfe.forward), "nfe_backward": float(self.nfe.backward)}
                for p, c in zip(recon, ceiling)]

    def save(self, path: str | Path) -> Path:
        """Write the latent, its trajectory, the source pixels and the settings (method, hyperparameters,
        schedule, prompts, guidance, NFE) to a safetensors file; :func:`load_inversion` reads it back.

        Null-text's per-step conditioning and a sampler that is a ``functools.partial`` of a module
        function with tensor or JSON keywords (EDICT) round-trip; any other extra state is refused.
        """
        tensors = {"z": self.z, "latent": self.latent}
        tensors.update({f"trajectory.{i}": t for i, t in enumerate(self.result.trajectory)})
        if self.pixels is not None:
            tensors["pixels"] = self.pixels
        meta: dict[str, Any] = {
            "format": FORMAT, "method": self.method, "hyperparameters": self.hyperparameters,
            "schedule": asdict(self.schedule) if self.schedule else None, "prompts": self.prompts,
            "negative_prompts": self.negative_prompts, **self.guidance,
            "model": getattr(self.adapter, "name", None), "iterations": self.result.iterations,
            "nfe": {"forward": self.nfe.forward, "backward": self.nfe.backward},
        }
        if self.schedule is None:
            raise ValueError("Inversion.save: no schedule recorded (an Inversion built by hand); set schedule=")
        if self.result.cond_per_step is not None:
            meta["cond_per_step"] = [c.guidance_scale for c in self.result.cond_per_step]
            for i, c in enumerate(self.result.cond_per_step):
                if c.negative is None:
                    raise ValueError(f"Inversion.save: method {self.method!r} has a per-step conditioning without a negative branch (step {i}); cannot be saved")
                tensors.update({f"cond_per_step.{i}.{k}": v for k, v in c.negative.items()})
        if self.result.sampler is not None:
            meta["sampler"] = _sampler_spec(self.result.sampler, self.method, tensors)
        try:
            text = json.dumps(meta)
        except TypeError as err:
            raise ValueError(f"Inversion.save: hyperparameters of {self.method!r} are not JSON ({err})") from None
        from safetensors.torch import save_file

        path = Path(path)
        save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(path), metadata={FORMAT: text})
        return path


def _sampler_spec(sampler: Any, method: str, tensors: dict[str, Tensor]) -> dict[str, Any]:
    """The saveable description of a partial-of-a-module-function sampler; tensor keywords go to ``tensors``."""
    func = getattr(sampler, "func", None)
    if not isinstance(sampler, functools.partial) or sampler.args or getattr(func, "__qualname__", "<").count("<"):
        raise ValueError(f"Inversion.save: method {method!r} keeps its sampler as a {type(sampler).__name__}, "
                         "which cannot be saved; keep the Inversion in memory")
    spec: dict[str, Any] = {"target": f"{func.__module__}.{func.__qualname__}", "keywords": {}, "tensors": []}
    for k, v in sampler.keywords.items():
        if isinstance(v, Tensor):
            tensors[f"sampler.{k}"] = v
            spec["tensors"].append(k)
        else:
            spec["keywords"][k] = v
    return spec


def load_inversion(path: str | Path, model: Any, adapter_options: dict[str, Any] | None = None) -> Inversion:
    """Read an :meth:`Inversion.save` file for ``model`` (the same pipeline or adapter that inverted it).

    Rebuilds the grid from the saved schedule and the conditioning from the saved prompts and
    guidance, so :meth:`Inversion.regenerate` and editing work without inverting again.
    """
    from safetensors import safe_open

    adapter = as_adapter(model, **(adapter_options or {}))
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(FORMAT)
        if raw is None:
            raise ValueError(f"gnri.load_inversion: {path} is not a gnri inversion file (no {FORMAT!r} metadata)")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(raw)
    if meta.get("model") not in (None, getattr(adapter, "name", None)):
        warnings.warn(f"gnri.load_inversion: saved for model {meta['model']!r}, loading into {adapter.name!r}")
    schedule = ScheduleSpec(**meta["schedule"])
    prompts, negatives = meta["prompts"], meta["negative_prompts"]
    scales = {"guidance_scale": meta["guidance_scale"], "true_cfg_scale": meta.get("true_cfg_scale", 1.0)}
    cond = adapter.encode_prompts(prompts, scales["guidance_scale"], negatives, **_true_cfg(scales))
    device = next(iter(cond.positive.values())).device
    tensors = {k: v.to(device) for k, v in tensors.items()}
    latent = tensors["latent"]
    grid = adapter.grid(schedule, tuple(latent.shape))
    trajectory = tuple(tensors[f"trajectory.{i}"] for i in range(grid.num_steps + 1))
    per_step = None
    if "cond_per_step" in meta:
        per_step = tuple(
            Conditioning(cond.positive, {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"cond_per_step.{i}.")},
                         scale, cond.guidance_distilled)
            for i, scale in enumerate(meta["cond_per_step"]))
    sampler = None
    if "sampler" in meta:
        spec = meta["sampler"]
        sampler = functools.partial(resolve(spec["target"]), **spec["keywords"],
                                    **{k: tensors[f"sampler.{k}"] for k in spec["tensors"]})
    result = InversionResult(z=tensors["z"], trajectory=trajectory, steps=tuple(StepInfo(iters=n) for n in meta["iterations"]),
                             cond_per_step=per_step, sampler=sampler)
    nfe = NFECounter(**meta["nfe"])
    return Inversion(adapter, grid, cond, result, latent, prompts, tensors.get("pixels"), meta["method"],
                     meta["hyperparameters"], schedule, negatives, nfe, **scales)


def _true_cfg(scales: dict[str, float]) -> dict[str, float]:
    """``true_cfg_scale`` as a keyword only when it is on (an adapter without the keyword takes the rest)."""
    return {"true_cfg_scale": scales["true_cfg_scale"]} if scales["true_cfg_scale"] != 1 else {}


def _as_list(prompt: str | list[str], batch: int) -> list[str]:
    return [prompt] * batch if isinstance(prompt, str) else list(prompt)


def _method_name(method: str | Callable[..., Any]) -> str:
    if isinstance(method, str):
        return method
    func = getattr(method, "func", method)
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', type(func).__name__)}"


@torch.no_grad()
def invert(
    model: Any,
    image: OneImage | Sequence[OneImage],
    prompt: str | list[str],
    *,
    method: str | Callable[..., InversionResult] = "gnri",
    schedule: ScheduleSpec | str | None = None,
    guidance_scale: float = 1.0,
    true_cfg_scale: float = 1.0,
    negative_prompt: str | list[str] | None = None,
    progress: bool | ProgressCallback = True,
    adapter_options: dict[str, Any] | None = None,
    **hyperparameters: Any,
) -> Inversion:
    """Invert ``image`` described by ``prompt`` with ``method`` for a diffusers pipeline or adapter.

    ``image``: a path, PIL image, tensor in [0, 1], or a list of them (a batch; each fitted to the
    model's size). ``method``: a name of :func:`list_methods` (its config's hyperparameters are the
    defaults; ``hyperparameters`` override them) or an inverter callable. ``schedule``: a
    ``conf/schedule`` name or a :class:`ScheduleSpec`; by default the family's usual setting (SD:
    DDIM 50; SDXL: Euler 4 trailing, as SDXL-Turbo; Flux: flow-matching Euler 4). ``progress``:
    a tqdm bar over the steps (True), none (False), or a callback ``(levels reached, total)``.
    ``guidance_scale``: classifier-free guidance on SD/SDXL (> 1: on, two calls per step), the
    guidance embedding's input on FLUX.1-dev (one call), only 1 on a FLUX without embedding
    (schnell); ``true_cfg_scale``: FLUX's true classifier-free guidance (> 1: on, two calls per
    step, with ``negative_prompt``, ``""`` unless given), 1 on SD/SDXL. As the diffusers pipelines
    mean them; a scale the model cannot use raises a one-line ValueError before anything runs.
    """
    adapter = as_adapter(model, **(adapter_options or {}))
    check = getattr(adapter, "guidance_problem", None)
    problem = check(guidance_scale, true_cfg_scale) if callable(check) else None
    if problem:
        raise ValueError(f"gnri.invert: {problem}")
    schedule = default_schedule(adapter) if schedule is None else resolve_schedule(schedule)
    fn, params = _method_and_params(method, hyperparameters)
    pixels = image_tensor(image, adapter.image_size())
    prompts = _as_list(prompt, pixels.shape[0])
    if len(prompts) != pixels.shape[0]:
        raise ValueError(f"gnri.invert: {len(prompts)} prompts for {pixels.shape[0]} images")
    negatives = None if negative_prompt is None else _as_list(negative_prompt, len(prompts))
    latent = adapter.encode_images(pixels)
    grid = adapter.grid(schedule, tuple(latent.shape))
    scales = {"guidance_scale": guidance_scale, "true_cfg_scale": true_cfg_scale}
    cond = adapter.encode_prompts(prompts, guidance_scale, negatives, **_true_cfg(scales))
    counting = CountingDenoiser(adapter.denoiser())
    result = _run_inverter(fn, params, counting, latent, grid, cond, progress, _method_name(method))
    return Inversion(adapter, grid, cond, result, latent, prompts, pixels.to(latent.device), _method_name(method),
                     params, schedule, negatives, counting.counter, **scales)


def _method_and_params(method: str | Callable[..., InversionResult],
                       hyperparameters: dict[str, Any]) -> tuple[Callable[..., InversionResult], dict[str, Any]]:
    """The inverter and the hyperparameters it runs with (a named method's defaults, overridden)."""
    if isinstance(method, str):
        fn, params = method_entry(method)
        check_hyperparameters(method, fn, hyperparameters)
        params.update(hyperparameters)
        return fn, params
    return method, dict(hyperparameters)


def _run_inverter(fn: Callable[..., InversionResult], params: dict[str, Any], counting: CountingDenoiser,
                  latent: Tensor, grid: Grid, cond: Conditioning, progress: bool | ProgressCallback,
                  name: str) -> InversionResult:
    """Call the inverter on ``counting`` (wrapped by a progress reporter when ``progress``)."""
    bar = _Bar(grid.num_steps, progress, f"gnri.invert {name}") if progress else None
    denoiser: Any = counting
    if bar is not None:
        denoiser = ProgressDenoiser(counting, {lv: i for i, lv in enumerate(grid.levels)}, bar)
    try:
        return fn(denoiser, latent, grid, cond, **params)
    finally:
        if bar is not None:
            bar.close()


def default_schedule(adapter: ModelAdapter) -> ScheduleSpec:
    """The loader family's library default (:func:`gnri.models.families.library_schedule_name`):
    DDIM 50 (SD), Euler 4 trailing (SDXL, the SDXL-Turbo setting), flow Euler 4 (Flux). An adapter
    of no known loader family counts as Flux when it is of the flow family, else as SDXL when its
    class name starts with ``SDXL``, else as SD."""
    loader = getattr(adapter, "loader_family", None)
    if loader not in TABLE:
        loader = "flux" if adapter.family == "flow" else "sdxl" if type(adapter).__name__.startswith("SDXL") else "sd"
    return resolve_schedule(library_schedule_name(loader))
