"""Safety checks on generated frames: is any of them not safe for work?

Two backends, both offline once installed (see "Safety checker backends" in the design notes):

* ``classifier``: a transformers image classifier, by default ``Falconsai/nsfw_image_detection``
  (Apache-2.0, the filter black-forest-labs/flux uses). Its weights come from the Hugging Face cache
  or from ``<model_dir>/<owner>/<name>``, like the video models; tests use `build_tiny_classifier`,
  a random-weight model of the same class saved in the same layout.
* ``nudenet``: NudeNet's ONNX detector, shipped inside its wheel. It finds body parts, so the
  policy is a label set and a threshold. It is an optional extra: its wheel carries an AGPL-3.0
  licence file although its metadata says MIT.

A checker looks at a few frames spread over the video (`sample_frames`) and calls the video unsafe
if any of them is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..errors import ModelNotAvailableError

DEFAULT_CLASSIFIER_REPO = "Falconsai/nsfw_image_detection"
FILES = ["config.json", "preprocessor_config.json", "model.safetensors"]
NUDENET_INSTALL = "pip install 'framepack-server[nudenet]'"
BACKENDS = ("classifier", "nudenet", "none")

#: Every label NudeNet 3.4's detector reports.
NUDENET_LABELS = frozenset(
    {
        "FEMALE_GENITALIA_COVERED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_COVERED",
        "FEMALE_BREAST_EXPOSED", "MALE_BREAST_EXPOSED", "BUTTOCKS_COVERED", "BUTTOCKS_EXPOSED", "ANUS_COVERED",
        "ANUS_EXPOSED", "BELLY_COVERED", "BELLY_EXPOSED", "FEET_COVERED", "FEET_EXPOSED", "ARMPITS_COVERED",
        "ARMPITS_EXPOSED", "FACE_FEMALE", "FACE_MALE",
    }
)  # fmt: skip
#: The default unsafe set: exposed genitals, female breasts, buttocks and anus (not faces, feet, ...).
NUDENET_UNSAFE = frozenset(
    {"FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED", "ANUS_EXPOSED"}
)


@dataclass(frozen=True)
class SafetyVerdict:
    """The outcome of one check: ``nsfw`` is True when some image scored at least the threshold."""

    nsfw: bool
    score: float  # the highest unsafe score found (0.0 when nothing unsafe was seen at all)
    detail: str  # e.g. "classifier: nsfw 0.93 on frame 12", "nudenet: FEMALE_BREAST_EXPOSED 0.71 on frame 3"


class SafetyChecker(Protocol):
    """Looks at images; the verdict is unsafe if any image is."""

    name: str

    def check(self, images: list[Image.Image], frame_numbers: Sequence[int] | None = None) -> SafetyVerdict:
        """``frame_numbers`` (one per image) only name the frames in ``detail``; default 0, 1, ..."""
        ...


def sample_frames(total: int, count: int = 8) -> list[int]:
    """``count`` frame indices spread evenly over ``total`` frames, first and last included, sorted, unique."""
    if total < 0 or count < 0:
        raise ValueError(f"total and count must be >= 0, got {total} and {count}")
    count = min(count, total)
    if count <= 1:
        return list(range(count))
    # Rounds half up in integers: steps are >= 1, so the indices stay strictly increasing.
    return [(2 * i * (total - 1) + count - 1) // (2 * (count - 1)) for i in range(count)]


def _verdict(name: str, best: tuple[float, str, int] | None, threshold: float) -> SafetyVerdict:
    """Build the verdict from the highest (score, label, frame) found."""
    if best is None:
        return SafetyVerdict(False, 0.0, f"{name}: nothing unsafe found")
    score, label, frame = best
    return SafetyVerdict(score >= threshold, score, f"{name}: {label} {score:.2f} on frame {frame}")


def _classifier_missing(repo: str, where: str, reason: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"safety classifier {repo!r} is not in {where} ({reason}). Fetch it with `hf download {repo}` "
        f"(needs internet), or put a copy of the repo at <model-dir>/{repo}; or use the nudenet safety backend."
    )


class ClassifierChecker:
    """A transformers image classifier; an image is unsafe if an unsafe label's probability >= threshold."""

    name = "classifier"

    def __init__(
        self,
        model_dir: Path | str,
        threshold: float = 0.5,
        device: str = "cpu",
        unsafe_labels: Sequence[str] = ("nsfw",),
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.threshold = threshold
        self.device = torch.device(device)
        self.processor = AutoImageProcessor.from_pretrained(str(model_dir))
        self.model = AutoModelForImageClassification.from_pretrained(str(model_dir)).to(self.device).eval()
        id2label = {int(i): str(label) for i, label in self.model.config.id2label.items()}
        wanted = {label.lower() for label in unsafe_labels}
        self.unsafe_ids = {i: label for i, label in id2label.items() if label.lower() in wanted}
        if not self.unsafe_ids:
            labels = sorted(id2label.values())
            raise ValueError(f"classifier at {model_dir} has labels {labels}, none of {list(unsafe_labels)}")

    @classmethod
    def from_hub(
        cls,
        repo: str = DEFAULT_CLASSIFIER_REPO,
        model_dir: Path | str | None = None,
        offline: bool | None = None,
        **kwargs: Any,
    ) -> ClassifierChecker:
        """Load ``repo`` from ``<model_dir>/<owner>/<name>`` or, without ``model_dir``, the Hugging Face cache.

        Missing files are downloaded unless ``offline`` (default: the ``HF_HUB_OFFLINE`` variable);
        when they cannot be had, raises `ModelNotAvailableError` (a RuntimeError) saying how to fetch them.
        """
        from huggingface_hub import snapshot_download

        if offline is None:
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        folder = Path(model_dir) / repo if model_dir is not None else None
        if folder is not None and (folder / "config.json").is_file():
            return cls(folder, **kwargs)
        where = str(folder) if folder is not None else "the Hugging Face cache"
        if folder is not None and offline:
            raise _classifier_missing(repo, where, "offline")
        try:
            fetched = snapshot_download(repo, allow_patterns=FILES, local_files_only=offline, local_dir=folder)
        except Exception as exc:  # huggingface_hub raises several kinds for missing or unreachable repos
            raise _classifier_missing(repo, where, "offline" if offline else f"download failed: {exc}") from exc
        return cls(fetched, **kwargs)

    def check(self, images: list[Image.Image], frame_numbers: Sequence[int] | None = None) -> SafetyVerdict:
        """Classify the images in one batch; report the highest unsafe probability."""
        import torch

        if not images:
            return _verdict(self.name, None, self.threshold)
        frames = list(frame_numbers) if frame_numbers is not None else list(range(len(images)))
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.model.dtype)).logits
        probs = logits.float().softmax(-1).cpu()
        best = max(
            (float(probs[n, i]), label, frames[n]) for n in range(len(images)) for i, label in self.unsafe_ids.items()
        )
        return _verdict(self.name, best, self.threshold)


