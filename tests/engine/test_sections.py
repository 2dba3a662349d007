"""Section arithmetic checked against an independent, literal re-implementation of the reference loops.

The reference (lllyasviel/FramePack demo_gradio.py, inverted anti-drifting order, and demo_gradio_f1.py,
forward order) keeps a growing ``history_latents`` buffer (prepended to / appended to), splits
``torch.arange`` into RoPE index groups, slices its context from the buffer and builds the video by
decoding a span of the buffer after every section and crossfading it in with ``soft_append_bcthw``.
The helpers below redo exactly that, in the reference's style, with a fake causal VAE, and the tests
compare every piece of ``framepack_server.engine.sections`` with what they give.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import torch

from framepack_server.engine.registry import SamplingOrder
from framepack_server.engine.sections import (
    OverlapBlender,
    decode_windows,
    frames_for_sections,
    history_context,
    latent_paddings,
    num_sections,
    overlap_frames,
    plan_sections,
    reference_num_sections,
    section_indices,
    section_span,
)

C, H, W = 2, 2, 2  # tiny latents: channels, height, width
ORDERS = [SamplingOrder.INVERTED, SamplingOrder.FORWARD]
ALL_N = range(1, 61)
# Every section count for the default window size; a spread of counts (both padding forms) for the others.
SOME_N = (1, 2, 3, 4, 5, 6, 7, 13, 31, 60)
CASES = [(9, n) for n in ALL_N] + [(lws, n) for lws in (1, 2, 5) for n in SOME_N]
CASE_IDS = [f"lws{lws}-n{n}" for lws, n in CASES]


# --------------------------------------------------------------------------------------------------
# The reference, re-implemented literally (names follow the demos)
# --------------------------------------------------------------------------------------------------


def soft_append_bcthw(history: torch.Tensor, current: torch.Tensor, overlap: int = 0) -> torch.Tensor:
    """diffusers_helper/utils.py: linear crossfade of ``history``'s tail into ``current``'s head."""
    if overlap <= 0:
        return torch.cat([history, current], dim=2)
    assert history.shape[2] >= overlap
    assert current.shape[2] >= overlap
    weights = torch.linspace(1, 0, overlap, dtype=history.dtype, device=history.device).view(1, 1, -1, 1, 1)
    blended = weights * history[:, :, -overlap:] + (1 - weights) * current[:, :, :overlap]
    output = torch.cat([history[:, :, :-overlap], blended, current[:, :, overlap:]], dim=2)
    return output.to(history)


def fake_vae_decode(latents: torch.Tensor) -> torch.Tensor:
    """A causal "VAE": T latents -> 4*(T-1)+1 pixel frames, (1, C, T, h, w) -> (1, C, 4*(T-1)+1, h, w).

    Pixel frame 0 is latent 0; frames 4j-3..4j mix latents j-1 and j with weights that depend on the
    sub-frame, scaled by the latent's position in the window, plus a term from the window's first latent.
    So the same latent decodes differently in different windows, as with a real causal VAE.
    """
    anchor = latents[:, :, :1]
    frames = [latents[:, :, :1]]
    ramp = torch.arange(1, 5, dtype=latents.dtype).view(1, 1, 4, 1, 1) / 4
    for j in range(1, latents.shape[2]):
        mix = ramp * latents[:, :, j : j + 1] + (1 - ramp) * latents[:, :, j - 1 : j]
        frames.append((1 + 0.1 * j) * mix + (0.05 * j) * anchor)
    return torch.cat(frames, dim=2)


@dataclass
class RefSection:
    latent_padding: int  # 0 for the forward order (it has none)
    is_last_section: bool
    latent_indices: torch.Tensor
    clean_latent_indices: torch.Tensor
    clean_latent_2x_indices: torch.Tensor
    clean_latent_4x_indices: torch.Tensor
    clean_latents: torch.Tensor  # cat(start, 1x)
    clean_latents_1x: torch.Tensor
    clean_latents_2x: torch.Tensor
    clean_latents_4x: torch.Tensor


@dataclass
class RefRun:
    sections: list[RefSection]
    history_pixels: torch.Tensor
    real_history_latents: torch.Tensor  # the final latent sequence, [start, ...] in time order
    start_latent: torch.Tensor
    generated: list[torch.Tensor]  # what each section "sampled", in generation order


def reference_paddings(total_latent_sections: int) -> list[int]:
    latent_paddings = reversed(range(total_latent_sections))
    if total_latent_sections > 4:
        # In theory the latent_paddings should follow the above sequence, but it seems that duplicating
        # some items looks better than expanding it when total_latent_sections > 4.
        latent_paddings = [3] + [2] * (total_latent_sections - 3) + [1, 0]
    return list(latent_paddings)


def reference_sections_from_seconds(total_second_length: float, latent_window_size: int) -> int:
    total_latent_sections = (total_second_length * 30) / (latent_window_size * 4)
    return int(max(round(total_latent_sections), 1))


def run_inverted(start_latent, generated, latent_window_size: int) -> RefRun:
    """demo_gradio.py worker(): end-first sampling, history prepended, soft_append(current, history)."""
    total_latent_sections = len(generated)
    history_latents = torch.zeros(size=(1, C, 1 + 2 + 16, H, W), dtype=torch.float32)
    history_pixels = None
    total_generated_latent_frames = 0
    sections = []
    for section_index, latent_padding in enumerate(reference_paddings(total_latent_sections)):
        is_last_section = latent_padding == 0
        latent_padding_size = latent_padding * latent_window_size

        split = [1, latent_padding_size, latent_window_size, 1, 2, 16]
        indices = torch.arange(0, sum(split)).unsqueeze(0)
        (
            clean_latent_indices_pre,
            blank_indices,
            latent_indices,
            clean_latent_indices_post,
            clean_latent_2x_indices,
            clean_latent_4x_indices,
        ) = indices.split(split, dim=1)
        clean_latent_indices = torch.cat([clean_latent_indices_pre, clean_latent_indices_post], dim=1)

        clean_latents_pre = start_latent.to(history_latents)
        clean_latents_post, clean_latents_2x, clean_latents_4x = history_latents[:, :, : 1 + 2 + 16].split(
            [1, 2, 16], dim=2
        )
        clean_latents = torch.cat([clean_latents_pre, clean_latents_post], dim=2)
        sections.append(
            RefSection(
                latent_padding,
                is_last_section,
                latent_indices,
                clean_latent_indices,
                clean_latent_2x_indices,
                clean_latent_4x_indices,
                clean_latents,
                clean_latents_post,
                clean_latents_2x,
                clean_latents_4x,
            )
        )

        generated_latents = generated[section_index]  # what sample_hunyuan would return
        if is_last_section:
            generated_latents = torch.cat([start_latent.to(generated_latents), generated_latents], dim=2)

        total_generated_latent_frames += int(generated_latents.shape[2])
        history_latents = torch.cat([generated_latents.to(history_latents), history_latents], dim=2)
        real_history_latents = history_latents[:, :, :total_generated_latent_frames, :, :]

        if history_pixels is None:
            history_pixels = fake_vae_decode(real_history_latents)
        else:
            section_latent_frames = (latent_window_size * 2 + 1) if is_last_section else (latent_window_size * 2)
            overlapped_frames = latent_window_size * 4 - 3
            current_pixels = fake_vae_decode(real_history_latents[:, :, :section_latent_frames])
            history_pixels = soft_append_bcthw(current_pixels, history_pixels, overlapped_frames)

        if is_last_section:
            break
    return RefRun(sections, history_pixels, real_history_latents, start_latent, generated)


def run_forward(start_latent, generated, latent_window_size: int) -> RefRun:
    """demo_gradio_f1.py worker(): time-order sampling, history appended, soft_append(history, current)."""
    total_latent_sections = len(generated)
    history_latents = torch.zeros(size=(1, C, 16 + 2 + 1, H, W), dtype=torch.float32)
    history_pixels = None
    history_latents = torch.cat([history_latents, start_latent.to(history_latents)], dim=2)
    total_generated_latent_frames = 1
    sections = []
    for section_index in range(total_latent_sections):
        split = [1, 16, 2, 1, latent_window_size]
        indices = torch.arange(0, sum(split)).unsqueeze(0)
        (
            clean_latent_indices_start,
            clean_latent_4x_indices,
            clean_latent_2x_indices,
            clean_latent_1x_indices,
            latent_indices,
        ) = indices.split(split, dim=1)
        clean_latent_indices = torch.cat([clean_latent_indices_start, clean_latent_1x_indices], dim=1)

        clean_latents_4x, clean_latents_2x, clean_latents_1x = history_latents[:, :, -sum([16, 2, 1]) :].split(
            [16, 2, 1], dim=2
        )
        clean_latents = torch.cat([start_latent.to(history_latents), clean_latents_1x], dim=2)
        sections.append(
            RefSection(
                0,
                section_index == total_latent_sections - 1,
                latent_indices,
                clean_latent_indices,
                clean_latent_2x_indices,
                clean_latent_4x_indices,
                clean_latents,
                clean_latents_1x,
                clean_latents_2x,
                clean_latents_4x,
            )
        )

        generated_latents = generated[section_index]
        total_generated_latent_frames += int(generated_latents.shape[2])
        history_latents = torch.cat([history_latents, generated_latents.to(history_latents)], dim=2)
        real_history_latents = history_latents[:, :, -total_generated_latent_frames:, :, :]

        if history_pixels is None:
            history_pixels = fake_vae_decode(real_history_latents)
        else:
            section_latent_frames = latent_window_size * 2
            overlapped_frames = latent_window_size * 4 - 3
            current_pixels = fake_vae_decode(real_history_latents[:, :, -section_latent_frames:])
            history_pixels = soft_append_bcthw(history_pixels, current_pixels, overlapped_frames)
    return RefRun(sections, history_pixels, real_history_latents, start_latent, generated)


@functools.cache
def reference_run(order: SamplingOrder, n: int, lws: int) -> RefRun:
    """The reference loop for ``n`` sections with random "sampled" latents (seeded per case)."""
    gen = torch.Generator().manual_seed(1000 * n + 10 * lws + (order is SamplingOrder.FORWARD))
    start_latent = torch.randn((1, C, 1, H, W), generator=gen)
    generated = [torch.randn((1, C, lws, H, W), generator=gen) for _ in range(n)]
    run = run_inverted if order is SamplingOrder.INVERTED else run_forward
    return run(start_latent, generated, lws)


def time_ordered(order: SamplingOrder, generated: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sections in time order (the inverted order generates the end of the video first)."""
    return list(reversed(generated)) if order is SamplingOrder.INVERTED else list(generated)


