"""Request fields: ranges, errors naming the field, sizes and section counts."""

from __future__ import annotations

import pytest

from framepack_server.engine.request import GenerationParams
from framepack_server.errors import InputError

BASE = {"image": "in.png", "prompt": "a cat"}


def test_defaults_follow_the_api_table():
    p = GenerationParams.parse(**BASE)
    assert (p.aspect_ratio, p.resolution, p.seed, p.num_inference_steps) == ("16:9", "720p", -1, 25)
    assert (p.num_frames, p.guidance_scale, p.negative_prompt) == (180, 10.0, "")
    assert (p.model, p.sampler, p.latent_window_size, p.true_cfg_scale) == ("framepack", "unipc", 9, 1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_frames", 29), ("num_frames", 1801), ("num_inference_steps", 3), ("num_inference_steps", 51),
        ("guidance_scale", -0.1), ("guidance_scale", 32.5), ("seed", -2), ("seed", 2**31),
        ("aspect_ratio", "4:3"), ("resolution", "1080p"), ("sampler", "ddim"), ("model", "sora"),
        ("latent_window_size", 0), ("latent_window_size", 34), ("true_cfg_scale", 0.5), ("prompt", "  "),
        ("prompt", ""), ("image", ""), ("num_frames", "many"), ("colour", "red"),
    ],
)  # fmt: skip
def test_out_of_range_fields_name_the_field(field, value):
    with pytest.raises(InputError) as err:
        GenerationParams.parse(**{**BASE, field: value})
    assert err.value.field == field
    assert field in str(err.value)


def test_end_image_needs_an_inverted_model():
    with pytest.raises(InputError) as err:
        GenerationParams.parse(**BASE, model="framepack-f1", last_image="end.png")
    assert err.value.field == "last_image"


@pytest.mark.parametrize(
    ("resolution", "aspect", "size"),
    [("480p", "16:9", (832, 480)), ("480p", "9:16", (480, 832)), ("720p", "16:9", (1280, 720)),
     ("720p", "9:16", (720, 1280))],
)  # fmt: skip
def test_real_sizes(resolution, aspect, size):
    p = GenerationParams.parse(**BASE, resolution=resolution, aspect_ratio=aspect)
    assert p.size == size and p.size[0] % 16 == 0 and p.size[1] % 16 == 0


@pytest.mark.parametrize(("frames", "sections", "generated"), [(30, 1, 37), (180, 5, 181), (1800, 50, 1801)])
def test_sections_and_trim(frames, sections, generated):
    p = GenerationParams.parse(**BASE, num_frames=frames)
    assert (p.sections, p.generated_frames) == (sections, generated)


def test_random_seed_is_resolved_and_reported():
    p = GenerationParams.parse(**BASE)
    r = p.resolved()
    assert 0 <= r.seed <= 2_147_483_647 and r.resolved() is r


def test_request_module_needs_no_torch_and_names_every_sampler():
    import subprocess
    import sys

    code = "import sys, framepack_server.engine.request; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    from framepack_server.engine.request import SAMPLER_NAMES
    from framepack_server.engine.samplers import SAMPLERS

    assert tuple(SAMPLERS) == SAMPLER_NAMES
