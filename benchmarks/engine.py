"""Engine benchmarks on the random-weight models, on the CPU; every figure is compared within the run.

1. Sampling time per section of "small" (inverted order) for 2, 8 and 32 sections, from the engine's
   progress events (it should be flat in the video's length), then 2 sections again to show drift.
   The decode is skipped except in the 8-section run (4 with --quick), which gives the transformer's
   share of a section: transformer forward time against VAE decode time, timed with forward hooks.
2. Peak RSS (ru_maxrss) of rendering 180 and 1800 frames of "tiny" to an MP4, each in a fresh child
   process (this script with a hidden flag); it should be flat too.
3. One video, ours against diffusers' HunyuanVideoFramepackPipeline on the same weights and settings
   (Euler, same steps, 2 sections, frames out: `Engine.frames`, no MP4, against output_type="np"),
   for "small" and "small-f1": medians of alternating runs, and the ratio ours/diffusers (the
   project's goal is <= 1.0).

It prints tables and asserts no time. Torch runs --threads threads (default 1): more threads than free
cores slow these small models' operations by orders of magnitude. The models are built in a temporary
folder (or --cache-dir), so that an edited preset is never stale.

    python benchmarks/engine.py            # about 4-5 minutes on 2 CPU cores
    python benchmarks/engine.py --quick    # about 1.5 minutes: 2 and 4 sections, 540 frames, 1 run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoFramepackPipeline
from PIL import Image

from framepack_server.config import get_settings
from framepack_server.engine.conditioning import PROMPT_TEMPLATE, resize_and_center_crop, template_crop_start
from framepack_server.engine.generate import Engine, Progress
from framepack_server.engine.loading import download
from framepack_server.engine.registry import SamplingOrder, get_spec
from framepack_server.engine.request import GenerationParams
from framepack_server.errors import GenerationCancelled
from framepack_server.generator import FramePack

STEPS, RSS_STEPS = 6, 4  # Euler steps of the "small" runs and of the "tiny" RSS runs
LWS = 9  # the default latent window size: a section is 4 * LWS frames
SEED = 1234


def picture(width: int = 120, height: int = 80) -> Image.Image:
    """A smooth colour picture (a random image would be all high frequencies)."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = np.stack([np.sin(2 * np.pi * (a * x + b * y) + a) for a, b in ((1, 0.5), (0.3, 1.2), (0.8, 0.8))], -1)
    return Image.fromarray(((rgb + 1) * 127.5).astype(np.uint8))


IMAGE = picture()


def request(model: str, frames: int, steps: int = STEPS) -> GenerationParams:
    return GenerationParams.parse(
        image="bench.png", prompt="a red fox runs through snow", model=model, resolution="480p",
        num_frames=frames, seed=SEED, num_inference_steps=steps, sampler="euler",
    )  # fmt: skip


def frames_of(sections: int) -> int:
    return 4 * LWS * sections + 1


class Timed:
    """An engine with forward-hook timers on its transformer and VAE decoder (the pipeline runs both)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, c, self._entered = engine, engine.components, 0.0
        self.reset()
        for name, module in {"transformer": c.transformer, "vae": c.vae.decoder}.items():
            module.register_forward_pre_hook(lambda *_, n=name: self._enter(n))
            module.register_forward_hook(lambda *_, n=name: self._exit(n))

    def _enter(self, name: str) -> None:
        self._entered = time.perf_counter()
        if name == "transformer" and not self.first_call:
            self.first_call = self._entered

    def _exit(self, name: str) -> None:
        self.seconds[name] += time.perf_counter() - self._entered

    def reset(self) -> None:
        self.seconds, self.first_call = {"transformer": 0.0, "vae": 0.0}, 0.0

    def share(self) -> float:
        return self.seconds["transformer"] / sum(self.seconds.values())


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print(f"\n{title}")
    for row in (header, *rows):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    for note in notes:
        print(note)


def section_times(timed: Timed, sections: int, decode: bool) -> list[float]:
    """Seconds per section, between the last step events of consecutive sections; the first section
    starts at the transformer's first call (after the conditioning)."""
    ends: list[float] = []

    def on_progress(event: Progress) -> None:
        if event.phase == "sampling" and event.step == event.steps:
            ends.append(time.perf_counter())

    timed.reset()
    params = request(timed.engine.spec.name, frames_of(sections))
    stop = (lambda: False) if decode else (lambda: len(ends) == sections)  # true from the first decode
    with contextlib.suppress(GenerationCancelled):  # raised where the decode is skipped
        for _ in timed.engine.frames(params, IMAGE, on_progress=on_progress, should_cancel=stop):
            pass
    return np.diff([timed.first_call, *ends]).tolist()