def cat_time(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts, dim=2) if parts else torch.zeros((1, C, 0, H, W))


def exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# 1. Section counts and paddings
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", ALL_N)
def test_latent_paddings_match_reference(n):
    paddings = latent_paddings(n)
    assert paddings == reference_paddings(n)
    assert len(paddings) == n
    assert paddings[-1] == 0 and all(p > 0 for p in paddings[:-1])


@pytest.mark.parametrize("lws", [9, 1, 2, 5])
def test_frames_for_sections(lws):
    for n in ALL_N:
        assert frames_for_sections(n, lws) == 4 * n * lws + 1


@pytest.mark.parametrize("lws", [9, 1, 2, 5])
def test_num_sections_against_reference(lws):
    for num_frames in range(30, 1801):
        ours = num_sections(num_frames, lws)
        # Documented rule: the fewest sections (at least one) that give at least num_frames frames.
        fewest = next(k for k in range(1, 10_000) if 4 * k * lws + 1 >= num_frames)
        assert ours == fewest, num_frames
        assert frames_for_sections(ours, lws) >= num_frames
        assert ours == 1 or frames_for_sections(ours - 1, lws) < num_frames

        # The reference's count for the same length in seconds (30 fps).
        seconds = num_frames / 30
        ref = reference_sections_from_seconds(seconds, lws)
        assert reference_num_sections(seconds, lws) == ref, num_frames
        # The reference rounds, so it may fall one section short; where it reaches num_frames they agree.
        assert ref <= ours <= ref + 1, num_frames
        assert (ours == ref) == (frames_for_sections(ref, lws) >= num_frames), num_frames
        if (num_frames - 1) % (4 * lws) == 0:
            assert ours == ref == (num_frames - 1) // (4 * lws)


