"""GPU numbers in one run: the full-size transformer and VAE with random weights, through our engine.

Builds the FramePack transformer with the published configuration (diffusers'
``HunyuanVideoFramepackTransformer3DModel`` defaults, which are HunyuanVideo's, plus FramePack's image
projection and clean-latent embedders: 24 heads of 128, 20 dual and 40 single blocks, about 13B
parameters) in bf16, and HunyuanVideo's VAE (diffusers' ``AutoencoderKLHunyuanVideo`` defaults) in
fp16, both with random weights. The text and image encoders are small stand-ins with the real output
sizes (Llama hidden 4096, CLIP pooled 768, SigLIP 729 tokens of 1152): they run once per job and are
not what is measured. Everything then goes through `Engine` as a real job does: the published
``framepack`` model's sizes (480p: 832x480, 720p: 1280x720), latent window 9, one section.

1. Options, everything resident on the GPU: seconds per sampling step (median of the steps after the
   first), and seconds per frame of a 25-step section, ``(25 x step + VAE decode of the window) / 36``
   (a section of a long video adds 4 x 9 = 36 frames). The step caches run a whole 25-step section
   (their skip pattern needs it) and count its measured time; the exact path runs a 4-step video (a
   step costs the same at every step, and the video gives the decode's time) after a 2-step warm-up;
   the attention backends and compile run --steps-timed steps.
   Options: exact (native SDPA), TeaCache 0.15, diffusers' first-block cache, every attention backend
   of diffusers' dispatcher that runs here, ``torch.compile`` (compile time apart).
2. Memory modes (``resident``, ``offload``, ``group`` the 6 GB class, ``fp8``, ``fp8-group``): peak GPU
   memory from the second sampling step through the VAE decode (allocated and reserved by PyTorch),
   seconds per step and the decode's seconds, from a 4-step one-section video at each resolution.

Random weights: speed and memory are those of the real model, quality is not measured, and the step
caches' skip counts say nothing about real videos (they depend on how the model's input changes).
Each row prints as soon as it is measured and all rows go to ``--json`` (default ``$OUT/gpu.json``
when ``$OUT`` is set), so a run stopped by a time limit keeps what it measured; ``--budget SECONDS``
skips what would start after that many seconds. Out-of-memory is reported as such, not fatal.

    python benchmarks/gpu.py                         # on a GPU: every number (an estimated 10 min on an H100)
    python benchmarks/gpu.py --only options,modes    # a part: options, caches, attention, modes, compile
    python benchmarks/gpu.py --quick                 # reduced configs and tiny sizes: checks the script (CPU)

Not run on a GPU yet; ``--quick`` ran on the CPU (about 2-5 minutes on 2 shared cores).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackTransformer3DModel

sys.path.insert(0, str(Path(__file__).parent))
from engine import IMAGE, table  # noqa: E402  (benchmarks/engine.py: the picture, the table printer)

from framepack_server.engine.acceleration import set_attention  # noqa: E402
from framepack_server.engine.generate import Engine, Progress  # noqa: E402
from framepack_server.engine.loading import Components, component_dtype  # noqa: E402
from framepack_server.engine.memory import MemoryMode  # noqa: E402
from framepack_server.engine.registry import get_spec  # noqa: E402
from framepack_server.engine.request import GenerationParams  # noqa: E402
from framepack_server.engine.tiny import PRESETS, _build, _clip_tokenizer, _llama_tokenizer  # noqa: E402
from framepack_server.errors import InputError  # noqa: E402

PROMPT = "a red fox runs through snow"
LWS, SECTION_STEPS = 9, 25  # the reference's latent window and steps
FRAMES_PER_SECTION = 4 * LWS
# FramePack's published transformer: diffusers' defaults (HunyuanVideo's) and the two FramePack parts
TRANSFORMER_CONFIG = {"has_image_proj": True, "image_proj_dim": 1152, "has_clean_x_embedder": True}
ATTENTION = ["native", "_native_cudnn", "_native_flash", "_native_efficient", "flash", "_flash_3", "sage", "xformers"]
MODES = ["resident", "group", "fp8-group", "fp8", "offload"]
PARTS = ("options", "caches", "attention", "modes", "compile")


class Enough(Exception):
    """Raised from the progress callback once enough steps are timed."""


# ---- the model --------------------------------------------------------------------------------------


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@dataclass
class Parts:
    """Everything needed to assemble fresh components; the big weights are kept once, on the CPU."""

    spec_name: str
    big: dict[str, tuple[type, dict, dict]]  # name -> (class, config, CPU state dict)
    small: dict[str, object]  # encoders, tokenizers, feature extractor (copied per engine)

    def components(self) -> Components:
        """Fresh modules sharing the CPU weights (no copy): each engine puts its own hooks on them."""
        built = {}
        for name, (cls, config, state) in self.big.items():
            with torch.device("meta"):
                module = cls.from_config(config)
            module.load_state_dict(state, assign=True)
            built[name] = module.eval().requires_grad_(False)
        for name, obj in self.small.items():
            built[name] = copy.deepcopy(obj)
        return Components(spec=get_spec(self.spec_name), **built)


def build_parts(quick: bool, device: torch.device) -> Parts:
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaModel,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    spec = get_spec("small" if quick else "framepack")
    dtype = {c.name: component_dtype(c, device) for c in spec.components}
    torch.manual_seed(0)
    if quick:  # the benchmark model "small": reduced transformer, tiny VAE and encoders
        made = {c.name: _build(c, PRESETS["small"], i) for i, c in enumerate(spec.components)}
        configs = {"transformer": dict(made["transformer"].config), "vae": dict(made["vae"].config)}
        small = {n: made[n] for n in ("text_encoder", "text_encoder_2", "image_encoder")}
        small |= {n: made[n] for n in ("tokenizer", "tokenizer_2", "feature_extractor")}
    else:
        configs = {"transformer": TRANSFORMER_CONFIG, "vae": {}}
        llama = LlamaConfig(
            hidden_size=4096, intermediate_size=1024, num_attention_heads=32, num_key_value_heads=8,
            num_hidden_layers=3, vocab_size=128, bos_token_id=2, eos_token_id=3, pad_token_id=0,
        )  # fmt: skip
        clip = CLIPTextConfig(
            hidden_size=768, intermediate_size=256, num_attention_heads=12, num_hidden_layers=1, vocab_size=256,
            projection_dim=768, max_position_embeddings=77, eos_token_id=1, bos_token_id=0, pad_token_id=1,
        )  # fmt: skip
        siglip = SiglipVisionConfig(
            hidden_size=1152, intermediate_size=512, num_attention_heads=16, num_hidden_layers=1,
            image_size=384, patch_size=14,
        )  # fmt: skip
        small = {
            "text_encoder": LlamaModel(llama), "text_encoder_2": CLIPTextModel(clip),
            "image_encoder": SiglipVisionModel(siglip), "tokenizer": _llama_tokenizer(),
            "tokenizer_2": _clip_tokenizer(),
            "feature_extractor": SiglipImageProcessor(size={"height": 384, "width": 384}),
        }  # fmt: skip
    for name in ("text_encoder", "text_encoder_2", "image_encoder"):
        small[name] = small[name].to(dtype[name]).eval().requires_grad_(False)
    big = {}
    classes = {"transformer": HunyuanVideoFramepackTransformer3DModel, "vae": AutoencoderKLHunyuanVideo}
    for name, cls in classes.items():
        started = time.perf_counter()
        # Random initialisation is fast on the GPU; the weights then wait on the CPU, as loaded ones do.
        with torch.device(device), default_dtype(dtype[name]):
            module = cls.from_config(configs[name])
        config = dict(module.config)
        state = {k: v.detach().to("cpu") for k, v in module.state_dict().items()}
        params = sum(v.numel() for v in state.values())
        del module
        free_device(device)
        big[name] = (cls, config, state)
        print(f"built {name}: {params / 1e9:.2f}B parameters, {dtype[name]}, {time.perf_counter() - started:.1f} s")
    return Parts(spec.name, big, small)


def free_device(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- measuring ----------------------------------------------------------------------------------------


@dataclass
class Measured:
    steps: list[float] = field(default_factory=list)  # seconds of each sampling step
    sampling: float = 0.0  # first transformer call to the last step
    to_first_step: float = 0.0  # start of the job (conditioning, weights moving in) to the end of step 1
    decode: float | None = None  # last step to the end (the VAE decode of the window)
    peak_allocated: float | None = None  # GiB, from the second step on
    peak_reserved: float | None = None
    ran: tuple[int, int] = (0, 0)
    finite: bool = True

    @property
    def per_step(self) -> float:
        later = self.steps[1:] or self.steps
        return statistics.median(later)


def measure(engine: Engine, resolution: str, steps: int, stop_after: int | None = None, **fields) -> Measured:
    """One one-section video; ``stop_after`` ends it after that many steps (no decode)."""
    device = engine.device
    cuda = device.type == "cuda"
    params = GenerationParams.parse(
        image="bench", prompt=PROMPT, model=engine.spec.name, resolution=resolution, num_frames=FRAMES_PER_SECTION + 1,
        seed=1, num_inference_steps=steps, latent_window_size=LWS, **fields,
    )  # fmt: skip
    out = Measured()
    marks: list[float] = []
    first_call: list[float] = []

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def pre_hook(*_):
        if not first_call:
            sync()
            first_call.append(time.perf_counter())

    def post_hook(_module, _args, output):
        if len(marks) == 0 and out.finite:
            out.finite = bool(torch.isfinite(output[0]).all())

    def on_progress(event: Progress) -> None:
        if event.phase != "sampling":
            return
        sync()
        marks.append(time.perf_counter())
        if len(marks) == 1 and cuda:
            torch.cuda.reset_peak_memory_stats(device)
        if stop_after is not None and len(marks) >= stop_after:
            raise Enough

    transformer = engine.components.transformer
    handles = [transformer.register_forward_pre_hook(pre_hook), transformer.register_forward_hook(post_hook)]
    started = time.perf_counter()
    try:
        with contextlib.suppress(Enough):
            for _ in engine.frames(params, IMAGE, on_progress=on_progress):
                pass
            sync()
            out.decode = time.perf_counter() - marks[-1]
    finally:
        for handle in handles:
            handle.remove()
    out.steps = np.diff([first_call[0], *marks]).tolist()
    out.sampling = marks[-1] - first_call[0]
    out.to_first_step = marks[0] - started
    history = engine.step_cache.history[-1:]
    out.ran = (history[0][2], history[0][1]) if history and stop_after is None else (0, 0)
    if cuda:
        out.peak_allocated = torch.cuda.max_memory_allocated(device) / 2**30
        out.peak_reserved = torch.cuda.max_memory_reserved(device) / 2**30
    return out


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


class Report:
    """Rows as they come: printed at once, and the whole report saved as JSON after each one."""

    def __init__(self, path: Path | None, budget: float | None, meta: dict) -> None:
        self.path, self.budget, self.started = path, budget, time.perf_counter()
        self.data: dict = {"meta": meta, "options": [], "modes": []}

    def add(self, kind: str, row: dict) -> None:
        self.data[kind].append(row)
        cells = ", ".join(f"{k}={v}" for k, v in row.items())
        print(f"  [{time.perf_counter() - self.started:6.0f} s] {kind}: {cells}")
        sys.stdout.flush()
        if self.path is not None:
            self.path.write_text(json.dumps(self.data, indent=1))

    def run(self, kind: str, row: dict, device: torch.device, fill: Callable[[dict], None]) -> None:
        """Fill ``row`` by measuring; over the budget it is skipped, a failure (out of memory included)
        becomes its note."""
        if self.budget is not None and time.perf_counter() - self.started > self.budget:
            row["note"] = "skipped: over the time budget"
        else:
            try:
                fill(row)
            except torch.OutOfMemoryError:
                row["note"] = "out of GPU memory"
            except Exception as exc:  # one failed option must not cost the others
                traceback.print_exc()
                row["note"] = f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"
            free_device(device)
        self.add(kind, row)


@dataclass
class Run:
    device: torch.device
    resolutions: list[str]
    section_steps: int  # steps of a whole section (25, the reference's)
    steps_timed: int  # steps run for the options timed per step
    report: Report

    @property
    def resident(self) -> str:
        return "cpu" if self.device.type == "cpu" else "resident"

    def option(self, name: str, res: str, m: Measured, decode: float | None, note: str = "") -> dict:
        decode = m.decode if m.decode is not None else decode
        whole = len(m.steps) >= self.section_steps
        section = (m.sampling if whole else self.section_steps * m.per_step) + (decode or 0.0)
        ran, calls = m.ran
        notes = [note] if note else []
        if not m.finite:
            notes.append("non-finite transformer output (random weights)")
        return {
            "option": name, "resolution": res, "s_per_step": round(m.per_step, 3),
            "s_per_frame": round(section / FRAMES_PER_SECTION, 3),
            "decode_s": None if decode is None else round(decode, 2),
            "blocks_ran": f"{ran}/{calls}" if calls else "", "note": "; ".join(notes),
        }  # fmt: skip


def engine_for(parts: Parts, mode: str, device: torch.device, compile: bool = False) -> Engine:
    return Engine.assemble(parts.components(), MemoryMode(mode), device, attention="native", compile=compile)


def bench_options(parts: Parts, run: Run, wanted: set[str]) -> None:
    started = time.perf_counter()
    engine = engine_for(parts, run.resident, run.device)
    print(f"resident engine ready in {time.perf_counter() - started:.1f} s")
    steps, decode = run.section_steps, {}
    whole = f"whole section of {steps} steps"

    def exact(res: str) -> Callable[[dict], None]:
        def fill(row: dict) -> None:
            measure(engine, res, 4, stop_after=2)  # warm-up: first-call costs at this size
            m = measure(engine, res, 4)  # the step time is the same at every step: 4 give it, and the decode
            decode[res] = m.decode
            row |= run.option("exact", res, m, None, "4-step video")

        return fill

    def cached(name: str, res: str, override: tuple[str, float] | None, **fields) -> Callable[[dict], None]:
        def fill(row: dict) -> None:
            engine.step_cache_override = override
            try:
                m = measure(engine, res, steps, **fields)
            finally:
                engine.step_cache_override = None
            row |= run.option(name, res, m, decode.get(res), whole)

        return fill

    def timed(name: str, res: str) -> Callable[[dict], None]:
        def fill(row: dict) -> None:
            m = measure(engine, res, steps, stop_after=run.steps_timed)
            row |= run.option(name, res, m, decode.get(res), f"{run.steps_timed} steps")

        return fill

    if "options" in wanted:
        for res in run.resolutions:
            run.report.run("options", {"option": "exact", "resolution": res}, run.device, exact(res))
    if "caches" in wanted:
        for res in run.resolutions:
            fill = cached("TeaCache 0.15", res, None, enable_teacache=True)
            run.report.run("options", {"option": "TeaCache 0.15", "resolution": res}, run.device, fill)
    if "attention" in wanted:
        transformer = engine.components.transformer
        for name in ATTENTION[1:]:
            try:
                set_attention(transformer, name, run.device)
            except InputError as exc:
                note = f"not available: {exc.message[:100]}"
                run.report.add("options", {"option": f"attention {name}", "note": note})
                continue
            for res in run.resolutions:
                run.report.run("options", {"option": f"attention {name}", "resolution": res}, run.device, timed(
                    f"attention {name}", res))  # fmt: skip
            set_attention(transformer, "native", run.device)
    if "caches" in wanted:
        for res in run.resolutions:
            fill = cached("first-block cache 0.05", res, ("first-block", 0.05))
            run.report.run("options", {"option": "first-block cache 0.05", "resolution": res}, run.device, fill)
    del engine
    free_device(run.device)
    if "compile" in wanted:
        engine = engine_for(parts, run.resident, run.device, compile=True)

        def compiled(res: str) -> Callable[[dict], None]:
            def fill(row: dict) -> None:
                before = engine.compile_seconds or 0.0
                m = measure(engine, res, steps, stop_after=run.steps_timed + 1)  # +1: the step that compiles
                spent = (engine.compile_seconds or 0.0) - before
                first, m.steps = m.steps[0], m.steps[1:]
                note = f"compiling {spent:.1f} s (first step {first:.1f} s); {run.steps_timed} steps"
                row |= run.option("torch.compile", res, m, decode.get(res), note)

            return fill

        for res in run.resolutions:
            run.report.run("options", {"option": "torch.compile", "resolution": res}, run.device, compiled(res))
        del engine
        free_device(run.device)


def bench_modes(parts: Parts, run: Run) -> None:
    for mode in MODES:
        name = run.resident if mode == "resident" else mode
        try:
            started = time.perf_counter()
            engine = engine_for(parts, name, run.device)
            ready = time.perf_counter() - started
        except Exception as exc:  # reported; the other modes go on
            run.report.add("modes", {"mode": name, "note": f"failed to set up: {type(exc).__name__}: {exc}"})
            free_device(run.device)
            continue

        for res in run.resolutions:
            run.report.run("modes", {"mode": name, "resolution": res}, run.device, mode_filler(engine, res, ready))
        del engine
        free_device(run.device)


def mode_filler(engine: Engine, res: str, ready: float) -> Callable[[dict], None]:
    def fill(row: dict) -> None:
        m = measure(engine, res, 4)
        row |= {
            "peak_allocated_gib": gib(m.peak_allocated), "peak_reserved_gib": gib(m.peak_reserved),
            "s_per_step": round(m.per_step, 3), "to_first_step_s": round(m.to_first_step, 2),
            "decode_s": round(m.decode or 0.0, 2), "setup_s": round(ready, 1),
        }  # fmt: skip

    return fill


def print_tables(report: Report) -> None:
    meta = report.data["meta"]
    rows = [
        [r["option"], r.get("resolution", "-"), str(r.get("s_per_step", "-")), str(r.get("s_per_frame", "-")),
         str(r.get("decode_s", "-")), r.get("blocks_ran", ""), r.get("note", "")]
        for r in report.data["options"]
    ]  # fmt: skip
    title = f"1. Options on {meta['device_name']}, everything resident, one section of the full-size model"
    header = ["option", "res.", "s/step", "s/frame", "decode s", "blocks ran", "note"]
    notes = [f"s/frame = ({meta['section_steps']} steps + decode of the window) / {FRAMES_PER_SECTION} frames"]
    table(title, header, rows, notes)
    keys = ["peak_allocated_gib", "peak_reserved_gib", "s_per_step", "to_first_step_s", "decode_s", "setup_s"]
    rows = [
        [r["mode"], r.get("resolution", "-"), *(str(r.get(k, "-")) for k in keys), r.get("note", "")]
        for r in report.data["modes"]
    ]  # fmt: skip
    title = "2. Memory modes, 4-step one-section video: peak GPU memory (GiB) from the second step through the decode"
    header = ["mode", "res.", "peak alloc.", "peak reserved", "s/step", "to step 1 s", "decode s", "setup s", "note"]
    table(title, header, rows, ["to step 1: conditioning, weights moving in, and the first step"])


def main() -> None:
    ap = argparse.ArgumentParser(description="GPU benchmark of the full-size model (see the docstring).")
    ap.add_argument("--quick", action="store_true", help="reduced configs, tiny sizes: checks the script")
    ap.add_argument("--device", help="default: cuda if available, else cpu")
    ap.add_argument("--only", help=f"comma-separated parts of {','.join(PARTS)} (default: all)")
    ap.add_argument("--resolutions", default="480p,720p")
    ap.add_argument("--steps-timed", type=int, default=4, help="steps run for the options timed per step")
    ap.add_argument("--section-steps", type=int, help="steps of a whole section (default 25; 8 with --quick)")
    ap.add_argument("--budget", type=float, help="start nothing new after this many seconds")
    ap.add_argument("--json", type=Path, help="where the rows go (default $OUT/gpu.json when $OUT is set)")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    wanted = set(args.only.split(",")) if args.only else set(PARTS)
    if unknown := wanted - set(PARTS):
        sys.exit(f"unknown parts: {', '.join(sorted(unknown))}")
    for lib in (transformers, diffusers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()
    if device.type == "cpu":
        torch.set_num_threads(min(4, os.cpu_count() or 1))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    meta = {
        "device_name": name, "torch": torch.__version__, "diffusers": diffusers.__version__,
        "quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M"),
        "section_steps": args.section_steps or (8 if args.quick else SECTION_STEPS),
    }  # fmt: skip
    if device.type == "cuda":
        meta["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    print(json.dumps(meta))
    json_path = args.json or (Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else None)
    report = Report(json_path, args.budget, meta)
    run = Run(device, args.resolutions.split(","), meta["section_steps"], args.steps_timed, report)
    parts = build_parts(args.quick, device)
    if wanted & {"options", "caches", "attention", "compile"}:
        bench_options(parts, run, wanted)
    if "modes" in wanted:
        bench_modes(parts, run)
    print_tables(report)
    print(f"\ntotal {time.perf_counter() - report.started:.0f} s")


if __name__ == "__main__":
    main()