def bench_sections(timed: Timed, lengths: Sequence[int]) -> None:
    rows, base, notes, share_at = [], 0.0, [], lengths[1]
    for sections in lengths:
        times = section_times(timed, sections, decode=sections == share_at and not notes)
        mean, median = statistics.mean(times), statistics.median(times)
        base = base or mean
        rows.append([str(sections), str(frames_of(sections)), f"{mean:.3f}", f"{median:.3f}", f"{mean / base:.2f}"])
        if sections == share_at and not notes:
            tr, vae = (timed.seconds[k] / sections for k in ("transformer", "vae"))
            notes.append(f"per section at {sections} sections: transformer {tr:.2f} s, VAE decode {vae:.2f} s")
            notes.append(f"-> transformer share {100 * timed.share():.0f}% of (transformer + VAE decode)")
    title = f'1. Sampling time per section, "small" (inverted order), {STEPS} Euler steps, 80x48'
    table(title, ["sections", "frames", "mean s", "median s", f"mean / {lengths[0]} sections"], rows, notes)


def rss_child(frames: int, cache: Path) -> None:
    """Child process: load "tiny", render ``frames`` frames to an MP4 (0: load only), report."""
    fp = FramePack("tiny", settings=get_settings(cache_dir=cache, auto_download=False))
    started = time.perf_counter()
    if frames:
        with tempfile.TemporaryDirectory() as out:
            fp.render(request("tiny", frames, RSS_STEPS), IMAGE, None, Path(out) / "bench.mp4")
    seconds = time.perf_counter() - started
    print(json.dumps({"rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": seconds}))


def bench_rss(cache: Path, threads: int, lengths: Sequence[int]) -> None:
    download(get_spec("tiny"), None, cache)  # build it once, so that the children only load it
    rows, base = [], 0.0
    for frames in (0, *lengths):
        # Started through sh, which forks it: Linux keeps ru_maxrss across execve, so a child exec'd
        # straight from this process would report this process's peak RSS as its own.
        child = [sys.executable, __file__, f"--rss-child={frames}", f"--cache-dir={cache}", f"--threads={threads}"]
        done = subprocess.run(["sh", "-c", '"$@"; exit $?', "sh", *child], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"the child for {frames} frames failed:\n{done.stderr}")
        report = json.loads(done.stdout.splitlines()[-1])
        mib = report["rss_kib"] / 1024
        base = base or (mib if frames else 0.0)
        label, sections = (str(frames), str(request("tiny", frames).sections)) if frames else ("load only", "-")
        ratio = f"{mib / base:.2f}" if frames else "-"
        rows.append([label, sections, f"{report['seconds']:.1f}", f"{mib:.0f}", ratio])
    title = f'2. Peak RSS rendering "tiny" to an MP4 (80x48, {RSS_STEPS} Euler steps), a fresh process each'
    table(title, ["frames", "sections", "render s", "peak RSS MiB", f"ratio to {lengths[0]}"], rows)


