"""Attention kernels and ``torch.compile`` for the transformer.

**Attention.** diffusers routes the FramePack transformer's attention through its attention dispatcher
(``dispatch_attention_fn``); ``set_attention_backend`` picks the kernel: ``native`` (PyTorch SDPA, the
default), ``flash`` (flash-attn 2), ``_flash_3`` (flash-attn 3), ``sage`` (SageAttention), ``xformers``,
``flex``, the ``*_hub`` kernels (fetched by the ``kernels`` package) and PyTorch's own SDPA kernels
forced one at a time (``_native_flash``, ``_native_cudnn``, ``_native_efficient``, ``_native_math``).
We accept exactly the names of the installed diffusers' ``AttentionBackendName`` and check, before any
job runs, that the kernel is installed and runs on the device in the model's dtype (a tiny probe call),
so that a bad choice fails at start with a clear reason, not in the middle of a job.

**Compile.** Regional compilation: each transformer block's ``forward`` is compiled (all blocks of one
class share the compiled code, so a 60-block model compiles two graphs, not one huge one), and the
hooks of the step caches, memory modes and layout cache stay outside the compiled code. Compilation
happens at the first call of each new input shape; `CompileClock` reads how long it took from
TorchDynamo's own accounting.
"""

from __future__ import annotations

import logging

import torch

from ..errors import InputError

log = logging.getLogger(__name__)


def attention_names() -> list[str]:
    """Every backend name the installed diffusers' dispatcher knows."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    return sorted(b.value for b in AttentionBackendName)


def _probe(name: str, device: torch.device, dtype: torch.dtype) -> None:
    """Run the backend once on tiny inputs (batch 1, 8 tokens, 2 heads of 64) on the device."""
    from diffusers.models import attention_dispatch
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    # diffusers' own check names the missing package (a private helper: used when it is there)
    check = getattr(attention_dispatch, "_check_attention_backend_requirements", None)
    if check is not None:
        check(AttentionBackendName(name))
    q, k, v = (torch.randn(1, 8, 2, 64, device=device, dtype=dtype) for _ in range(3))
    with torch.inference_mode():
        out = dispatch_attention_fn(q, k, v, backend=AttentionBackendName(name))
    if out.shape != q.shape or not torch.isfinite(out.float()).all():
        raise RuntimeError("the probe call returned a wrong result")


def set_attention(transformer: torch.nn.Module, name: str, device: torch.device) -> None:
    """Route the transformer's attention through the named backend, or raise an InputError saying why not."""
    names = attention_names()
    if name not in names:
        raise InputError("attention", f"unknown backend {name!r}; diffusers knows {', '.join(names)}")
    # diffusers models report their compute dtype (float8 storage aside); plain modules their weights'
    dtype = getattr(transformer, "dtype", None) or next(transformer.parameters()).dtype
    try:
        _probe(name, device, dtype)
    except Exception as exc:  # missing package, wrong device, unsupported dtype ... all mean "not here"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError("attention", f"backend {name!r} does not run on {device} in {dtype}: {reason}") from exc
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # it warns that backends are "experimental" on every call
    try:
        transformer.set_attention_backend(name)
    finally:
        diffusers_logging.set_verbosity(level)
    log.info("attention backend %s", name)


def compile_blocks(transformer: torch.nn.Module) -> int:
    """Compile every transformer block's forward in place (lazily: at its first call); returns the count."""
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    # Blocks of one class share one compiled graph, guarded on shapes, not on the block instance; give
    # dynamo room for the recompiles of new shapes (resolutions, prompt lengths) of every block.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for block in blocks:
        block.forward = torch.compile(block.forward)
    return len(blocks)


class CompileClock:
    """Seconds TorchDynamo spent compiling since the clock started (its cumulative timers; 0.0 where
    they are missing). Counts every compilation in the process, as one engine compiles at a time."""

    @staticmethod
    def total() -> float:
        try:
            from torch._dynamo.utils import calculate_time_spent

            return float(calculate_time_spent().get("entire_frame_compile", 0.0))
        except Exception:  # a private API: never let its absence break a generation
            return 0.0

    def __init__(self) -> None:
        self._start = self._mark = self.total()

    @property
    def seconds(self) -> float:
        return max(0.0, self.total() - self._start)

    def lap(self) -> float:
        """Compile seconds since the last lap."""
        now = self.total()
        delta, self._mark = max(0.0, now - self._mark), now
        return delta
