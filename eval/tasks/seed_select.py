"""Rare-concept generation from inverted seeds (GNRI arXiv 2312.12540, Table 3; NAO / SeedSelect's protocol).

A unit is a concept (:class:`eval.concepts.ConceptEntry`: its caption, frequency bin and
reference images), batch size 1, on the frame of :mod:`eval.task`. Per concept:

1. ``task.seeds=inverted``: the first ``task.k`` reference images are inverted with the run's
   inverter and caption at the run's ``guidance_scale`` (each inversion timed as every task times
   it, :func:`eval.timed.timed_inversion`, and cached across the jobs of a sweep by image,
   inverter, its parameters, schedule, seed and guidance); the seed is built from their latents
   ``z`` by ``task.seed_rule`` (:func:`eval.seeds.seed_rule`: ``nao``, the norm-corrected centroid
   at ``s_T * sqrt(d - 1)``, ``s_T`` the noise scale of the grid's noisiest level; ``centroid``, the
   plain mean; ``seedselect`` is refused, not implemented); ``task.n`` seeds are drawn around it
   (:func:`eval.seeds.seeds_around`, ``task.spread``, generator seeded ``seed + unit index``).
   ``task.seeds=random``: the baseline, ``n`` seeds ``s_T * N(0, I)`` (the noisiest level's pure
   noise, as diffusers' ``init_noise_sigma`` scaling gives), no inversion;
2. the ``n`` images are generated with the shared sampler (:func:`gnri.core.sample`; an inverter's
   own sampler, e.g. EDICT's coupled one, is not used: only its ``z`` makes the seed) at
   ``task.generation_guidance_scale`` (null: the run's ``guidance_scale``), ``task.batch`` seeds per
   network call, from ``task.prompt``: ``references`` (default), image ``j`` from the caption of
   reference ``j mod k`` (the caption each reference was inverted with; on the world, a full caption
   naming the concept and the scene's other attributes, what the world's models were trained on;
   the random baseline uses the same prompts), or ``concept``: the concept's caption alone, for
   inversion and generation (``a red circle``; ``a photo of a <class>`` on real folders);
3. scored: the world checker (:func:`eval.world.checker.check`) on each image against the
   concept's caption (shape and colour: whatever else a full prompt states is not scored); CLIP
   against each image's own prompt.

Rows (fixed set; every concept fills the overall rows and its own bin's row, the other bins' rows
are ``unavailable``, so the report's means give Table 3's per-bin accuracy directly):

- ``rare_concept_accuracy`` and ``rare_concept_accuracy_<bin>`` (head / medium / tail): the
  fraction of the ``n`` images the checker passes (unavailable for captions outside the world's
  grammar: there is no ImageNet classifier here);
- ``rare_concept_clip``: the mean CLIP score of the ``n`` images, each with its own prompt (``task.clip``);
- ``rare_concept_time_s``: seconds of the ``k`` inversions + building the seeds + generating;
- ``rare_concept_nfe_forward``: network calls of the same.

The ``inverter`` column is ``<inverter>+<seed_rule>`` (``gnri+nao``: paper numbers match on
``gnri``), or ``random_seeds`` for the baseline (run it once beside the inverters' sweep, e.g.
``inverter=ddim task.seeds=random``). ``image_id`` is ``<bin>/<concept>``. With
``task.save_images`` each concept's ``n`` images are kept side by side as
``images/concepts/<bin>_<concept>.png`` in the run folder.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import torch

from eval.concepts import BINS, ConceptEntry
from eval.data import Entry
from eval.finite import check_finite, diverged_reason
from eval.prepare import cached_conditioning, cached_image, image_cache_key, inversion_cache_key
from eval.records import Unavailable
from eval.seeds import NOT_IMPLEMENTED, SEED_RULES, seed_rule, seeds_around
from eval.settings import RunSettings
from eval.task import AdapterSource, Fail, Skip, TaskRun, Value, one_line
from eval.timed import invert_once, timed_inversion, warm_up
from eval.units import Unit
from eval.validate import task_refusal
from gnri.core import CountingDenoiser, Tensor, sample
from gnri.models.common import latent_dtype

SEED_SOURCES = ("inverted", "random")
PROMPTS = ("references", "concept")
RANDOM_LABEL = "random_seeds"
ACCURACY = "rare_concept_accuracy"
METRICS: dict[str, bool] = {ACCURACY: True, **{f"{ACCURACY}_{b}": True for b in BINS}, "rare_concept_clip": True,
                            "rare_concept_time_s": False, "rare_concept_nfe_forward": False}
NOT_WORLD = "the world checker reads world captions only (no classifier for other concepts here)"


@dataclass(frozen=True)
class SeedOptions:
    """``task.*`` of ``task=seed_select`` (conf/task/seed_select.yaml), checked in one line each."""

    k: int = 3
    n: int = 8
    spread: float = 0.3
    seed_rule: str = "nao"
    seeds: str = "inverted"
    generation_guidance_scale: float | None = None
    batch: int = 8
    prompt: str = "references"

    def __post_init__(self) -> None:
        for name in ("k", "n", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"task.{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= float(self.spread) <= 1.0:
            raise ValueError(f"task.spread must be in [0, 1], got {self.spread!r}")
        if self.seed_rule in NOT_IMPLEMENTED:
            raise ValueError(NOT_IMPLEMENTED[self.seed_rule])
        if self.seed_rule not in SEED_RULES:
            raise ValueError(f"task.seed_rule must be one of {', '.join(SEED_RULES)}, got {self.seed_rule!r}")
        if self.seeds not in SEED_SOURCES:
            raise ValueError(f"task.seeds must be one of {', '.join(SEED_SOURCES)}, got {self.seeds!r}")
        if self.prompt not in PROMPTS:
            raise ValueError(f"task.prompt must be one of {', '.join(PROMPTS)}, got {self.prompt!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SeedOptions:
        scale = options.get("generation_guidance_scale")
        return cls(k=options.get("k", 3), n=options.get("n", 8), spread=float(options.get("spread", 0.3)),
                   seed_rule=str(options.get("seed_rule", "nao")), seeds=str(options.get("seeds", "inverted")),
                   generation_guidance_scale=None if scale is None else float(scale), batch=options.get("batch", 8),
                   prompt=str(options.get("prompt", "references")))


@dataclass
class SeedSelect(TaskRun):
    """``task=seed_select`` (see the module docstring)."""

    name: ClassVar[str] = "seed_select"
    options: SeedOptions = field(default_factory=SeedOptions)
    clip_options: Mapping[str, Any] | None = None
    clip: Any = None
    save_images: bool = True
    warmed: bool = False

    @classmethod
    def create(cls, settings: RunSettings, adapter: AdapterSource, inverter: Callable[..., Any], *, shard: Any,
               metrics: Any = (), clip: Any = None, save_images: bool | None = None, **resources: Any) -> SeedSelect:
        task = settings.task_params
        opts = SeedOptions.from_options(task)
        random = opts.seeds == "random"
        label = RANDOM_LABEL if random else f"{settings.inverter}+{opts.seed_rule}"
        params = {**({} if random else dict(settings.inverter_params)), **asdict(opts)}
        keep = bool(task.get("save_images", True)) if save_images is None else save_images
        return cls(settings, adapter, label, params, shard, inverter, options=opts,
                   clip_options=dict(task.get("clip") or {}), clip=clip, save_images=keep)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """``task.*`` checked before any model loads (run.py): one-line ValueError naming the option."""
        SeedOptions.from_options(options)

    def directions(self) -> Mapping[str, bool]:
        return METRICS

    def build(self) -> None:
        """The CLIP metric from ``task.clip`` (``weights: auto``: the embedded world's CLIP folder)."""
        if self.clip is None and self.clip_options:
            from eval.metrics.clip_score import CLIPScore
            from eval.world_data import world_dir

            options = dict(self.clip_options)
            if options.get("weights") == "auto":
                options["weights"] = str(world_dir() / "clip")
            self.clip = CLIPScore(**options)

    # -- one concept ------------------------------------------------------------------------
    def measure_one(self, unit: Unit) -> Mapping[str, Value]:
        entry = unit.entries[0]
        if not isinstance(entry, ConceptEntry):
            raise Skip(f"{entry.image_id} is not a concept (dataset=world_concepts or dataset=concepts)")
        if entry.problem is not None:
            raise Skip(entry.problem)
        o, s, adapter = self.options, self.settings, self.adapter
        scale = s.guidance_scale if o.generation_guidance_scale is None else o.generation_guidance_scale
        problem = adapter.guidance_problem(scale)
        if problem is not None:
            raise Skip(f"task.generation_guidance_scale={scale}: {problem}")
        torch.manual_seed(s.seed)
        counting = CountingDenoiser(adapter.denoiser())
        generator = torch.Generator().manual_seed(s.seed + unit.index)
        if o.seeds == "random":
            seeds, seconds, nfe = self.random_seeds(generator), 0.0, 0
        else:
            seeds, seconds, nfe = self.inverted_seeds(entry, counting, generator)
        prompts = [self.prompt(entry, j % o.k) for j in range(o.n)]
        images, gen_seconds = self.generate(prompts, seeds, scale, counting)
        if self.save_images and s.out_dir is not None:
            save_concept_strip(Path(s.out_dir), entry.image_id, images)
        return {**self.accuracy(entry, images), "rare_concept_clip": self.clip_score(images, prompts),
                "rare_concept_time_s": seconds + gen_seconds,
                "rare_concept_nfe_forward": float(nfe + counting.counter.forward)}

    def prompt(self, entry: ConceptEntry, i: int) -> str:
        """The prompt reference ``i`` is inverted with and seed ``i`` (mod k) generated from (``task.prompt``)."""
        return entry.prompt_of(i) if self.options.prompt == "references" else (entry.caption or "")

    def random_seeds(self, generator: torch.Generator) -> Tensor:
        """The baseline's ``n`` seeds: ``s_T * N(0, I)`` at the adapter's latent shape (CPU generator)."""
        adapter = self.adapter
        shape = tuple(adapter.latent_shape(1))
        with torch.no_grad():
            level = adapter.grid(self.settings.schedule, shape).levels[-1]
        noise = torch.randn((self.options.n, *shape[1:]), generator=generator, dtype=torch.float32)
        return (noise * float(level.s)).to(device=adapter.device, dtype=latent_dtype(adapter.dtype))

    def inverted_seeds(self, entry: ConceptEntry, counting: CountingDenoiser,
                       generator: torch.Generator) -> tuple[Tensor, float, int]:
        """(the ``n`` seeds, seconds of the inversions and the seed, their NFE) of a concept."""
        refusal = task_refusal(self.inverter, "seed_select")
        if refusal is not None:
            raise Skip(refusal)
        o, s, adapter = self.options, self.settings, self.adapter
        if len(entry.references) < o.k:
            raise Skip(f"{entry.image_id} has {len(entry.references)} reference images, task.k={o.k}")
        latents, seconds, nfe, level = [], 0.0, 0, None
        for i, path in enumerate(entry.references[: o.k]):
            cond = cached_conditioning(self.cache, s, adapter, self.prompt(entry, i))
            ref = Entry(f"{entry.image_id}#{i}", path, self.prompt(entry, i))
            try:
                _, latent, _ = cached_image(self.cache, image_cache_key(s, adapter, ref), adapter, ref)
            except (OSError, ValueError) as err:
                raise Skip(f"cannot read reference {path}: {one_line(err)}") from None
            with torch.no_grad():
                grid = adapter.grid(s.schedule, tuple(latent.shape))
            level = grid.levels[-1]
            key = {**image_cache_key(s, adapter, ref), "caption": ref.caption}  # the prompt changes the inversion
            z, sec, calls = self.inversion(key, counting, latent, grid, cond)
            latents.append(z)
            seconds, nfe = seconds + sec, nfe + calls
        start = time.perf_counter()
        try:
            seed = seed_rule(o.seed_rule, latents, scale=float(level.s))  # type: ignore[union-attr]
        except ValueError as err:
            raise Fail(f"seed: {one_line(err)}") from None
        seeds = seeds_around(seed, o.n, o.spread, generator)
        return seeds, seconds + time.perf_counter() - start, nfe

    def inversion(self, image_key: dict[str, Any], counting: CountingDenoiser, latent: Tensor, grid: Any,
                  cond: Any) -> tuple[Tensor, float, int]:
        """(inverted latent z, seconds, NFE) of one reference: from the sweep's cache or timed and stored."""
        s = self.settings
        key = inversion_cache_key(s, image_key)
        hit = self.cache.get("seed_inversion", key, latent.device)
        if hit is not None:
            tensors, meta = hit
            return tensors["z"], float(meta["seconds"]), int(meta["nfe_forward"])
        if not self.warmed:
            warm_up(lambda: invert_once(self.inverter, counting, latent, grid, cond), s.warmup)
            self.warmed = True
        counting.counter.reset()
        timed = timed_inversion(self.inverter, counting, latent, grid, cond, device=latent.device)
        counting.counter.reset()
        z = timed.result.z
        if not bool(torch.isfinite(z).all()):
            raise Fail(diverged_reason(z, "inversion") or "diverged: non-finite inverted latent")
        self.cache.put("seed_inversion", key, {"z": z.contiguous()}, {"seconds": timed.seconds,
                                                                      "nfe_forward": timed.nfe_forward})
        return z, timed.seconds, timed.nfe_forward

    def generate(self, prompts: list[str], seeds: Tensor, scale: float,
                 counting: CountingDenoiser) -> tuple[Tensor, float]:
        """The images (n, 3, H, W) in [0, 1] generated from ``seeds`` with ``prompts`` (one each) and
        the seconds it took (``task.batch`` seeds per call; decoding not timed)."""
        s, adapter, batch = self.settings, self.adapter, self.options.batch
        extra = {"true_cfg_scale": float(s.true_cfg_scale)} if float(s.true_cfg_scale) != 1.0 else {}
        images, seconds = [], 0.0
        with torch.no_grad():
            for start in range(0, seeds.shape[0], batch):
                z = seeds[start:start + batch]
                cond = adapter.encode_prompts(prompts[start:start + z.shape[0]], guidance_scale=float(scale), **extra)
                grid = adapter.grid(s.schedule, tuple(z.shape))
                t0 = time.perf_counter()
                out = sample(counting, z, grid, cond)
                if z.device.type == "cuda":
                    torch.cuda.synchronize(z.device)
                seconds += time.perf_counter() - t0
                images.append(check_finite(adapter.decode_latents(out), "generated image"))
        return torch.cat(images).float().clamp(0, 1), seconds

    @staticmethod
    def accuracy(entry: ConceptEntry, images: Tensor) -> dict[str, Value]:
        """The checker's pass rate on the overall row and the concept's bin row; other bins unavailable."""
        from eval.world.checker import check
        from eval.world.grammar import parse

        caption = entry.caption or ""
        try:
            parse(caption)
        except ValueError:
            value: Value = Unavailable(NOT_WORLD)
        else:
            value = sum(bool(check(img.cpu(), caption).ok) for img in images) / images.shape[0]
        out: dict[str, Value] = {ACCURACY: value}
        for b in BINS:
            elsewhere = Unavailable(f"concept is in the {entry.bin or 'no'} bin")
            out[f"{ACCURACY}_{b}"] = value if b == entry.bin else elsewhere
        return out

    def clip_score(self, images: Tensor, prompts: list[str]) -> Value:
        if self.clip is None:
            return Unavailable("no CLIP metric configured (task.clip)")
        reason = self.clip.unavailable_reason()
        if reason is not None:
            return Unavailable(reason)
        with torch.no_grad():
            return float(self.clip(images, images, prompts).float().mean().item())


def save_concept_strip(run_dir: Path, image_id: str, images: Tensor) -> None:
    """A concept's generated images side by side, ``images/concepts/<bin>_<concept>.png``."""
    from PIL import Image

    strip = torch.cat(list(images.cpu()), dim=-1)
    array = (strip.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    path = run_dir / "images" / "concepts" / f"{image_id.replace('/', '_')}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


__all__ = ["METRICS", "RANDOM_LABEL", "SeedOptions", "SeedSelect", "save_concept_strip"]
