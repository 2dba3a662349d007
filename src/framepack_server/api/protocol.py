"""Wire schemas of WaveSpeedAI's v3 API as our server speaks it, apart from everything else.

Clients written for api.wavespeed.ai (the official `wavespeed` SDK, wavespeed-mcp, scripts) must work
unchanged, so the shapes follow the protocol notes in shared/reference/wavespeed-protocol.md:
every answer is ``{"code", "message", "data"}``; a prediction's ``error`` lives inside ``data`` and is
"" unless it failed; no 200 answer carries a top-level ``error`` key. Value ranges are checked once,
by `engine.request.GenerationParams`; this module only describes types and shapes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["created", "processing", "completed", "failed", "cancelled"]

# Model paths served, by the model of ours each runs.
MODEL_PATHS = {"wavespeed-ai/framepack": "framepack", "wavespeed-ai/framepack-f1": "framepack-f1"}


class PredictionInput(BaseModel):
    """The flat JSON body of ``POST /api/v3/wavespeed-ai/framepack``. Unknown fields are ignored
    (real clients send extra ones). Unset fields take the defaults of the API table."""

    model_config = ConfigDict(extra="ignore")

    image: str = Field(description="http(s) URL, data URI, naked base64, or one of our upload URLs")
    prompt: str
    negative_prompt: str | None = None
    aspect_ratio: str | None = Field(default=None, description="16:9 (default) or 9:16")
    resolution: str | None = Field(default=None, description="720p (default) or 480p")
    seed: int | None = Field(default=None, description="-1 (default) draws a random seed")
    num_inference_steps: int | None = Field(default=None, description="4-50, default 25")
    num_frames: int | None = Field(default=None, description="30-1800, default 180; output at 30 fps")
    guidance_scale: float | None = Field(default=None, description="0-32, default 10 (distilled guidance)")
    enable_safety_checker: bool = True
    enable_sync_mode: bool = False
    enable_base64_output: bool = False
    # Extensions of ours
    last_image: str | None = Field(default=None, description="end image (framepack model only)")
    true_cfg_scale: float | None = Field(default=None, description="1-32; > 1 enables true CFG")
    sampler: str | None = Field(default=None, description="unipc (default) or euler")
    latent_window_size: int | None = Field(default=None, description="1-33, default 9")
    enable_teacache: bool | None = Field(
        default=None, description="skip transformer steps whose input barely changed: faster, not exact (default false)"
    )
    teacache_threshold: float | None = Field(default=None, description="0-1, default 0.15; higher skips more")

    WIRE_ONLY: ClassVar[tuple[str, ...]] = ("enable_safety_checker", "enable_sync_mode", "enable_base64_output")

    def engine_fields(self) -> dict[str, Any]:
        """The fields the engine's request takes (unset ones left to its defaults)."""
        return self.model_dump(exclude_none=True, exclude=set(self.WIRE_ONLY))


class Urls(BaseModel):
    get: str


class Timings(BaseModel):
    inference: int | None = None


class ProgressInfo(BaseModel):
    """Extension: where a processing job is."""

    phase: str
    section: int
    sections: int
    step: int
    steps: int
    eta_seconds: float | None = None
    preview: str | None = Field(default=None, description="signed URL of the latest preview image")


class Prediction(BaseModel):
    id: str
    model: str
    outputs: list[str] = Field(default_factory=list)
    urls: Urls
    has_nsfw_contents: list[bool] = Field(default_factory=list)
    status: Status
    created_at: str
    error: str = ""
    executionTime: int = 0  # noqa: N815 - the protocol's spelling
    timings: Timings = Field(default_factory=Timings)
    input: dict[str, Any] | None = None
    progress: ProgressInfo | None = None
    seed: int | None = Field(default=None, description="extension: the seed used")
    code: int | None = Field(default=None, description="5004 when sync mode timed out (the job goes on)")


class PredictionEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: Prediction


class PredictionPage(BaseModel):
    items: list[Prediction]
    page: int
    page_size: int
    total: int


class PredictionPageEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: PredictionPage


class ErrorEnvelope(BaseModel):
    code: int
    message: str
    field: str | None = Field(default=None, description="extension: the request field at fault")


class UploadTicketRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filename: str = "upload"
    size: int | None = Field(default=None, ge=0, strict=True)
    content_type: str | None = None


class UploadTarget(BaseModel):
    method: Literal["PUT"] = "PUT"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)


class UploadTicket(BaseModel):
    upload: UploadTarget
    download_url: str
    url: str


class UploadTicketEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: UploadTicket


class UploadedFile(BaseModel):
    type: str
    download_url: str
    url: str
    filename: str
    size: int


class UploadedFileEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: UploadedFile
