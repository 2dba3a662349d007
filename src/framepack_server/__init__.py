"""framepack-server: self-hosted FramePack image-to-video."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FramePack", "VideoResult", "__version__"]

if TYPE_CHECKING:
    from .generator import FramePack, VideoResult


def __getattr__(name: str) -> Any:  # lazy, so that `import framepack_server` does not import torch
    if name in ("FramePack", "VideoResult"):
        from . import generator

        return getattr(generator, name)
    raise AttributeError(name)