def test_reference_num_sections_over_ui_slider():
    """The demo's slider: 1..120 s in steps of 0.1, for every window size tried."""
    for lws in (9, 1, 2, 5):
        for tenths in range(10, 1201):
            seconds = tenths / 10
            assert reference_num_sections(seconds, lws) == reference_sections_from_seconds(seconds, lws)


@pytest.mark.parametrize(("num_frames", "expected"), [(30, 1), (31, 1), (37, 1), (38, 2), (180, 5), (1800, 50)])
def test_num_sections_edge_cases(num_frames, expected):
    assert num_sections(num_frames, 9) == expected


# --------------------------------------------------------------------------------------------------
# 2. RoPE index splits
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("lws", "n"), CASES, ids=CASE_IDS)
def test_plan_sections_match_reference_indices(order, lws, n):
    ref = reference_run(order, n, lws)
    plan = plan_sections(order, n, lws)
    assert len(plan) == len(ref.sections) == n
    for k, (ours, theirs) in enumerate(zip(plan, ref.sections, strict=True)):
        assert ours.index == k and ours.count == n
        assert ours.padding == theirs.latent_padding
        assert ours.is_first == (k == 0)
        assert ours.is_last == theirs.is_last_section
        assert ours.indices == section_indices(order, lws, theirs.latent_padding)
        idx = ours.indices
        assert idx.latents == theirs.latent_indices.squeeze(0).tolist()
        assert idx.clean == theirs.clean_latent_indices.squeeze(0).tolist()
        assert idx.history_2x == theirs.clean_latent_2x_indices.squeeze(0).tolist()
        assert idx.history_4x == theirs.clean_latent_4x_indices.squeeze(0).tolist()
        tensors = idx.as_tensors()
        assert torch.equal(tensors["indices_latents"], theirs.latent_indices.squeeze(0))
        assert torch.equal(tensors["indices_latents_clean"], theirs.clean_latent_indices.squeeze(0))
        assert torch.equal(tensors["indices_latents_history_2x"], theirs.clean_latent_2x_indices.squeeze(0))
        assert torch.equal(tensors["indices_latents_history_4x"], theirs.clean_latent_4x_indices.squeeze(0))


