"""How frames map to sections: integer arithmetic only (no torch), shared by the API and the engine.

A section generates ``lws`` latent frames; HunyuanVideo's causal VAE turns T latents into 4*(T-1)+1
pixel frames, so N sections (plus the start image's latent) give 4*N*lws + 1 frames.
"""

from __future__ import annotations

import math

TEMPORAL_RATIO = 4  # pixel frames per latent frame
FPS = 30


def frames_for_sections(sections: int, lws: int) -> int:
    """Pixel frames produced by ``sections`` sections: 4*N*lws + 1."""
    return TEMPORAL_RATIO * sections * lws + 1


def num_sections(num_frames: int, lws: int) -> int:
    """Fewest sections that give at least ``num_frames`` frames (the surplus is trimmed from the end).

    The reference rounds seconds*30 / (4*lws) to the nearest integer and so may give fewer frames than
    asked; diffusers' pipeline uses ceil(num_frames / (4*lws - 3)). Both agree with this rule wherever
    ``num_frames`` is 4*N*lws + 1.
    """
    return max(1, math.ceil((num_frames - 1) / (TEMPORAL_RATIO * lws)))


def reference_num_sections(seconds: float, lws: int) -> int:
    """The reference demo's section count for a length in seconds (30 fps)."""
    return int(max(round((seconds * FPS) / (lws * TEMPORAL_RATIO)), 1))


def overlap_frames(lws: int) -> int:
    """Pixel frames shared by consecutive decode windows (the reference's crossfade length)."""
    return TEMPORAL_RATIO * lws - 3
