"""Speed options against the exact path, on the CPU with the random-weight "small" model, in one run.

0. The quality guard: every option on the "tiny" model (one run each), with its frame difference.
1. Each option renders the same video as the exact path (inverted order, 2 sections, 80x48, UniPC,
   frames out, no MP4): its wall time as a ratio to the exact path's in the same run (medians of
   alternating repeats), the share of transformer calls that ran the blocks, and the mean (and max)
   absolute difference of its frames from the exact path's, in 8-bit levels. Options: TeaCache and
   diffusers' first-block cache at several thresholds, ``torch.compile`` of the blocks (compile time
   apart, then steady runs), the layout cache off (the exact path has it on), float8 weight storage
   (memory mode ``fp8``) and PyTorch's math attention kernel forced through diffusers' dispatcher.
   The ratios are given for the medians and for the fastest run of each (the least disturbed).
2. Ours against diffusers' ``HunyuanVideoFramepackPipeline`` on the same weights, with Euler (its only
   sampler): ours exact (goal: ratio <= 1.0) and ours with TeaCache (goal: <= 0.6), with the frame
   difference of each from diffusers' frames. Our layout cache is off while the pipeline runs, so that
   it runs diffusers' code as published.

Random weights say nothing about real-weight quality: the differences here show that an option is
wired as intended and how much each perturbs this model, not how a real video looks. It prints tables
and asserts no time; torch runs --threads threads (default 1: the machine is shared and small models
slow down with more threads than free cores).

    python benchmarks/speed.py            # about 22 minutes on 2 CPU cores
    python benchmarks/speed.py --quick    # about 3 minutes: 8 steps, 1 repeat, fewer thresholds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from engine import IMAGE, LWS, SEED, pipeline_for, table  # noqa: E402  (benchmarks/engine.py)

from framepack_server.config import get_settings  # noqa: E402
from framepack_server.engine.acceleration import set_attention  # noqa: E402
from framepack_server.engine.conditioning import (  # noqa: E402
    PROMPT_TEMPLATE,
    resize_and_center_crop,
    template_crop_start,
)
from framepack_server.engine.generate import Engine  # noqa: E402
from framepack_server.engine.registry import SamplingOrder  # noqa: E402
from framepack_server.engine.request import GenerationParams  # noqa: E402

SECTIONS = 2
PROMPT = "a red fox runs through snow"


def request(model: str, steps: int, sampler: str = "unipc", **fields: object) -> GenerationParams:
    return GenerationParams.parse(
        image="bench.png", prompt=PROMPT, model=model, resolution="480p", num_frames=4 * LWS * SECTIONS + 1,
        seed=SEED, num_inference_steps=steps, sampler=sampler, **fields,
    )  # fmt: skip


def render(engine: Engine, params: GenerationParams) -> np.ndarray:
    return np.concatenate(list(engine.frames(params, IMAGE)))


def difference(frames: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    diff = np.abs(frames.astype(np.int16) - reference.astype(np.int16))
    return float(diff.mean()), int(diff.max())


@dataclass
class Option:
    """One way of rendering the video; ``around`` sets the option up and takes it down again."""

    name: str
    engine: Engine
    fields: dict = field(default_factory=dict)
    cache: tuple[str, float] | None = None  # a step cache forced on the engine (first-block)
    around: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    seconds: list[float] = field(default_factory=list)
    frames: np.ndarray | None = None
    ran: tuple[int, int] = (0, 0)  # transformer calls that ran the blocks, of all calls
    note: str = ""

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self.engine.step_cache_override = self.cache
        try:
            with self.around():
                yield
        finally:
            self.engine.step_cache_override = None

    def run(self, steps: int) -> None:
        with self.active():
            started = time.perf_counter()
            frames = render(self.engine, request(self.engine.spec.name, steps, **self.fields))
            self.seconds.append(time.perf_counter() - started)
        history = self.engine.step_cache.history[-SECTIONS:]
        self.ran = (sum(h[2] for h in history), sum(h[1] for h in history))
        if self.frames is None:
            self.frames = frames
        elif not np.array_equal(frames, self.frames):
            self.note = "frames differ between repeats"


@contextlib.contextmanager
def layout_cache_off(engine: Engine) -> Iterator[None]:
    engine.layout_cache.enabled = False
    try:
        yield
    finally:
        engine.layout_cache.enabled = True


@contextlib.contextmanager
def attention(engine: Engine, name: str) -> Iterator[None]:
    set_attention(engine.components.transformer, name, engine.device)
    try:
        yield
    finally:
        set_attention(engine.components.transformer, "native", engine.device)


def bench_options(settings, model: str, steps: int, repeats: int, quick: bool, number: str) -> None:
    exact = Engine.load(model, settings=settings)
    options = [Option("exact (layout cache on)", exact)]
    options.append(Option("layout cache off", exact, around=lambda: layout_cache_off(exact)))
    for threshold in (0.15,) if quick else (0.1, 0.15, 0.25, 0.4):
        fields = {"enable_teacache": True, "teacache_threshold": threshold}
        options.append(Option(f"TeaCache {threshold}", exact, fields))
    for threshold in (0.05, 0.5) if quick else (0.05, 0.3, 0.5, 0.6):
        options.append(Option(f"first-block cache {threshold}", exact, cache=("first-block", threshold)))
    options.append(Option("attention _native_math", exact, around=lambda: attention(exact, "_native_math")))
    options.append(Option("memory fp8 (float8 weights)", Engine.load(model, settings=settings, memory="fp8")))
    compiled = Option("torch.compile (steady)", Engine.load(model, settings=settings, compile=True))
    options.append(compiled)

    for option in options:  # warm-up: the first call of each engine and the compilation
        started = time.perf_counter()
        option.run(steps)
        if option is compiled:
            first = time.perf_counter() - started
            compiled.note = f"first video {first:.1f} s, of which compiling {compiled.engine.compile_seconds:.1f} s"
        option.seconds.clear()
    for r in range(repeats):
        for option in options if r % 2 == 0 else options[::-1]:
            option.run(steps)

    base, best = statistics.median(options[0].seconds), min(options[0].seconds)
    rows = []
    for option in options:
        seconds = statistics.median(option.seconds)
        mad, worst = difference(option.frames, options[0].frames)
        ran, calls = option.ran
        rows.append([
            option.name, f"{seconds:.2f}", f"{seconds / base:.2f}", f"{min(option.seconds) / best:.2f}",
            f"{ran}/{calls}", f"{mad:.3f}", str(worst), option.note,
        ])  # fmt: skip
    title = (
        f'{number}. Speed options, "{model}" (inverted), {SECTIONS} sections, 80x48, {steps} UniPC steps;'
        f" median of {repeats} alternating run(s) after a warm-up"
    )
    header = ["option", "median s", "/ exact", "best / best", "blocks ran", "mean |diff|", "max |diff|", ""]
    notes = [
        "/ exact: median time over the exact path's median; best / best: the fastest run of each (the least disturbed",
        "by other work on the machine); frame differences from the exact path's frames, in 8-bit levels",
    ]
    table(title, header, rows, notes)
    for option in options:
        option.frames = None


def bench_diffusers(settings, steps: int, repeats: int) -> None:
    rows = []
    for model in ("small", "small-f1"):
        engine = Engine.load(model, settings=settings)
        pipe, c = pipeline_for(engine), engine.components
        params = request(model, steps, "euler")
        width, height = params.size

        def theirs(engine=engine, pipe=pipe, c=c, params=params, width=width, height=height) -> np.ndarray:
            with layout_cache_off(engine):
                out = pipe(
                    image=Image.fromarray(resize_and_center_crop(IMAGE, width, height)), prompt=PROMPT,
                    height=height, width=width, num_frames=SECTIONS * (4 * LWS - 3), latent_window_size=LWS,
                    num_inference_steps=steps, guidance_scale=params.guidance_scale,
                    sampling_type="vanilla" if engine.spec.order is SamplingOrder.FORWARD else "inverted_anti_drifting",
                    prompt_template={"template": PROMPT_TEMPLATE, "crop_start": template_crop_start(c.tokenizer)},
                    generator=torch.Generator().manual_seed(SEED), output_type="np",
                ).frames[0]  # fmt: skip
            return (np.clip(out, 0, 1) * 255).astype(np.uint8)  # truncated, as our frames are

        runs = {
            "ours": lambda engine=engine, params=params: render(engine, params),
            "ours + TeaCache 0.15": lambda engine=engine, params=params: render(
                engine, params.model_copy(update={"enable_teacache": True})
            ),
            "diffusers": theirs,
        }
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        frames: dict[str, np.ndarray] = {}
        for r in range(repeats):
            for name in runs if r % 2 == 0 else list(runs)[::-1]:
                started = time.perf_counter()
                frames[name] = runs[name]()
                seconds[name].append(time.perf_counter() - started)
        theirs_s, theirs_best = statistics.median(seconds["diffusers"]), min(seconds["diffusers"])
        for name in ("ours", "ours + TeaCache 0.15"):
            ours_s = statistics.median(seconds[name])
            n = min(len(frames[name]), len(frames["diffusers"]))  # the same sections; trimming aside
            mad, worst = difference(frames[name][:n], frames["diffusers"][:n])
            rows.append([
                model, name, f"{ours_s:.2f}", f"{theirs_s:.2f}", f"{ours_s / theirs_s:.2f}",
                f"{min(seconds[name]) / theirs_best:.2f}", f"{mad:.3f}", str(worst),
            ])  # fmt: skip
    title = (
        f"2. Ours against diffusers' HunyuanVideoFramepackPipeline, same weights: Euler, {steps} steps, {SECTIONS}"
        f" sections, 80x48, frames out; median of {repeats} alternating run(s)"
    )
    header = ["model", "ours", "ours s", "diffusers s", "ours/diffusers", "best/best", "mean |diff|", "max |diff|"]
    notes = ["goals: exact <= 1.0, with a cache <= 0.6; differences from diffusers' frames in 8-bit levels"]
    table(title, header, rows, notes)


def main() -> None:
    ap = argparse.ArgumentParser(description="Speed options on the random-weight 'small' model (see the docstring).")
    ap.add_argument("--quick", action="store_true", help="8 steps, 1 repeat, fewer thresholds")
    ap.add_argument("--steps", type=int, help="sampling steps per section (default 25; 8 with --quick)")
    ap.add_argument("--repeats", type=int, help="timed runs of each option (default 3; 1 with --quick)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--parts", default="tiny,options,diffusers", help="which tables (default: all three)")
    ap.add_argument("--cache-dir", type=Path, help="where the models are built (default: a temporary folder)")
    args = ap.parse_args()
    steps = args.steps or (8 if args.quick else 25)
    parts = set(args.parts.split(","))
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    torch._inductor.config.fx_graph_cache = False  # the compile time of a first start, not of a warm cache
    for lib in (transformers, diffusers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()
    started = time.perf_counter()
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, {args.threads} torch thread(s), ", end="")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {'quick' if args.quick else 'full'} run")
    with tempfile.TemporaryDirectory(prefix="framepack-speed-") as tmp:
        settings = get_settings(cache_dir=args.cache_dir or Path(tmp), auto_download=False)
        if "tiny" in parts:  # the quality guard on the tiny model (its times are the VAE's: not a speed figure)
            bench_options(settings, "tiny", steps, 1, args.quick, "0")
        if "options" in parts:
            bench_options(settings, "small", steps, repeats, args.quick, "1")
        if "diffusers" in parts:
            bench_diffusers(settings, steps, repeats)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