def pipeline_for(engine: Engine) -> HunyuanVideoFramepackPipeline:
    """diffusers' FramePack pipeline on the engine's own components (the Euler scheduler it ships with)."""
    c = engine.components
    pipe = HunyuanVideoFramepackPipeline(
        text_encoder=c.text_encoder, tokenizer=c.tokenizer, transformer=c.transformer, vae=c.vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0, use_dynamic_shifting=True),
        text_encoder_2=c.text_encoder_2, tokenizer_2=c.tokenizer_2, image_encoder=c.image_encoder,
        feature_extractor=c.feature_extractor,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def runners(engine: Engine, sections: int) -> dict[str, Callable[[], int]]:
    """Our run and diffusers' run of the same video; each returns its frame count."""
    params = request(engine.spec.name, frames_of(sections))
    width, height = params.size
    pipe = pipeline_for(engine)
    forward = engine.spec.order is SamplingOrder.FORWARD

    def ours() -> int:  # chunks are consumed as they come, as the MP4 writer does
        return sum(len(chunk) for chunk in engine.frames(params, IMAGE))

    def theirs() -> int:  # diffusers' section count is ceil(num_frames / (4 * lws - 3))
        return len(pipe(
            image=Image.fromarray(resize_and_center_crop(IMAGE, width, height)), prompt=params.prompt,
            height=height, width=width, num_frames=sections * (4 * LWS - 3), latent_window_size=LWS,
            num_inference_steps=params.num_inference_steps, guidance_scale=params.guidance_scale,
            sampling_type="vanilla" if forward else "inverted_anti_drifting",
            prompt_template={"template": PROMPT_TEMPLATE, "crop_start": template_crop_start(pipe.tokenizer)},
            generator=torch.Generator().manual_seed(SEED), output_type="np",
        ).frames[0])  # fmt: skip

    return {"ours": ours, "diffusers": theirs}


def bench_diffusers(engines: dict[str, Timed], repeats: int, sections: int = 2) -> None:
    rows = []
    for model, timed in engines.items():
        run, names = runners(timed.engine, sections), ("ours", "diffusers")
        seconds: dict[str, list[float]] = {name: [] for name in names}
        shares: dict[str, list[float]] = {name: [] for name in names}
        frames: dict[str, int] = {}
        for i in range(repeats):
            for name in names if i % 2 == 0 else names[::-1]:  # alternate which goes first
                timed.reset()
                started = time.perf_counter()
                frames[name] = run[name]()
                seconds[name].append(time.perf_counter() - started)
                shares[name].append(timed.share())
        ours, theirs = (statistics.median(seconds[name]) for name in names)
        share = " / ".join(f"{100 * statistics.median(shares[name]):.0f}%" for name in names)
        rows.append([
            model, timed.engine.spec.order.value, f"{frames['ours']} / {frames['diffusers']}",
            f"{ours:.2f}", f"{theirs:.2f}", f"{ours / theirs:.2f}", share,
        ])  # fmt: skip
    title = (
        f"3. One video against diffusers' HunyuanVideoFramepackPipeline, same weights: Euler, {STEPS} steps,"
        f" {sections} sections, 80x48,\n   frames out (ours: Engine.frames, no MP4; diffusers: output_type="
        f"'np'), median of {repeats} alternating run(s) each"
    )
    header = ["model", "order", "frames ours / diff.", "ours s", "diffusers s", "ours/diffusers"]
    table(title, [*header, "transformer share ours / diff."], rows, ["goal of the project: ours/diffusers <= 1.0"])


def main() -> None:
    ap = argparse.ArgumentParser(description="Engine benchmarks on random-weight models (see the docstring).")
    ap.add_argument("--quick", action="store_true", help="2 and 4 sections, 540 frames, 1 run each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--cache-dir", type=Path, help="where the models are built (default: a temporary folder)")
    ap.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for lib in (transformers, diffusers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()
    if args.rss_child is not None:
        rss_child(args.rss_child, args.cache_dir)
        return
    started = time.perf_counter()
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, {args.threads} torch thread(s), ", end="")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {'quick' if args.quick else 'full'} run")
    with tempfile.TemporaryDirectory(prefix="framepack-bench-") as tmp:
        settings = get_settings(cache_dir=args.cache_dir or Path(tmp), auto_download=False)
        small = Timed(Engine.load("small", settings=settings))
        bench_sections(small, (2, 4) if args.quick else (2, 8, 32, 2))
        bench_rss(settings.cache_dir, args.threads, (180, 540) if args.quick else (180, 1800))
        engines = {"small": small, "small-f1": Timed(Engine.load("small-f1", settings=settings))}
        bench_diffusers(engines, repeats=1 if args.quick else 3)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
