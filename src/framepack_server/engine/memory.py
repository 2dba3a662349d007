"""Where the weights live while a job runs: memory modes for large and small GPUs.

- ``resident``: every component on the device (the reference's high-VRAM mode).
- ``offload``: components wait on the CPU and move to the device while they are used (model CPU
  offload); the transformer and the VAE swap around each section.
- ``group``: diffusers' group offloading (weights stream in block by block on a side CUDA stream)
  for the transformer and the Llama encoder, plus VAE tiling: a 13B model in about 6 GB.
- ``cpu``: everything on the CPU in fp32.
- ``fp8``: as ``offload``, with the transformer's weights stored in float8 (e4m3) and cast to the
  compute dtype (bf16; fp32 on the CPU) layer by layer as they run (diffusers' layerwise casting): the
  13B transformer takes about 13 GB instead of 26, so it fits beside the VAE on a 24 GB card.
- ``fp8-group``: as ``group``, with float8 weights: half the bytes stream in per step (8-12 GB cards).

``auto`` picks from free GPU memory like the reference does (all resident above ``high_vram_gb``),
and only among the exact modes: float8 storage changes the frames, so it is only used when asked for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from enum import StrEnum

import torch

log = logging.getLogger(__name__)

GIB = 1024**3
# bf16 transformer (13B) plus fp16 VAE: what "offload" must fit at once, beside the preserved memory.
OFFLOAD_NEEDS_GB = 27.0


class MemoryMode(StrEnum):
    AUTO = "auto"
    RESIDENT = "resident"
    OFFLOAD = "offload"
    GROUP = "group"
    CPU = "cpu"
    FP8 = "fp8"
    FP8_GROUP = "fp8-group"

    @property
    def fp8(self) -> bool:
        return self in (MemoryMode.FP8, MemoryMode.FP8_GROUP)

    @property
    def placement(self) -> MemoryMode:
        """Where the weights live, float8 storage aside."""
        return {MemoryMode.FP8: MemoryMode.OFFLOAD, MemoryMode.FP8_GROUP: MemoryMode.GROUP}.get(self, self)


FP8_STORAGE = torch.float8_e4m3fn


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_gpu_gb(device: torch.device) -> float:
    """Free memory as the reference counts it: free plus what torch reserved but does not use."""
    free, _total = torch.cuda.mem_get_info(device)
    stats = torch.cuda.memory_stats(device)
    unused = stats.get("reserved_bytes.all.current", 0) - stats.get("active_bytes.all.current", 0)
    return (free + unused) / GIB


def choose_mode(
    requested: str, device: torch.device, free_gb: float | None, high_vram_gb: float, preserved_gb: float
) -> MemoryMode:
    """The memory mode for a device; ``free_gb`` is None on the CPU."""
    mode = MemoryMode(requested)
    if mode is not MemoryMode.AUTO:
        return MemoryMode.CPU if device.type == "cpu" and mode is MemoryMode.RESIDENT else mode
    if device.type == "cpu":
        return MemoryMode.CPU
    assert free_gb is not None
    if free_gb > high_vram_gb:
        return MemoryMode.RESIDENT
    if free_gb - preserved_gb >= OFFLOAD_NEEDS_GB:
        return MemoryMode.OFFLOAD
    return MemoryMode.GROUP


class Placement:
    """Puts the components where a memory mode wants them; `use` brings one to the device."""

    GROUPED = ("transformer", "text_encoder")

    def __init__(self, components, mode: MemoryMode, device: torch.device) -> None:
        self.components, self.mode, self.device = components, mode, device
        self._on_device: set[str] = set()
        modules = components.modules()
        for module in modules.values():
            module._framepack_execution_device = device
        if mode.fp8:  # before group offloading, as diffusers requires; norms and embedders stay as they are
            transformer = components.transformer
            transformer.enable_layerwise_casting(storage_dtype=FP8_STORAGE, compute_dtype=transformer.dtype)
        placement = mode.placement
        if placement in (MemoryMode.RESIDENT, MemoryMode.CPU):
            for module in modules.values():
                module.to(device)
        elif placement is MemoryMode.GROUP:
            from diffusers.hooks import apply_group_offloading

            for name in self.GROUPED:
                apply_group_offloading(
                    modules[name],
                    onload_device=device,
                    offload_device=torch.device("cpu"),
                    offload_type="block_level",
                    num_blocks_per_group=1,
                    use_stream=device.type == "cuda",
                )
            components.vae.enable_tiling()
        log.info("memory mode %s on %s", mode.value, device)

    @contextlib.contextmanager
    def use(self, *names: str) -> Iterator[None]:
        """Make the named components available on the device for the duration of the block."""
        placement = self.mode.placement
        if placement in (MemoryMode.RESIDENT, MemoryMode.CPU):
            yield
            return
        movable = [n for n in names if not (placement is MemoryMode.GROUP and n in self.GROUPED)]
        for name in set(self._on_device) - set(movable):  # make room first
            getattr(self.components, name).to("cpu")
            self._on_device.discard(name)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        for name in movable:
            getattr(self.components, name).to(self.device)
            self._on_device.add(name)
        yield
