"""Tests for the safety checkers: frame sampling, the tiny classifier, NudeNet (really run), errors."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framepack_server.errors import ModelNotAvailableError
from framepack_server.media.safety import (
    DEFAULT_CLASSIFIER_REPO,
    NUDENET_LABELS,
    NUDENET_UNSAFE,
    ClassifierChecker,
    NudeNetChecker,
    SafetyVerdict,
    build_tiny_classifier,
    load_checker,
    sample_frames,
)


def frame(width: int = 320, height: int = 192, seed: int = 0) -> Image.Image:
    """A smooth colour picture, like a generated frame (a random image would be all high frequencies)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(2 * np.pi * (rng.random() * 2 * x + rng.random() * 2 * y) + rng.random() * 6) for _ in "rgb"]
    return Image.fromarray(((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8))


# ----------------------------------------------------------------------------- sample_frames


@pytest.mark.parametrize("total", [1, 2, 3, 7, 8, 9, 33, 37, 129, 1000])
@pytest.mark.parametrize("count", [1, 2, 3, 8, 20])
def test_sample_frames_spread(total: int, count: int) -> None:
    got = sample_frames(total, count)
    assert len(got) == min(count, total)
    assert got == sorted(set(got))
    assert got[0] == 0 and all(0 <= i < total for i in got)
    if min(count, total) >= 2:
        assert got[-1] == total - 1
        gaps = np.diff(got)
        assert gaps.max() - gaps.min() <= 1  # evenly spread


def test_sample_frames_examples() -> None:
    assert sample_frames(10, 3) == [0, 5, 9]
    assert sample_frames(129) == [0, 18, 37, 55, 73, 91, 110, 128]
    assert sample_frames(5, 8) == [0, 1, 2, 3, 4]
    assert sample_frames(0) == [] and sample_frames(4, 0) == []
    with pytest.raises(ValueError):
        sample_frames(-1)


# ----------------------------------------------------------------------------- classifier


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder holding the tiny classifier where the real repo would be."""
    root = tmp_path_factory.mktemp("models")
    build_tiny_classifier(root / DEFAULT_CLASSIFIER_REPO)
    return root


def test_tiny_classifier_layout_and_determinism(model_dir: Path, tmp_path: Path) -> None:
    folder = model_dir / DEFAULT_CLASSIFIER_REPO
    assert {p.name for p in folder.iterdir()} >= {"config.json", "preprocessor_config.json", "model.safetensors"}
    again = build_tiny_classifier(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert '"ViTImageProcessor"' in (folder / "preprocessor_config.json").read_text()


def test_classifier_loads_like_the_hub_repo(model_dir: Path) -> None:
    checker = ClassifierChecker.from_hub(model_dir=model_dir, offline=True)
    assert type(checker.model).__name__ == "ViTForImageClassification"
    assert checker.model.config.id2label == {0: "normal", 1: "nsfw"}
    verdict = checker.check([frame(seed=s) for s in range(3)], frame_numbers=[0, 40, 80])
    assert isinstance(verdict, SafetyVerdict)
    assert 0.0 <= verdict.score <= 1.0
    assert verdict.nsfw == (verdict.score >= 0.5)
    assert verdict.detail.startswith("classifier: nsfw ") and verdict.detail.split()[-1] in {"0", "40", "80"}


def test_classifier_threshold(model_dir: Path) -> None:
    images = [frame(seed=s) for s in range(3)] + [Image.new("L", (50, 70), 128)]  # any mode and size
    flag_all = load_checker("classifier", model_dir=model_dir, threshold=0.0, offline=True)
    assert flag_all.check(images).nsfw
    flag_none = load_checker("classifier", model_dir=model_dir, threshold=1.01, offline=True)
    verdict = flag_none.check(images)
    assert not verdict.nsfw and 0.0 <= verdict.score <= 1.0
    assert flag_none.check([]) == SafetyVerdict(False, 0.0, "classifier: nothing unsafe found")


def test_classifier_needs_an_unsafe_label(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="none of"):
        ClassifierChecker(model_dir / DEFAULT_CLASSIFIER_REPO, unsafe_labels=("porn",))


def test_missing_classifier_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match="Falconsai/nsfw_image_detection") as info:
        load_checker("classifier", model_dir=tmp_path, offline=True)
    assert isinstance(info.value, ModelNotAvailableError)
    assert "hf download Falconsai/nsfw_image_detection" in str(info.value) and "offline" in str(info.value)
    # Without a model folder it looks in the Hugging Face cache; HF_HUB_OFFLINE forbids fetching.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="framepack-tests/no-such-classifier.*Hugging Face cache"):
        ClassifierChecker.from_hub("framepack-tests/no-such-classifier")


# ----------------------------------------------------------------------------- backends


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown safety checker backend 'opennsfw'.*classifier, nudenet, none"):
        load_checker("opennsfw")


def test_none_backend() -> None:
    checker = load_checker("none")
    assert checker.name == "none" and not checker.check([frame()]).nsfw


def test_nudenet_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)  # makes `import nudenet` fail
    with pytest.raises(RuntimeError, match=r"pip install 'framepack-server\[nudenet\]'"):
        load_checker("nudenet")


# ----------------------------------------------------------------------------- nudenet


@pytest.fixture(scope="module")
def nudenet() -> NudeNetChecker:
    return NudeNetChecker()


def test_nudenet_labels_match_the_detector() -> None:
    import nudenet.nudenet as module

    assert set(getattr(module, "__labels")) == NUDENET_LABELS
    assert NUDENET_UNSAFE <= NUDENET_LABELS and all(label.endswith("_EXPOSED") for label in NUDENET_UNSAFE)


def test_nudenet_runs_offline_on_frames(nudenet: NudeNetChecker, capsys: pytest.CaptureFixture[str]) -> None:
    frames = [frame(640, 384, seed=s) for s in range(4)]
    nudenet.check(frames)  # warm-up: the first runs are slower
    start = time.perf_counter()
    verdict = nudenet.check(frames, frame_numbers=sample_frames(129, 4))
    per_image = (time.perf_counter() - start) / len(frames)
    assert verdict == SafetyVerdict(False, 0.0, "nudenet: nothing unsafe found")
    with capsys.disabled():
        print(f"\nnudenet: {per_image * 1000:.1f} ms per 640x384 image")
    assert per_image < 2.0


class FakeDetector:
    """Stands in for NudeDetector: returns set detections and keeps the arrays it was given."""

    def __init__(self, detections: list[list[dict]]) -> None:
        self.detections = detections
        self.inputs: list[np.ndarray] = []

    def detect(self, array: np.ndarray) -> list[dict]:
        self.inputs.append(array)
        return self.detections[len(self.inputs) - 1]


def test_nudenet_policy(nudenet: NudeNetChecker, monkeypatch: pytest.MonkeyPatch) -> None:
    harmless = [{"class": "FACE_FEMALE", "score": 0.95}, {"class": "FEET_EXPOSED", "score": 0.9}]
    breast = [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.71}, {"class": "BELLY_EXPOSED", "score": 0.8}]
    fake = FakeDetector([harmless, breast])
    monkeypatch.setattr(nudenet, "detector", fake)
    red = Image.new("RGB", (8, 6), (255, 0, 0))
    verdict = nudenet.check([red, red], frame_numbers=[0, 12])
    assert verdict == SafetyVerdict(True, pytest.approx(0.71), "nudenet: FEMALE_BREAST_EXPOSED 0.71 on frame 12")
    # The detector gets what cv2.imread gives for the image file: uint8, height x width x BGR.
    assert fake.inputs[0].shape == (6, 8, 3) and fake.inputs[0].dtype == np.uint8
    assert fake.inputs[0][0, 0].tolist() == [0, 0, 255]

    monkeypatch.setattr(nudenet, "detector", FakeDetector([harmless]))
    assert nudenet.check([red]) == SafetyVerdict(False, 0.0, "nudenet: nothing unsafe found")
    monkeypatch.setattr(nudenet, "detector", FakeDetector([breast]))
    monkeypatch.setattr(nudenet, "threshold", 0.75)
    expected = SafetyVerdict(False, pytest.approx(0.71), "nudenet: FEMALE_BREAST_EXPOSED 0.71 on frame 0")
    assert nudenet.check([red]) == expected


def test_nudenet_custom_labels() -> None:
    checker = NudeNetChecker(threshold=0.5, labels=frozenset({"FEET_EXPOSED"}))
    checker.detector = FakeDetector([[{"class": "FEET_EXPOSED", "score": 0.6}]])
    assert checker.check([frame()]).nsfw
    with pytest.raises(ValueError, match="unknown NudeNet labels"):
        NudeNetChecker(labels=frozenset({"FEET_NAKED"}))
