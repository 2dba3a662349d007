"""Section arithmetic of FramePack, for both sampling orders: pure functions, no model.

A video is generated ``latent_window_size`` (lws) latent frames at a time. Each section sees a
context of constant length: the start image latent, one history latent at full resolution, two at
2x and sixteen at 4x compression. The inverted (anti-drifting) order generates the end of the video
first, with blank positions between the start image and the window; F1's forward order generates in
time order. The formulas follow the reference demos (lllyasviel/FramePack, demo_gradio*.py).

Latent frames of a finished video, in time order: ``[start, 1 + N*lws generated ...]``. The causal
VAE turns T latents into 4*(T-1)+1 pixel frames, so the video has 4*N*lws + 1 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .registry import SamplingOrder
from .timeline import (  # noqa: F401 - re-exported: the section arithmetic in one namespace
    TEMPORAL_RATIO,
    frames_for_sections,
    num_sections,
    overlap_frames,
    reference_num_sections,
)

HISTORY_SIZES = (1, 2, 16)  # latents at 1x, 2x and 4x compression in every section's context
CONTEXT_LATENTS = sum(HISTORY_SIZES)


def latent_paddings(sections: int) -> list[int]:
    """Blank-window counts of the inverted order, one per section in generation order.

    Sections are generated end-first, so the padding shrinks to 0 at the section next to the start
    image. For more than 4 sections the reference repeats 2 instead of counting down ("duplicating
    looks better than expanding").
    """
    if sections > 4:
        return [3] + [2] * (sections - 3) + [1, 0]
    return list(reversed(range(sections)))


@dataclass(frozen=True)
class SectionIndices:
    """RoPE frame positions of every part of one section's input."""

    latents: list[int]  # the noisy window
    clean: list[int]  # start image latent + 1x history latent
    history_2x: list[int]
    history_4x: list[int]

    def as_tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The transformer's index arguments (diffusers' HunyuanVideoFramepackTransformer3DModel)."""
        return {
            "indices_latents": torch.tensor(self.latents, device=device),
            "indices_latents_clean": torch.tensor(self.clean, device=device),
            "indices_latents_history_2x": torch.tensor(self.history_2x, device=device),
            "indices_latents_history_4x": torch.tensor(self.history_4x, device=device),
        }


def _split(sizes: list[int]) -> list[list[int]]:
    out, start = [], 0
    for size in sizes:
        out.append(list(range(start, start + size)))
        start += size
    return out


def section_indices(order: SamplingOrder, lws: int, padding: int = 0) -> SectionIndices:
    """Index split of one section.

    Inverted: [start | padding*lws blanks | window | 1x | 2x | 4x] -- the history follows the window.
    Forward:  [start | 4x | 2x | 1x | window] -- the history precedes it.
    """
    one, two, four = HISTORY_SIZES
    if order is SamplingOrder.INVERTED:
        pre, _blank, window, post, h2, h4 = _split([1, padding * lws, lws, one, two, four])
        return SectionIndices(latents=window, clean=pre + post, history_2x=h2, history_4x=h4)
    pre, h4, h2, post, window = _split([1, four, two, one, lws])
    return SectionIndices(latents=window, clean=pre + post, history_2x=h2, history_4x=h4)


@dataclass(frozen=True)
class Section:
    index: int  # in generation order, 0-based
    count: int
    padding: int  # inverted order's blank windows (0 for forward)
    indices: SectionIndices

    @property
    def is_first(self) -> bool:
        return self.index == 0

    @property
    def is_last(self) -> bool:
        return self.index == self.count - 1


def plan_sections(order: SamplingOrder, sections: int, lws: int) -> list[Section]:
    paddings = latent_paddings(sections) if order is SamplingOrder.INVERTED else [0] * sections
    return [Section(k, sections, p, section_indices(order, lws, p)) for k, p in enumerate(paddings)]


def history_context(
    order: SamplingOrder, generated: torch.Tensor, start_latent: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (1x, 2x, 4x) history latents that condition the next section.

    ``generated`` holds the latents generated so far in time order (B, C, T, H, W), without the start
    latent. Missing history is zeros, as in the reference's zero-initialised history buffer.
    Inverted: the earliest generated frames (they follow the next window in time), 1x nearest.
    Forward: the latest frames of [start, generated], 1x nearest (the start latent is history too).
    """
    b, c, _, h, w = start_latent.shape
    zeros = start_latent.new_zeros((b, c, CONTEXT_LATENTS, h, w))
    if order is SamplingOrder.INVERTED:
        hist = torch.cat([generated, zeros], dim=2)[:, :, :CONTEXT_LATENTS]
        one, two, four = hist.split(HISTORY_SIZES, dim=2)
    else:
        hist = torch.cat([zeros, start_latent, generated], dim=2)[:, :, -CONTEXT_LATENTS:]
        four, two, one = hist.split(HISTORY_SIZES[::-1], dim=2)
    return one, two, four


def section_span(order: SamplingOrder, index: int, sections: int, lws: int) -> tuple[int, int]:
    """Where section ``index`` (generation order) sits in the final latent sequence [start, ...]."""
    slot = index if order is SamplingOrder.FORWARD else sections - 1 - index
    return 1 + slot * lws, 1 + (slot + 1) * lws


def decode_windows(order: SamplingOrder, sections: int, lws: int) -> list[tuple[int, int]]:
    """Latent spans [a, b) of the final latent sequence [start, generated...] that the reference
    decodes, listed in time order; consecutive windows overlap by 4*lws - 3 pixel frames.

    Forward: the first section decodes [start + window], later ones their 2*lws latest latents.
    Inverted: each section decodes its window and the one after it (2*lws latents), the section next
    to the start image includes the start latent (2*lws + 1), and the first-generated (last in time)
    section decodes its window alone.
    """
    total = 1 + sections * lws
    if sections == 1:
        return [(0, total)]
    if order is SamplingOrder.FORWARD:
        return [(0, 1 + lws)] + [(1 + (k - 1) * lws, 1 + (k + 1) * lws) for k in range(1, sections)]
    middle = [(1 + j * lws, 1 + (j + 2) * lws) for j in range(1, sections - 1)]
    return [(0, 1 + 2 * lws), *middle, (total - lws, total)]


class OverlapBlender:
    """Joins decoded windows in time order with the reference's linear crossfade, streaming.

    The reference keeps the whole decoded video and appends each window with a crossfade
    (soft_append_bcthw). Every blended region only involves the tail of one window and the head of
    the next, so the same frames can be emitted window by window: each call returns the frames that
    are final, and keeps the last ``overlap`` frames until the next window arrives.
    """

    def __init__(self, overlap: int) -> None:
        self.overlap = overlap
        self._tail: torch.Tensor | None = None

    def push(self, window: torch.Tensor, last: bool = False) -> torch.Tensor:
        """``window``: decoded pixels (B, C, T, H, W). Returns the frames that are now final."""
        o = self.overlap
        if self._tail is not None:
            weight = torch.linspace(1, 0, o, dtype=window.dtype, device=window.device).view(1, 1, -1, 1, 1)
            head = weight * self._tail + (1 - weight) * window[:, :, :o]
            window = torch.cat([head, window[:, :, o:]], dim=2)
        if last:
            self._tail = None
            return window
        self._tail = window[:, :, -o:]
        return window[:, :, :-o]
