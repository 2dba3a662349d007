"""Streaming MP4 (H.264) output on PyAV, plus small read-back helpers.

:class:`Mp4Writer` encodes frames as they arrive, so memory stays flat however long the
video is: the caller hands over chunks of ``uint8`` RGB frames (``(T, H, W, 3)``, any
``T``) and each frame goes straight into the libx264 encoder and the muxer.

The output file is

* H.264 (libx264), ``yuv420p`` (plays everywhere), quality set by ``crf`` (default 16,
  visually lossless for generated video) and ``preset``;
* exactly ``fps`` frames per second: frame *i* has ``pts = i`` in a ``1/fps`` time base,
  so there is no timestamp rounding and the container reports ``fps`` exactly (the MP4
  muxer picks its own, finer stream time base such as ``1/15360``; packets are rescaled
  into it without loss);
* tagged BT.601, limited range, which is the matrix PyAV's RGB to YUV conversion uses;
* "fast start": the ``movflags=+faststart`` muxer option moves the ``moov`` atom in
  front of ``mdat`` when the file is finalised, so browsers can start playing before
  the download ends.  This needs a seekable output, which a local file is;
* written atomically: everything goes to a hidden temporary file in the destination
  folder (``.NAME.partial-RANDOM``, always muxed as ``mp4`` whatever its name) and
  :meth:`Mp4Writer.close` renames it onto the final path with :func:`os.replace`.  A
  failure or cancel calls :meth:`Mp4Writer.abort`, which removes the temporary file,
  so a half-written video is never visible under the final name.  Used as a context
  manager, the writer closes on success and aborts on an exception.

Width and height must be even (a ``yuv420p`` requirement); odd sizes are a programming
error and raise :class:`ValueError`.

:func:`frames_to_uint8` turns the decoder's float output into frames for the writer;
:func:`probe_video` and :func:`read_frames` read a file back (tests and tools).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import av
import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["Mp4Writer", "VideoInfo", "frames_to_uint8", "probe_video", "read_frames"]

_SMPTE170M = 6  # AVCOL_SPC / AVCOL_PRI / AVCOL_TRC_SMPTE170M: BT.601 (525 lines)
_MPEG_RANGE = 1  # AVCOL_RANGE_MPEG: limited ("TV") range


class Mp4Writer:
    """Encode RGB frames into an H.264 MP4 file, one frame at a time.

    >>> with Mp4Writer("out.mp4", width=640, height=480, fps=30) as w:  # doctest: +SKIP
    ...     for chunk in chunks:
    ...         w.write(chunk)  # uint8 (T, 480, 640, 3)

    Not thread-safe: use one writer from one thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: int = 30,
        crf: int = 16,
        preset: str = "medium",
    ) -> None:
        if int(width) != width or int(height) != height or width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive integers, got {width}x{height}")
        if width % 2 or height % 2:
            raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
        if int(fps) != fps or fps <= 0:
            raise ValueError(f"fps must be a positive integer, got {fps!r}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf!r}")

        self._path = Path(path)
        self._width = int(width)
        self._height = int(height)
        self._fps = int(fps)
        self._time_base = Fraction(1, self._fps)
        self._frames_written = 0
        self._closed = False
        self._tmp_path = self._path.with_name(f".{self._path.name}.partial-{secrets.token_hex(6)}")

        self._container = av.open(str(self._tmp_path), mode="w", format="mp4", options={"movflags": "+faststart"})
        try:
            stream = self._container.add_stream("libx264", rate=self._fps)
            stream.width = self._width
            stream.height = self._height
            stream.pix_fmt = "yuv420p"
            ctx = stream.codec_context
            ctx.time_base = self._time_base
            # PyAV converts RGB to yuv420p with swscale's default BT.601 matrix, limited
            # range; say so in the stream, or players guess (often BT.709 for HD sizes).
            ctx.colorspace = ctx.color_primaries = ctx.color_trc = _SMPTE170M
            ctx.color_range = _MPEG_RANGE
            # mbtree=0: x264's macroblock-tree rate control made identical frames encode differently
            # from run to run (threads finish in varying order); without it the same frames give the
            # same file, so a resumed job's video equals an uninterrupted run's byte for byte.
            stream.options = {"crf": str(int(crf)), "preset": str(preset), "x264-params": "mbtree=0"}
            self._stream = stream
            # Open the file and the encoder now, so a missing folder or a bad preset fails
            # here rather than at the first write (PyAV would otherwise open both lazily).
            self._container.start_encoding()
        except BaseException:
            self._discard()
            raise

    @property
    def path(self) -> Path:
        """The final path the video appears under after :meth:`close`."""
        return self._path

    @property
    def frames_written(self) -> int:
        """Number of frames handed to the encoder so far."""
        return self._frames_written

    def write(self, frames: np.ndarray) -> None:
        """Encode ``frames``: ``uint8`` RGB of shape ``(T, height, width, 3)``, any ``T >= 0``."""
        if self._closed:
            raise ValueError("write() on a closed Mp4Writer")
        if not isinstance(frames, np.ndarray):
            raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        expected = (self._height, self._width, 3)
        if frames.ndim != 4 or frames.shape[1:] != expected:
            raise ValueError(f"frames must have shape (T, {self._height}, {self._width}, 3), got {frames.shape}")
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self._frames_written
            video_frame.time_base = self._time_base
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
            self._frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, finalise the file (faststart pass) and rename it to :attr:`path`.

        Closing a writer that got no frames is an error (:class:`ValueError`; the temporary
        file is removed).  On any failure the temporary file is removed and the exception
        propagates.
        """
        if self._closed:
            raise ValueError("Mp4Writer is already closed")
        if self._frames_written == 0:
            self._discard()
            raise ValueError("no frames were written; an empty video is not produced")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._closed = True
            os.replace(self._tmp_path, self._path)
        except BaseException:
            self._discard()
            raise
        return self._path

    def abort(self) -> None:
        """Stop writing and delete the temporary file. Safe to call more than once."""
        self._discard()

    def _discard(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._container.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp_path.unlink()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            if not self._closed:
                self.close()
        else:
            self.abort()


def frames_to_uint8(video: torch.Tensor) -> np.ndarray:
    """Turn decoder output into frames for :class:`Mp4Writer`.

    ``video`` is ``(C, T, H, W)`` or ``(1, C, T, H, W)`` with ``C == 3``, floats in
    ``[-1, 1]``, on any device.  The mapping is FramePack's: ``clamp(-1, 1) * 127.5 + 127.5``
    in float32, then truncation (not rounding) to ``uint8``.  Returns ``(T, H, W, 3)``.
    """
    import torch

    if video.ndim == 5:
        if video.shape[0] != 1:
            raise ValueError(f"expected a batch of one video, got shape {tuple(video.shape)}")
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected (C=3, T, H, W) or (1, 3, T, H, W), got shape {tuple(video.shape)}")
    x = (video.detach().float().clamp(-1.0, 1.0) * 127.5 + 127.5).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().cpu().numpy()


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found in the first video stream of a file."""

    frames: int
    fps: float
    width: int
    height: int
    codec: str
    pix_fmt: str


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe a video file; ``frames`` is counted by decoding every frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frames = sum(1 for _ in container.decode(stream))
        ctx = stream.codec_context
        return VideoInfo(
            frames=frames,
            fps=float(rate) if rate else 0.0,
            width=ctx.width,
            height=ctx.height,
            codec=ctx.name,
            pix_fmt=ctx.pix_fmt or "",
        )


def read_frames(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode every frame of the first video stream to ``uint8`` RGB ``(T, H, W, 3)``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        if not frames:
            return np.zeros((0, stream.codec_context.height, stream.codec_context.width, 3), np.uint8)
        return np.stack(frames)
