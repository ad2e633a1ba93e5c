"""How a model's pipeline runs: the fast paths and the memory options of the model config group.

Each is a key of ``conf/model/*.yaml`` (``model.<key>=...`` on the command line) that
:func:`gnri.models.load_adapter` reads (:func:`runtime_options`) and applies to the built adapter
(:func:`apply_runtime`). None changes what the network computes (up to floating-point rounding),
so each is measurable against the same run without it.

Fast paths:

- ``compile`` (bool, default false): ``torch.compile`` on the denoising network (the UNet or the
  Flux transformer), in place (``nn.Module.compile``), so the adapter's denoiser and the
  bare-network clock (``eval.timing.bare_network_times``) both run the compiled module.
  ``compile_mode``: ``default``, ``reduce-overhead`` (CUDA graphs: for static shapes, one latent
  size and batch per run, as here), ``max-autotune`` or ``max-autotune-no-cudagraphs``.
  ``compile_backend``: ``inductor`` (the default, generates kernels; needs a C compiler on a CPU),
  ``eager`` or ``aot_eager`` (trace only: to check the plumbing cheaply). Compilation is lazy:
  the first call of each new input signature (shapes, dtypes, devices, grad mode) compiles, and
  the harness's warm-up covers it. Those first calls' seconds are :attr:`CompileClock.seconds`
  (``adapter.compile_clock``; :func:`compile_seconds`) and their number :attr:`CompileClock.compiles`
  (a number that grows inside a timed call means a recompile was timed). Backward graphs (the
  vector-Jacobian products of ``gnri``) compile at their first backward pass, which the warm-up
  also covers; that time is not in ``seconds``.
- ``channels_last`` (bool): the UNet's weights in channels-last memory format (what diffusers
  recommends for convolution-heavy UNets on GPUs); refused for Flux's transformer.
- the attention backend stays the top-level ``attention`` option (:mod:`gnri.models.attention`).

Memory (24 GB cards):

- ``offload``: ``none`` or ``model`` (diffusers' ``enable_model_cpu_offload``: the pipeline stays
  in CPU memory and each component (text encoders, network, VAE) moves to the device when it runs,
  the previous one back to the CPU). The adapter is built on the CPU and never moved whole to the
  device. Not combined with ``compile`` (accelerate's hooks move weights inside the call).
- ``vae_slicing`` (bool): the VAE encodes and decodes a batch one image at a time;
  ``vae_tiling`` (bool): in overlapping tiles (large images; tiles blend at the seams, so the
  decoded image differs slightly from the untiled one).

The VAE's own precision rules (``force_upcast``, ``vae`` = the fp16-fix VAE) are the adapters'
(:func:`gnri.models.common.vae_dtype`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_BACKENDS = ("inductor", "eager", "aot_eager")
OFFLOAD_MODES = ("none", "model")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs
RUNTIME_KEYS = ("compile", "compile_mode", "compile_backend", "channels_last", "offload", "vae_slicing", "vae_tiling")


@dataclass(frozen=True)
class RuntimeOptions:
    """The model config's runtime keys (module docstring), checked on construction."""

    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    channels_last: bool = False
    offload: str = "none"
    vae_slicing: bool = False
    vae_tiling: bool = False

    def __post_init__(self) -> None:
        for key in ("compile", "channels_last", "vae_slicing", "vae_tiling"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"model.{key} must be true or false, got {getattr(self, key)!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"model.compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"model.compile_backend must be one of {COMPILE_BACKENDS}, got {self.compile_backend!r}")
        if self.offload not in OFFLOAD_MODES:
            raise ValueError(f"model.offload must be one of {OFFLOAD_MODES}, got {self.offload!r}")
        if self.compile and self.offload != "none":
            raise ValueError(f"model.compile=true does not combine with model.offload={self.offload} "
                             "(accelerate's hooks move weights inside the compiled call); choose one")

    @property
    def uses_cudagraphs(self) -> bool:
        return self.compile and self.compile_backend == "inductor" and self.compile_mode in CUDAGRAPH_MODES


def runtime_options(options: dict[str, Any]) -> RuntimeOptions:
    """Pop the runtime keys out of ``options`` (a model config's keyword arguments) into a
    :class:`RuntimeOptions`; ``None`` values mean the default. Raises ValueError (one line)."""
    given = {k: options.pop(k) for k in RUNTIME_KEYS if k in options}
    return RuntimeOptions(**{k: v for k, v in given.items() if v is not None})


def check_runtime_config(model_cfg: Mapping[str, Any]) -> None:
    """Check a model config's runtime keys without loading anything (ValueError, one line)."""
    runtime_options({k: model_cfg[k] for k in RUNTIME_KEYS if k in model_cfg})


