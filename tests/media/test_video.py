"""Tests for the streaming MP4 writer and its read-back helpers."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from framepack_server.media.video import Mp4Writer, frames_to_uint8, probe_video, read_frames

W, H = 64, 48


def top_level_boxes(path: Path) -> list[str]:
    """The top-level ISO BMFF box types of ``path``, in file order."""
    data = path.read_bytes()
    boxes: list[str] = []
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", data[offset + 8 : offset + 16])
        elif size == 0:
            size = len(data) - offset
        assert size >= 8, f"bad box size {size} at {offset}"
        boxes.append(kind.decode("latin-1"))
        offset += size
    assert offset == len(data)
    return boxes


def random_frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


def gradient_frames(n: int) -> np.ndarray:
    """A smooth colour gradient drifting slowly from frame to frame (no hard edges)."""
    x = np.linspace(0.0, 1.0, W)[None, :]
    y = np.linspace(0.0, 1.0, H)[:, None]
    frames = []
    for i in range(n):
        r = 20 + 200 * x + 2 * i + 0 * y
        g = 40 + 180 * y + 0 * x
        b = 50 + 75 * (x + y) + i
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def no_partials(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".partial-" in p.name]


def test_faststart_puts_moov_before_mdat(tmp_path: Path) -> None:
    out = tmp_path / "fast.mp4"
    with Mp4Writer(out, W, H) as writer:
        writer.write(random_frames(10))
    boxes = top_level_boxes(out)
    assert boxes[0] == "ftyp"
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat")


@pytest.mark.parametrize("count", [30, 31, 181])
def test_frame_count_and_fps_exact(tmp_path: Path, count: int) -> None:
    out = tmp_path / f"n{count}.mp4"
    writer = Mp4Writer(out, W, H, fps=30, preset="ultrafast")
    # Uneven chunks, including an empty one: the writer streams frame by frame.
    frames = random_frames(count)
    for start, stop in [(0, 1), (1, 1), (1, 17), (17, count)]:
        writer.write(frames[start:stop])
    assert writer.frames_written == count
    assert writer.close() == out
    info = probe_video(out)
    assert info.frames == count
    assert info.fps == 30.0
    assert (info.width, info.height) == (W, H)
    assert info.codec == "h264"
    assert info.pix_fmt == "yuv420p"
    assert no_partials(tmp_path)


def test_colour_tags_match_the_conversion(tmp_path: Path) -> None:
    out = tmp_path / "tags.mp4"
    with Mp4Writer(out, W, H, preset="ultrafast") as writer:
        writer.write(random_frames(2))
    with av.open(str(out)) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.colorspace, ctx.color_primaries, ctx.color_trc) == (6, 6, 6)  # SMPTE 170M
        assert ctx.color_range == 1  # limited


@pytest.mark.parametrize("fps", [24, 25, 60])
def test_other_frame_rates_exact(tmp_path: Path, fps: int) -> None:
    out = tmp_path / "rate.mp4"
    with Mp4Writer(out, W, H, fps=fps, preset="ultrafast") as writer:
        writer.write(random_frames(fps + 1))
    info = probe_video(out)
    assert info.fps == float(fps)
    assert info.frames == fps + 1


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "crash.mp4"
    with pytest.raises(RuntimeError, match="boom"), Mp4Writer(out, W, H) as writer:
        writer.write(random_frames(5))
        assert list(tmp_path.iterdir()), "the temporary file exists while writing"
        raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_abort_removes_temp_file_and_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "aborted.mp4"
    writer = Mp4Writer(out, W, H)
    writer.write(random_frames(3))
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        writer.write(random_frames(1))


def test_temp_file_is_hidden_in_same_folder_until_close(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    writer = Mp4Writer(out, W, H)
    writer.write(random_frames(2))
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith(".clip.mp4.partial-")
    assert not out.exists()
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_close_replaces_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "again.mp4"
    out.write_bytes(b"old")
    with Mp4Writer(out, W, H, preset="ultrafast") as writer:
        writer.write(random_frames(4))
    assert probe_video(out).frames == 4


def test_high_quality_round_trip_is_close(tmp_path: Path) -> None:
    out = tmp_path / "hq.mp4"
    frames = gradient_frames(8)
    with Mp4Writer(out, W, H, crf=0) as writer:
        writer.write(frames)
    back = read_frames(out)
    assert back.shape == frames.shape
    assert back.dtype == np.uint8
    # crf 0 is lossless in YUV; the RGB -> yuv420p -> RGB conversion itself loses a little
    # (limited range, chroma subsampling, rounding: ~1.5 mean here), small on a smooth gradient.
    diff = np.abs(back.astype(np.int16) - frames.astype(np.int16))
    assert diff.mean() < 2.0
    assert diff.max() <= 8


def test_default_crf_round_trip_reasonable(tmp_path: Path) -> None:
    out = tmp_path / "crf16.mp4"
    frames = gradient_frames(5)
    with Mp4Writer(out, W, H) as writer:
        writer.write(frames)
    diff = np.abs(read_frames(out).astype(np.int16) - frames.astype(np.int16))
    assert diff.mean() < 4.0


@pytest.mark.parametrize("size", [(63, 48), (64, 47), (0, 48)])
def test_odd_or_bad_size_rejected(tmp_path: Path, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        Mp4Writer(tmp_path / "odd.mp4", *size)
    assert list(tmp_path.iterdir()) == []


def test_bad_frames_rejected(tmp_path: Path) -> None:
    with Mp4Writer(tmp_path / "x.mp4", W, H, preset="ultrafast") as writer:
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((1, H, W + 2, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((1, H, W, 3), np.float32))
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((H, W, 3), np.uint8))
        writer.write(np.zeros((1, H, W, 3), np.uint8))
    assert probe_video(tmp_path / "x.mp4").frames == 1


def test_non_contiguous_frames_accepted(tmp_path: Path) -> None:
    frames = random_frames(3)
    flipped = frames[:, ::-1, ::-1]  # negative strides
    with Mp4Writer(tmp_path / "nc.mp4", W, H, crf=0) as writer:
        writer.write(flipped)
    assert read_frames(tmp_path / "nc.mp4").shape == frames.shape


def test_close_without_frames_is_an_error(tmp_path: Path) -> None:
    writer = Mp4Writer(tmp_path / "empty.mp4", W, H)
    writer.write(np.zeros((0, H, W, 3), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Mp4Writer(tmp_path / "nope" / "x.mp4", W, H)


def test_frames_to_uint8_matches_reference() -> None:
    torch.manual_seed(0)
    video = torch.rand(1, 3, 4, 6, 8) * 2.4 - 1.2  # includes values outside [-1, 1]
    video[0, 0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 0.0, 0.999])
    out = frames_to_uint8(video)
    assert out.shape == (4, 6, 8, 3) and out.dtype == np.uint8
    reference = (video.clamp(-1, 1) * 127.5 + 127.5).to(torch.uint8)[0].permute(1, 2, 3, 0).numpy()
    np.testing.assert_array_equal(out, reference)
    # truncation, not rounding: 0.0 -> 127.5 -> 127, 0.999 -> 254.87 -> 254
    assert out[0, 0, :4, 0].tolist() == [0, 255, 127, 254]
    np.testing.assert_array_equal(frames_to_uint8(video[0]), out)


def test_frames_to_uint8_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        frames_to_uint8(torch.zeros(2, 3, 1, 4, 4))
    with pytest.raises(ValueError):
        frames_to_uint8(torch.zeros(4, 1, 4, 4))


def test_frames_to_uint8_feeds_writer(tmp_path: Path) -> None:
    video = torch.linspace(-1, 1, 3 * 2 * H * W).reshape(1, 3, 2, H, W)
    with Mp4Writer(tmp_path / "t.mp4", W, H, preset="ultrafast") as writer:
        writer.write(frames_to_uint8(video))
    assert probe_video(tmp_path / "t.mp4").frames == 2
