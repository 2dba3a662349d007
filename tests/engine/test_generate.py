"""End-to-end runs of the tiny models: frame counts, sizes, determinism, resume, memory modes."""

from __future__ import annotations

import numpy as np
import pytest

from framepack_server.engine.generate import Engine
from framepack_server.engine.request import GenerationParams
from framepack_server.errors import GenerationCancelled, InputError
from framepack_server.generator import FramePack
from framepack_server.jobs.checkpoints import FolderCheckpoint
from framepack_server.media.video import probe_video, read_frames

pytestmark = pytest.mark.slow


def _params(model="tiny", **fields) -> GenerationParams:
    base = dict(image="in.png", prompt="a boat on a lake", model=model, resolution="480p", seed=7)
    base.update(num_inference_steps=4, num_frames=40)
    base.update(fields)
    return GenerationParams.parse(**base)


def _frames(engine: Engine, params: GenerationParams, image, **kw) -> np.ndarray:
    return np.concatenate(list(engine.frames(params, image, **kw)))


@pytest.fixture(scope="module")
def fp_tiny(settings) -> FramePack:
    return FramePack("tiny", settings=settings)


@pytest.mark.parametrize("num_frames", [30, 31, 180])
def test_mp4_has_exactly_the_requested_frames(fp_tiny, image, tmp_path, num_frames):
    params = _params(num_frames=num_frames)
    result = fp_tiny.render(params, image, None, tmp_path / "v.mp4")
    info = probe_video(result.path)
    assert (info.frames, info.fps, info.width, info.height) == (num_frames, 30, 80, 48)
    assert (result.frames, result.width, result.height) == (num_frames, 80, 48)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert not list(tmp_path.glob(".*partial*"))


def test_1800_frames_at_tiny_size(fp_tiny, image, tmp_path):
    """50 sections: the longest video the API allows, at the tiny model's 480p size."""
    params = _params(num_frames=1800, seed=3)
    assert params.sections == 50
    result = fp_tiny.render(params, image, None, tmp_path / "long.mp4")
    info = probe_video(result.path)
    assert (info.frames, info.fps, info.width, info.height) == (1800, 30, 80, 48)


@pytest.mark.parametrize(
    ("resolution", "aspect_ratio", "size"),
    [("480p", "9:16", (48, 80)), ("720p", "16:9", (112, 64)), ("720p", "9:16", (64, 112))],
)
def test_documented_sizes(fp_tiny, image, tmp_path, resolution, aspect_ratio, size):
    params = _params(resolution=resolution, aspect_ratio=aspect_ratio, num_frames=30)
    info = probe_video(fp_tiny.render(params, image, None, tmp_path / "v.mp4").path)
    assert (info.width, info.height) == size


@pytest.mark.parametrize("model", ["tiny", "tiny-f1"])
def test_same_seed_same_frames_other_seed_other_frames(engines, image, model):
    engine = engines(model)
    first = _frames(engine, _params(model, num_frames=80), image)
    again = _frames(engine, _params(model, num_frames=80), image)
    other = _frames(engine, _params(model, num_frames=80, seed=8), image)
    assert first.shape == (80, 48, 80, 3)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other).mean() > 1.0


@pytest.mark.parametrize(("model", "stop_after"), [("tiny", 1), ("tiny", 2), ("tiny-f1", 2)])
def test_resume_from_checkpoint_gives_identical_frames(engines, image, tmp_path, model, stop_after):
    engine = engines(model)
    params = _params(model, num_frames=110, sampler="unipc")  # 4 sections
    assert params.sections == 4
    uninterrupted = _frames(engine, params, image)

    store = FolderCheckpoint(tmp_path / "ckpt")
    done = lambda: (store.load() or None) and store.load().sections_done >= stop_after  # noqa: E731
    with pytest.raises(GenerationCancelled):
        _frames(engine, params, image, checkpoint=store, should_cancel=done)
    assert store.load().sections_done == stop_after

    resumed = _frames(engine, params, image, checkpoint=store)
    np.testing.assert_array_equal(resumed, uninterrupted)


def test_checkpoint_of_another_request_is_refused(engines, image, tmp_path):
    engine = engines("tiny")
    store = FolderCheckpoint(tmp_path / "ckpt")
    _frames(engine, _params(num_frames=80), image, checkpoint=store)
    with pytest.raises(ValueError, match="another request"):
        _frames(engine, _params(num_frames=80, prompt="something else"), image, checkpoint=store)


def test_cancel_stops_within_a_step(engines, image):
    engine = engines("tiny")
    steps = []

    def on_progress(p):
        if p.phase == "sampling":
            steps.append((p.section, p.step))

    with pytest.raises(GenerationCancelled):
        _frames(
            engine,
            _params(num_frames=80),
            image,
            on_progress=on_progress,
            should_cancel=lambda: len(steps) >= 3,
        )
    assert steps == [(1, 1), (1, 2), (1, 3)]


def test_progress_reports_sections_steps_eta_and_previews(engines, image):
    events = []
    _frames(engines("tiny"), _params(num_frames=80), image, on_progress=events.append)
    sampling = [e for e in events if e.phase == "sampling"]
    assert [(e.section, e.step) for e in sampling] == [(s, i) for s in (1, 2, 3) for i in (1, 2, 3, 4)]
    assert all(e.sections == 3 and e.steps == 4 and e.eta_seconds is not None for e in sampling)
    assert sampling[-1].eta_seconds == 0
    preview = sampling[0].preview
    assert preview.dtype == np.uint8 and preview.shape == (6, 9 * 10, 3)  # 9 latent frames of 10x6
    assert events[0].phase == "encoding" and events[-1].phase == "done"


def test_end_image_changes_the_video_and_needs_inverted_order(engines, image):
    engine = engines("tiny")
    end = image.transpose(0)  # mirrored
    plain = _frames(engine, _params(num_frames=40), image)
    with_end = _frames(engine, _params(num_frames=40, last_image="end.png"), image, last_image=end)
    assert np.abs(plain.astype(int) - with_end).mean() > 0.5
    with pytest.raises(InputError) as err:
        _frames(engines("tiny-f1"), _params("tiny-f1"), image, last_image=end)
    assert err.value.field == "last_image"


def test_true_cfg_uses_the_negative_prompt(engines, image):
    engine = engines("tiny")
    a = _frames(engine, _params(true_cfg_scale=3.0, negative_prompt="ugly"), image)
    b = _frames(engine, _params(true_cfg_scale=3.0, negative_prompt="bright sunny day"), image)
    assert np.abs(a.astype(int) - b).mean() > 0.1


@pytest.mark.parametrize("memory", ["group", "offload"])
def test_memory_modes_give_the_same_frames(engines, settings, image, memory):
    reference = _frames(engines("tiny"), _params(), image)
    engine = Engine.load("tiny", settings=settings, memory=memory)
    assert engine.memory_mode.value == memory
    np.testing.assert_array_equal(_frames(engine, _params(), image), reference)


def test_python_api_generate_from_a_path(fp_tiny, image, tmp_path):
    path = tmp_path / "in.png"
    image.save(path)
    result = fp_tiny.generate(image=str(path), prompt="waves", num_frames=30, resolution="480p", out=tmp_path / "o.mp4")
    assert result.seed >= 0 and result.frames == 30
    assert read_frames(result.path).shape == (30, 48, 80, 3)