@dataclass
class CompileClock:
    """Seconds and count of a compiled network's compiling calls: the first call of each new
    input signature (dynamo traces and the backend compiles there), device-synchronised."""

    seconds: float = 0.0
    compiles: int = 0
    _seen: set = field(default_factory=set, repr=False)

    def wrap(self, fn: Callable[..., Any], cudagraphs: bool = False) -> Callable[..., Any]:
        """``fn`` (the compiled call) timed on new signatures; under CUDA graphs each call starts a
        new graph step and its output tensors are cloned (a replay overwrites the last output)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            if cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            key = signature((args, kwargs))
            if key in self._seen:
                out = fn(*args, **kwargs)
            else:
                device = _first_device((args, kwargs))
                _sync(device)
                start = time.perf_counter()
                out = fn(*args, **kwargs)
                _sync(device)
                self.seconds += time.perf_counter() - start
                self.compiles += 1
                self._seen.add(key)
            return _clone(out) if cudagraphs else out

        return call


def signature(value: Any) -> Any:
    """A hashable summary of what torch.compile guards on in a call's arguments: tensors by
    shape, dtype, device and requires_grad; plain values as they are; the grad mode."""

    def walk(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return ("T", tuple(v.shape), str(v.dtype), str(v.device), v.requires_grad)
        if isinstance(v, Mapping):
            return tuple(sorted((str(k), walk(x)) for k, x in v.items()))
        if isinstance(v, (list, tuple)):
            return tuple(walk(x) for x in v)
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        return type(v).__name__

    return (walk(value), torch.is_grad_enabled())


def _first_device(value: Any) -> torch.device | None:
    if isinstance(value, torch.Tensor):
        return value.device
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    for v in items:
        found = _first_device(v)
        if found is not None:
            return found
    return None


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _clone(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, tuple):
        return tuple(_clone(o) for o in out)
    if isinstance(out, list):
        return [_clone(o) for o in out]
    return out


def network_module(pipe: Any) -> torch.nn.Module:
    """The pipeline's denoising network: ``unet`` or ``transformer``."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"{type(pipe).__name__} has neither a unet nor a transformer")


def compile_network(module: torch.nn.Module, options: RuntimeOptions) -> CompileClock:
    """Compile ``module`` in place (``nn.Module.compile``) and time its compiling calls."""
    mode = None if options.compile_mode == "default" else options.compile_mode
    kwargs: dict[str, Any] = {"backend": options.compile_backend}
    if options.compile_backend == "inductor":
        kwargs["mode"] = mode
    elif mode is not None:
        raise ValueError(f"model.compile_mode={options.compile_mode} needs model.compile_backend=inductor, "
                         f"got {options.compile_backend}")
    module.compile(**kwargs)
    clock = CompileClock()
    compiled = getattr(module, "_compiled_call_impl", None)
    if compiled is None:  # a torch whose Module.compile works differently: compiled, but untimed
        log.warning("compile time cannot be measured with torch %s", torch.__version__)
        return clock
    module._compiled_call_impl = clock.wrap(compiled, options.uses_cudagraphs)
    return clock


def apply_runtime(adapter: Any, options: RuntimeOptions, device: str | torch.device | None = None) -> Any:
    """Apply ``options`` to a built adapter (its ``pipe``); ``device``: where the network runs
    (with ``offload=model`` the adapter was built on the CPU and now reports this device).
    Sets ``adapter.compile_clock`` (a :class:`CompileClock`, or None without ``compile``) and
    ``adapter.runtime`` (the options). Returns ``adapter``."""
    pipe = adapter.pipe
    network = network_module(pipe)
    if options.channels_last:
        if getattr(pipe, "unet", None) is not network:
            raise ValueError(f"model.channels_last=true applies to UNets (sd, sdxl), not {type(network).__name__}")
        network.to(memory_format=torch.channels_last)
    if options.vae_slicing:
        pipe.vae.enable_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.offload == "model":
        target = torch.device(device if device is not None else "cuda")
        if target.type == "cpu":
            log.warning("model.offload=model on a CPU saves no memory (the hooks still run)")
        pipe.enable_model_cpu_offload(device=target)
        adapter.device = target
    adapter.compile_clock = compile_network(network, options) if options.compile else None
    adapter.runtime = options
    return adapter


def compile_seconds(adapter: Any) -> float | None:
    """Seconds ``adapter``'s compiled network spent in compiling calls so far (None: not compiled)."""
    clock = getattr(adapter, "compile_clock", None)
    return None if clock is None else clock.seconds