def test_section_indices_documented_examples():
    inv = section_indices(SamplingOrder.INVERTED, 9, 3)
    assert inv.clean == [0, 37] and inv.latents == list(range(28, 37))
    assert inv.history_2x == [38, 39] and inv.history_4x == list(range(40, 56))
    last = section_indices(SamplingOrder.INVERTED, 9, 0)
    assert last.clean == [0, 10] and last.latents == list(range(1, 10))
    assert last.history_2x == [11, 12] and last.history_4x == list(range(13, 29))
    fwd = section_indices(SamplingOrder.FORWARD, 9)
    assert fwd.clean == [0, 19] and fwd.latents == list(range(20, 29))
    assert fwd.history_2x == [17, 18] and fwd.history_4x == list(range(1, 17))


# --------------------------------------------------------------------------------------------------
# 3. History context
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("lws", "n"), CASES, ids=CASE_IDS)
def test_history_context_matches_reference_buffer(order, lws, n):
    ref = reference_run(order, n, lws)
    for k, theirs in enumerate(ref.sections):
        # What has been generated before section k, in time order, without the start latent.
        so_far = cat_time(time_ordered(order, ref.generated[:k]))
        one, two, four = history_context(order, so_far, ref.start_latent)
        assert one.shape == (1, C, 1, H, W) and two.shape == (1, C, 2, H, W) and four.shape == (1, C, 16, H, W)
        exact(one, theirs.clean_latents_1x)
        exact(two, theirs.clean_latents_2x)
        exact(four, theirs.clean_latents_4x)
        exact(torch.cat([ref.start_latent, one], dim=2), theirs.clean_latents)


