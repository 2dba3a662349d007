"""Speed options on the tiny model: TeaCache, first-block cache, the layout cache, compile, attention
backends, float8 weights, and the request fields, flags and wire fields that turn them on."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from framepack_server.engine.caches import TEACACHE_COEFFICIENTS, TeaCacheState, teacache_rescale
from framepack_server.engine.generate import Engine
from framepack_server.engine.request import GenerationParams
from framepack_server.errors import InputError

from ..conftest import smooth_image

STEPS = 8


def request(model: str = "tiny", **fields: object) -> GenerationParams:
    base = dict(image="x", prompt="a fox in the snow", model=model, resolution="480p", num_frames=73, seed=7)
    return GenerationParams.parse(**{**base, "num_inference_steps": STEPS, **fields})


def render(engine: Engine, image, **fields: object) -> np.ndarray:
    return np.concatenate(list(engine.frames(request(engine.spec.name, **fields), image)))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def request_image():
    return smooth_image()


@pytest.fixture(scope="module")
def exact(engines, request_image):
    return render(engines("tiny"), request_image)


@contextlib.contextmanager
def block_runs(engine: Engine):
    """Records, per transformer call, whether the last block really ran (its attention is only
    called then, whatever hooks sit around the block)."""
    transformer = engine.components.transformer
    calls: list[bool] = []
    last = transformer.single_transformer_blocks[-1]
    handles = [
        transformer.register_forward_pre_hook(lambda *_: calls.append(False)),
        last.attn.register_forward_pre_hook(lambda *_: calls.__setitem__(-1, True)),
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


# ---- TeaCache ----------------------------------------------------------------------------------


def test_teacache_polynomial_is_the_reference_one():
    assert teacache_rescale(0.0) == pytest.approx(TEACACHE_COEFFICIENTS[-1])
    for x in (0.01, 0.1, 0.3):
        assert teacache_rescale(x) == pytest.approx(np.polyval(TEACACHE_COEFFICIENTS, x))


def test_teacache_state_computes_first_and_last_and_accumulates():
    state = TeaCacheState(steps=5, threshold=0.15)
    x = torch.ones(4)
    decisions = []
    for i in range(5):
        decisions.append(state.should_compute(x * (1 + 0.01 * i)))
        state.residual = torch.zeros(4)  # what the last block's hook records on a computed step
    # a relative L1 change of about 0.01 a step adds rescale(0.01) = 0.071: the third addition reaches
    # 0.15 and the sum restarts; the last step always runs
    assert decisions == [True, False, False, True, True]
    assert state.step == 0  # wrapped: a new section of the same length starts over


def test_teacache_skips_steps_and_restarts_every_section(engines, request_image):
    engine = engines("tiny")
    with block_runs(engine) as calls:
        render(engine, request_image, enable_teacache=True, teacache_threshold=0.15)
    assert len(calls) == 2 * STEPS
    for section in (calls[:STEPS], calls[STEPS:]):
        assert section[0] and section[-1], section  # the first and last step of every section run
        assert not all(section), section  # and some steps are skipped
    history = engine.step_cache.history[-2:]
    assert [h[:2] for h in history] == [("teacache", STEPS)] * 2
    assert [h[2] for h in history] == [sum(calls[:STEPS]), sum(calls[STEPS:])]


def test_teacache_threshold_zero_is_the_exact_path(engines, request_image, exact):
    engine = engines("tiny")
    with block_runs(engine) as calls:
        frames = render(engine, request_image, enable_teacache=True, teacache_threshold=0.0)
    assert all(calls)
    np.testing.assert_array_equal(frames, exact)


def test_teacache_frames_stay_close(engines, request_image, exact):
    frames = render(engines("tiny"), request_image, enable_teacache=True)
    diff = mean_abs_diff(frames, exact)
    print(f"TeaCache 0.15 on tiny: mean |diff| {diff:.3f} (8-bit levels)")
    assert 0 < diff < 4


def test_teacache_keeps_one_state_per_cfg_branch(engines, request_image):
    engine = engines("tiny")
    with block_runs(engine) as calls:
        render(engine, request_image, enable_teacache=True, true_cfg_scale=2.0, negative_prompt="blur")
    first = calls[: 2 * STEPS]  # positive and negative calls alternate
    for branch in (first[0::2], first[1::2]):
        assert branch[0] and branch[-1] and not all(branch), branch


def test_teacache_in_group_mode_gives_the_resident_frames(settings, engines, request_image):
    from diffusers.hooks import HookRegistry

    engine = Engine.load("tiny", settings=settings, memory="group")
    transformer = engine.components.transformer
    # the first block's decision runs inside group offloading (its norm's weights are in), the other
    # blocks are skipped outside it (their weights never stream in on a skipped step)
    head = HookRegistry.check_if_exists_or_initialize(transformer.transformer_blocks[0])._hook_order
    tail = HookRegistry.check_if_exists_or_initialize(transformer.single_transformer_blocks[-1])._hook_order
    assert head.index("framepack_teacache_head") < head.index("group_offloading")
    assert tail.index("group_offloading") < tail.index("framepack_teacache_block")
    grouped = render(engine, request_image, enable_teacache=True)
    np.testing.assert_array_equal(grouped, render(engines("tiny"), request_image, enable_teacache=True))
    assert engine.step_cache.history[-1][2] < STEPS


def test_default_request_runs_every_block(engines, request_image):
    engine = engines("tiny")
    with block_runs(engine) as calls:
        render(engine, request_image)
    assert len(calls) == 2 * STEPS and all(calls)
    assert engine.step_cache.history[-1] == (None, STEPS, STEPS)


# ---- first-block cache (diffusers) ---------------------------------------------------------------


@contextlib.contextmanager
def first_block_cache(engine: Engine, threshold: float):
    engine.step_cache_override = ("first-block", threshold)
    try:
        yield
    finally:
        engine.step_cache_override = None


def test_first_block_cache_skips_steps_and_restarts_every_section(engines, request_image, exact):
    engine = engines("tiny")
    with block_runs(engine) as calls, first_block_cache(engine, 0.5):
        frames = render(engine, request_image)
    for section in (calls[:STEPS], calls[STEPS:]):
        assert section[0] and not all(section), section
    diff = mean_abs_diff(frames, exact)
    print(f"first-block cache 0.5 on tiny: mean |diff| {diff:.3f}, blocks ran {sum(calls)}/{len(calls)}")
    assert 0 < diff < 4
    assert not engine.components.transformer.is_cache_enabled  # taken off after every section


def test_first_block_cache_threshold_zero_is_the_exact_path(engines, request_image, exact):
    engine = engines("tiny")
    with first_block_cache(engine, 0.0):
        np.testing.assert_array_equal(render(engine, request_image), exact)


# ---- layout cache -------------------------------------------------------------------------------


def test_layout_cache_gives_identical_frames(engines, request_image, exact):
    engine = engines("tiny")
    engine.layout_cache.enabled = False
    try:
        uncached = render(engine, request_image)
    finally:
        engine.layout_cache.enabled = True
    np.testing.assert_array_equal(uncached, exact)


def test_layout_cache_computes_a_repeated_layout_once(engines, request_image):
    engine = engines("tiny-f1")  # forward order: every section has the same layout
    engine.layout_cache.clear()
    for memo in engine.layout_cache.memos.values():
        memo.hits = memo.misses = 0
    rope = engine.layout_cache.memos["rope"]
    render(engine, request_image, num_frames=109)  # 3 sections
    assert rope.misses == 4  # noisy window, clean latents, 2x and 4x history: once for the video
    assert rope.hits == 3 * STEPS * 4 - 4
    assert engine.layout_cache.memos["image_projection"].misses == 1  # once per job
    assert engine.layout_cache.memos["clean_x_embedder"].misses == 3  # once per section


# ---- compile, attention, float8 -------------------------------------------------------------------


@pytest.mark.slow
def test_compile_option_gives_close_frames_and_reports_its_time(settings, request_image, exact):
    engine = Engine.load("tiny", settings=settings, compile=True)
    assert engine.compile_seconds == 0.0
    frames = render(engine, request_image)
    assert engine.compile_seconds > 0
    diff = mean_abs_diff(frames, exact)
    print(f"compiled on tiny: mean |diff| {diff:.4f}, compile {engine.compile_seconds:.1f} s")
    assert diff < 0.05
    assert Engine.load("tiny", settings=settings).compile_seconds is None


def test_attention_names_are_checked(settings):
    from framepack_server.engine.acceleration import attention_names, set_attention

    names = attention_names()
    assert {"native", "flash", "sage", "_native_math"} <= set(names)
    transformer = torch.nn.Linear(2, 2)  # the checks fail before the model is touched
    with pytest.raises(InputError) as err:
        set_attention(transformer, "fastest", torch.device("cpu"))
    assert err.value.field == "attention" and "unknown backend 'fastest'" in err.value.message
    with pytest.raises(InputError) as err:
        set_attention(transformer, "flash", torch.device("cpu"))  # flash-attn is not installed here
    assert err.value.field == "attention" and "'flash' does not run on cpu" in err.value.message
    with pytest.raises(InputError):
        Engine.load("tiny", settings=settings, attention="nope")


def test_math_attention_gives_close_frames(settings, request_image, exact):
    engine = Engine.load("tiny", settings=settings, attention="_native_math")
    diff = mean_abs_diff(render(engine, request_image), exact)
    print(f"_native_math attention on tiny: mean |diff| {diff:.4f}")
    assert diff < 0.05


@pytest.mark.parametrize("memory", ["fp8", "fp8-group"])
def test_fp8_memory_mode_stores_float8_weights_and_gives_close_frames(settings, request_image, exact, memory):
    engine = Engine.load("tiny", settings=settings, memory=memory)
    assert engine.memory_mode.value == memory
    block = engine.components.transformer.transformer_blocks[0]
    assert block.ff.net[2].weight.dtype == torch.float8_e4m3fn
    frames = render(engine, request_image)
    diff = mean_abs_diff(frames, exact)
    print(f"{memory} on tiny: mean |diff| {diff:.3f}")
    assert 0 < diff < 2


def test_auto_memory_never_picks_fp8():
    from framepack_server.engine.memory import MemoryMode, choose_mode

    for free in (4.0, 10.0, 20.0, 40.0, 80.0):
        assert not choose_mode("auto", torch.device("cuda"), free, 60.0, 6.0).fp8
    assert choose_mode("fp8", torch.device("cpu"), None, 60.0, 6.0) is MemoryMode.FP8


# ---- request fields, flags, wire --------------------------------------------------------------------


def test_teacache_request_fields():
    params = request()
    assert params.enable_teacache is False and params.teacache_threshold == 0.15
    assert request(enable_teacache=True, teacache_threshold=0.3).teacache_threshold == 0.3
    for value, message in ((-0.1, "greater than or equal to 0"), (1.5, "less than or equal to 1"), ("x", "number")):
        with pytest.raises(InputError) as err:
            request(teacache_threshold=value)
        assert err.value.field == "teacache_threshold" and message in err.value.message
    with pytest.raises(InputError) as err:
        request(enable_teacache="maybe")
    assert err.value.field == "enable_teacache"


def test_generate_flags():
    from framepack_server.cli import _parser

    args = _parser().parse_args(
        ["generate", "--image", "a.png", "--prompt", "p", "--enable-teacache", "--teacache-threshold", "0.2",
         "--attention", "sage", "--compile", "--memory", "fp8"]
    )  # fmt: skip
    assert (args.enable_teacache, args.teacache_threshold, args.attention, args.compile) == (True, 0.2, "sage", True)
    plain = _parser().parse_args(["generate", "--image", "a.png", "--prompt", "p"])
    assert plain.enable_teacache is None and plain.compile is None and plain.attention is None


def test_settings_from_the_environment(monkeypatch):
    from framepack_server.config import get_settings

    assert (get_settings().attention, get_settings().compile) == ("native", False)
    monkeypatch.setenv("FRAMEPACK_ATTENTION", "sage")
    monkeypatch.setenv("FRAMEPACK_COMPILE", "1")
    assert (get_settings().attention, get_settings().compile) == ("sage", True)


def test_wire_fields_reach_the_request():
    from framepack_server.api.protocol import PredictionInput

    wire = PredictionInput(image="x", prompt="p", enable_teacache=True, teacache_threshold=0.2)
    params = GenerationParams.parse(**wire.engine_fields())
    assert (params.enable_teacache, params.teacache_threshold) == (True, 0.2)
    assert "enable_teacache" not in PredictionInput(image="x", prompt="p").engine_fields()
