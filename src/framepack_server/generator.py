"""The Python API: load a model once, turn images and prompts into MP4 files.

    from framepack_server import FramePack
    fp = FramePack("framepack")            # or "framepack-f1", "tiny" ...
    result = fp.generate(image="cat.png", prompt="the cat dances", num_frames=150, out="cat.mp4")
    print(result.seed, result.frames, result.width, result.height)

It is the path every front end takes (CLI, worker): read the images, validate the request, stream
the engine's frames into the MP4 writer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .config import Settings, get_settings
from .engine.checkpoint import CheckpointStore
from .engine.generate import Engine, ProgressFn
from .engine.request import GenerationParams
from .engine.timeline import FPS
from .media.images import load_image
from .media.video import Mp4Writer


@dataclass(frozen=True)
class VideoResult:
    path: Path
    seed: int
    frames: int
    width: int
    height: int
    fps: int
    sections: int
    seconds: float  # wall time of the generation
    params: GenerationParams
    samples: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # frames kept by index


def read_images(params: GenerationParams, settings: Settings) -> tuple[Image.Image, Image.Image | None]:
    """Read the request's image references (URLs under the settings' fetch policy); errors name the field."""
    policy = settings.fetch_policy
    image = load_image(params.image, "image", fetch_policy=policy)
    last = load_image(params.last_image, "last_image", fetch_policy=policy) if params.last_image else None
    return image, last


class FramePack:
    def __init__(
        self,
        model: str = "framepack",
        *,
        settings: Settings | None = None,
        device: str | None = None,
        memory: str | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.engine = Engine.load(model, settings=self.settings, device=device, memory=memory)
        self.model = model

    def generate(
        self,
        image: str | os.PathLike | Image.Image,
        prompt: str,
        *,
        out: str | os.PathLike,
        last_image: str | os.PathLike | Image.Image | None = None,
        on_progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
        **fields: object,
    ) -> VideoResult:
        """Generate one video. ``fields`` are the request fields (num_frames, seed, resolution ...)."""
        pictures = {"image": image, "last_image": last_image}
        refs = {k: (v if isinstance(v, str) else "<image>") for k, v in pictures.items() if v is not None}
        params = GenerationParams.parse(prompt=prompt, model=self.model, **refs, **fields)
        loaded = {
            k: v if isinstance(v, Image.Image) else load_image(os.fspath(v), k, fetch_policy=self.settings.fetch_policy)
            for k, v in pictures.items()
            if v is not None
        }
        return self.render(
            params, loaded["image"], loaded.get("last_image"), out,
            on_progress=on_progress, should_cancel=should_cancel,
        )  # fmt: skip

    def render(
        self,
        params: GenerationParams,
        image: Image.Image,
        last_image: Image.Image | None,
        out: str | os.PathLike,
        *,
        on_progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
        checkpoint: CheckpointStore | None = None,
        keep_frames: Sequence[int] = (),
        should_pause: Callable[[], bool] | None = None,
    ) -> VideoResult:
        """Generate a validated request into ``out`` (written under a temporary name, then renamed).

        ``keep_frames``: frame numbers to hand back in ``result.samples`` (e.g. for a safety check),
        taken as the frames stream past, so the video is never read back.
        """
        params = params.resolved()
        width, height = params.size
        started = time.monotonic()
        frames = self.engine.frames(
            params, image, last_image,
            on_progress=on_progress, should_cancel=should_cancel, checkpoint=checkpoint, should_pause=should_pause,
        )  # fmt: skip
        wanted, samples = set(keep_frames), {}
        with Mp4Writer(out, width, height, fps=FPS, crf=self.settings.crf) as writer:
            for chunk in frames:
                start = writer.frames_written
                samples.update({i: chunk[i - start].copy() for i in wanted if start <= i < start + len(chunk)})
                writer.write(chunk)
        return VideoResult(
            path=Path(out),
            seed=params.seed,
            frames=writer.frames_written,
            width=width,
            height=height,
            fps=FPS,
            sections=params.sections,
            seconds=time.monotonic() - started,
            params=params,
            samples=samples,
        )