# --------------------------------------------------------------------------------------------------
# 4. Decoded video and section placement
# --------------------------------------------------------------------------------------------------


def test_fake_vae_depends_on_window_position():
    z = torch.randn((1, C, 4, H, W), generator=torch.Generator().manual_seed(0))
    assert fake_vae_decode(z).shape == (1, C, 13, H, W)
    # Latents 1..2 decoded from a window starting at 0 vs one starting at 1: different pixels.
    assert not torch.allclose(fake_vae_decode(z[:, :, 0:3])[:, :, 5:9], fake_vae_decode(z[:, :, 1:3])[:, :, 1:5])


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("lws", "n"), CASES, ids=CASE_IDS)
def test_section_span_matches_reference_history(order, lws, n):
    ref = reference_run(order, n, lws)
    final = ref.real_history_latents
    assert final.shape[2] == 1 + n * lws
    exact(final[:, :, :1], ref.start_latent)
    # Our time-ordered sequence [start, generated...] is the reference's final history.
    exact(cat_time([ref.start_latent, *time_ordered(order, ref.generated)]), final)
    for k in range(n):
        a, b = section_span(order, k, n, lws)
        assert b - a == lws
        exact(final[:, :, a:b], ref.generated[k])


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("lws", "n"), CASES, ids=CASE_IDS)
def test_decoded_video_matches_reference(order, lws, n):
    ref = reference_run(order, n, lws)
    latents = cat_time([ref.start_latent, *time_ordered(order, ref.generated)])
    windows = decode_windows(order, n, lws)
    assert windows == sorted(windows)
    assert windows[0][0] == 0 and windows[-1][1] == 1 + n * lws
    blender = OverlapBlender(overlap_frames(lws))
    assert overlap_frames(lws) == lws * 4 - 3
    parts = [
        blender.push(fake_vae_decode(latents[:, :, a:b]), last=i == len(windows) - 1)
        for i, (a, b) in enumerate(windows)
    ]
    video = torch.cat(parts, dim=2)
    assert ref.history_pixels.shape[2] == frames_for_sections(n, lws) == 4 * n * lws + 1
    assert video.shape == ref.history_pixels.shape
    exact(video, ref.history_pixels)


# --------------------------------------------------------------------------------------------------
# 5. Edge cases
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [1, 6, 33])
def test_overlap_blender_single_window(overlap):
    window = torch.randn((1, C, 37, H, W), generator=torch.Generator().manual_seed(overlap))
    out = OverlapBlender(overlap).push(window, last=True)
    assert torch.equal(out, window)


def test_overlap_blender_two_windows_is_soft_append():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn((1, C, 40, H, W), generator=g), torch.randn((1, C, 30, H, W), generator=g)
    blender = OverlapBlender(7)
    first = blender.push(a)
    assert first.shape[2] == 33
    out = torch.cat([first, blender.push(b, last=True)], dim=2)
    exact(out, soft_append_bcthw(a, b, 7))
    assert out.shape[2] == 40 + 30 - 7
