"""What a generation asks for: the request fields, their ranges, and how they map to a video.

These are the fields of WaveSpeed's FramePack API plus our extensions. The HTTP layer keeps its own
wire schema; it converts to this model, and every range check lives here, once.
"""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InputError
from .registry import ModelSpec, SamplingOrder, get_spec
from .timeline import frames_for_sections, num_sections

MAX_SEED = 2_147_483_647
SAMPLER_NAMES = ("unipc", "euler")  # engine/samplers.py implements each


class GenerationParams(BaseModel):
    """One generation request. ``image`` and ``last_image`` are references (path, URL, data URI or
    base64) that `media.images` reads; the engine receives the decoded pictures alongside.
    ``seed=-1`` draws a random seed (see `resolved`)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=10_000)
    negative_prompt: str = Field(default="", max_length=10_000)
    aspect_ratio: Literal["16:9", "9:16"] = "16:9"
    resolution: Literal["480p", "720p"] = "720p"
    seed: int = Field(default=-1, ge=-1, le=MAX_SEED)
    num_inference_steps: int = Field(default=25, ge=4, le=50)
    num_frames: int = Field(default=180, ge=30, le=1800)
    guidance_scale: float = Field(default=10.0, ge=0.0, le=32.0)
    # Extensions
    model: str = "framepack"
    true_cfg_scale: float = Field(default=1.0, ge=1.0, le=32.0)
    sampler: str = "unipc"
    latent_window_size: int = Field(default=9, ge=1, le=33)
    last_image: str | None = None
    # TeaCache (engine/caches.py): off by default so that the default path stays exact
    enable_teacache: bool = False
    teacache_threshold: float = Field(default=0.15, ge=0.0, le=1.0)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in SAMPLER_NAMES:
            raise ValueError(f"must be one of {', '.join(SAMPLER_NAMES)}")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        try:
            get_spec(value)
        except InputError as exc:
            raise ValueError(exc.message) from None
        return value

    @classmethod
    def parse(cls, **fields: object) -> GenerationParams:
        """Validate, turning the first problem into an InputError that names its field."""
        try:
            params = cls(**fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "request"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            raise InputError(field, message) from None
        except InputError:
            raise
        if params.last_image and params.spec.order is not SamplingOrder.INVERTED:
            raise InputError("last_image", f"an end image needs an inverted-order model, not {params.model!r}")
        return params

    @property
    def spec(self) -> ModelSpec:
        return get_spec(self.model)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the video."""
        return self.spec.sizes[(self.resolution, self.aspect_ratio)]

    @property
    def sections(self) -> int:
        return num_sections(self.num_frames, self.latent_window_size)

    @property
    def generated_frames(self) -> int:
        """Frames the sections produce before the surplus beyond ``num_frames`` is trimmed."""
        return frames_for_sections(self.sections, self.latent_window_size)

    def resolved(self) -> GenerationParams:
        """A copy with a concrete seed (``-1`` drawn at random), so that the run can be repeated."""
        if self.seed != -1:
            return self
        return self.model_copy(update={"seed": secrets.randbelow(MAX_SEED + 1)})