class NudeNetChecker:
    """NudeNet's detector: an image is unsafe if a detection with an unsafe label scores >= threshold."""

    name = "nudenet"

    def __init__(self, threshold: float = 0.5, labels: frozenset[str] | None = None) -> None:
        try:
            from nudenet import NudeDetector
        except ImportError as exc:
            raise RuntimeError(f"the nudenet safety backend needs the nudenet package: {NUDENET_INSTALL}") from exc
        self.labels = NUDENET_UNSAFE if labels is None else frozenset(labels)
        unknown = self.labels - NUDENET_LABELS
        if unknown:
            raise ValueError(f"unknown NudeNet labels {sorted(unknown)}; known: {sorted(NUDENET_LABELS)}")
        self.threshold = threshold
        self.detector = NudeDetector()  # the ONNX file inside the wheel, on the CPU

    @staticmethod
    def _bgr(image: Image.Image) -> np.ndarray:
        """The array ``cv2.imread`` would give for the image file (NudeNet's reference input)."""
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])

    def check(self, images: list[Image.Image], frame_numbers: Sequence[int] | None = None) -> SafetyVerdict:
        """Detect body parts in each image; report the highest-scoring unsafe detection."""
        frames = list(frame_numbers) if frame_numbers is not None else list(range(len(images)))
        unsafe = [
            (float(found["score"]), str(found["class"]), frame)
            for image, frame in zip(images, frames, strict=True)
            for found in self.detector.detect(self._bgr(image))
            if found["class"] in self.labels
        ]
        return _verdict(self.name, max(unsafe, default=None), self.threshold)


class DisabledChecker:
    """The ``none`` backend: every check passes."""

    name = "none"

    def check(self, images: list[Image.Image], frame_numbers: Sequence[int] | None = None) -> SafetyVerdict:
        return SafetyVerdict(False, 0.0, "none: safety checker disabled")


def build_tiny_classifier(folder: Path | str) -> Path:
    """Save a random-weight ViT classifier with a tiny config, in the layout of Falconsai/nsfw_image_detection.

    Same class and labels ({0: "normal", 1: "nsfw"}) as the real model, same weights on every machine.
    """
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    try:  # transformers 5 names the torchvision-free processor apart; it saves as "ViTImageProcessor"
        from transformers import ViTImageProcessorPil as Processor
    except ImportError:
        from transformers import ViTImageProcessor as Processor

    folder = Path(folder)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8,
        id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1},
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = ViTForImageClassification(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    Processor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def load_checker(
    backend: str,
    *,
    model_dir: Path | str | None = None,
    threshold: float = 0.5,
    device: str = "cpu",
    repo: str = DEFAULT_CLASSIFIER_REPO,
    offline: bool | None = None,
) -> SafetyChecker:
    """The checker for ``backend``: "classifier", "nudenet" or "none" (always passes)."""
    name = backend.strip().lower()
    if name == "classifier":
        return ClassifierChecker.from_hub(repo, model_dir, offline, threshold=threshold, device=device)
    if name == "nudenet":
        return NudeNetChecker(threshold=threshold)
    if name == "none":
        return DisabledChecker()
    raise ValueError(f"unknown safety checker backend {backend!r}; choose one of {', '.join(BACKENDS)}")
