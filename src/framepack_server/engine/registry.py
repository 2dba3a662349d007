"""The table of models: which repos, folders, classes and dtypes make each one.

One place names every published repo the engine reads. The tiny models use the very same
component table with other repo names: the tiny builder writes them into a local folder in the
published layout, and `loading.py` reads real and tiny models through one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class SamplingOrder(StrEnum):
    """How sections are generated: FramePack's inverted anti-drifting order, or F1's forward order."""

    INVERTED = "inverted"
    FORWARD = "forward"


@dataclass(frozen=True)
class Component:
    """One model component: where it lives and how it is loaded."""

    name: str  # attribute name on `Components` (text_encoder, vae, ...)
    repo: str  # hub repo id (owner/name)
    subfolder: str  # "" for the repo root
    library: str  # "diffusers" or "transformers"
    class_name: str
    cuda_dtype: str  # dtype on a GPU, as the reference uses it; fp32 on the CPU
    files: tuple[str, ...]  # allow-patterns relative to the subfolder, for `framepack download`


HUNYUAN = "hunyuanvideo-community/HunyuanVideo"
REDUX = "lllyasviel/flux_redux_bfl"
WEIGHTS = ("*.json", "*.safetensors", "*.safetensors.index.json")
TOKENIZER = ("*.json", "*.model", "*.txt")


def _base_components(hunyuan: str, redux: str) -> tuple[Component, ...]:
    return (
        Component("text_encoder", hunyuan, "text_encoder", "transformers", "LlamaModel", "float16", WEIGHTS),
        Component("text_encoder_2", hunyuan, "text_encoder_2", "transformers", "CLIPTextModel", "float16", WEIGHTS),
        Component("tokenizer", hunyuan, "tokenizer", "transformers", "AutoTokenizer", "", TOKENIZER),
        Component("tokenizer_2", hunyuan, "tokenizer_2", "transformers", "CLIPTokenizer", "", TOKENIZER),
        Component("vae", hunyuan, "vae", "diffusers", "AutoencoderKLHunyuanVideo", "float16", WEIGHTS),
        Component(
            "feature_extractor",
            redux,
            "feature_extractor",
            "transformers",
            "SiglipImageProcessor",
            "",
            ("*.json",),
        ),
        Component("image_encoder", redux, "image_encoder", "transformers", "SiglipVisionModel", "float16", WEIGHTS),
    )


def _transformer(repo: str) -> Component:
    return Component(
        "transformer", repo, "", "diffusers", "HunyuanVideoFramepackTransformer3DModel", "bfloat16", WEIGHTS
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    order: SamplingOrder
    components: tuple[Component, ...]
    tiny_preset: str | None = None  # set for random-weight models that `tiny.py` builds locally
    # Sizes (width, height) by (resolution, aspect_ratio). Real models: FramePack was trained on
    # ~640-pixel buckets; 480p is the 832x480 bucket, 720p a true 1280x720 (multiples of 16).
    sizes: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    expected_crop_start: int | None = None  # the template prefix length of the published tokenizer

    @property
    def repos(self) -> list[str]:
        return sorted({c.repo for c in self.components})

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)


REAL_SIZES = {
    ("480p", "16:9"): (832, 480),
    ("480p", "9:16"): (480, 832),
    ("720p", "16:9"): (1280, 720),
    ("720p", "9:16"): (720, 1280),
}
# Tiny models exist to test the code on a CPU: they render at about one tenth of the real size.
TINY_SIZES = {
    ("480p", "16:9"): (80, 48),
    ("480p", "9:16"): (48, 80),
    ("720p", "16:9"): (112, 64),
    ("720p", "9:16"): (64, 112),
}


def _tiny(name: str, order: SamplingOrder, preset: str, description: str) -> ModelSpec:
    hunyuan, redux = f"framepack-tiny/{preset}-HunyuanVideo", f"framepack-tiny/{preset}-flux_redux_bfl"
    return ModelSpec(
        name=name,
        description=description,
        order=order,
        components=(*_base_components(hunyuan, redux), _transformer(f"framepack-tiny/{name}-transformer")),
        tiny_preset=preset,
        sizes=TINY_SIZES,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="framepack",
            description="FramePack I2V (HunyuanVideo 13B), inverted anti-drifting sampling",
            order=SamplingOrder.INVERTED,
            components=(*_base_components(HUNYUAN, REDUX), _transformer("lllyasviel/FramePackI2V_HY")),
            sizes=REAL_SIZES,
            expected_crop_start=95,
        ),
        ModelSpec(
            name="framepack-f1",
            description="FramePack-F1 I2V (HunyuanVideo 13B), forward sampling",
            order=SamplingOrder.FORWARD,
            components=(
                *_base_components(HUNYUAN, REDUX),
                _transformer("lllyasviel/FramePack_F1_I2V_HY_20250503"),
            ),
            sizes=REAL_SIZES,
            expected_crop_start=95,
        ),
        _tiny("tiny", SamplingOrder.INVERTED, "tiny", "random tiny weights, inverted order (tests, offline)"),
        _tiny("tiny-f1", SamplingOrder.FORWARD, "tiny", "random tiny weights, forward order (tests, offline)"),
        _tiny("small", SamplingOrder.INVERTED, "small", "random weights, transformer-heavy (benchmarks)"),
        _tiny("small-f1", SamplingOrder.FORWARD, "small", "random weights, transformer-heavy (benchmarks)"),
    )
}


def get_spec(name: str) -> ModelSpec:
    from ..errors import InputError

    try:
        return MODELS[name]
    except KeyError:
        raise InputError("model", f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
