"""The one generation loop, for both sampling orders.

`Engine.frames` takes a request, its images and callbacks (progress, cancel, checkpoint) and yields
the video's frames in time order, in chunks, as soon as they are final: during generation in the
forward order, and at the end in the inverted order (whose sections come end-first; only their small
latents are kept, then decoded window by window). The frames of a long video never sit in memory
at once, and a run resumed from a section checkpoint yields exactly the frames of an uninterrupted
one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..config import Settings, get_settings
from ..errors import GenerationCancelled, GenerationPaused, InputError
from .acceleration import CompileClock, compile_blocks, set_attention
from .caches import LayoutCache, StepCache
from .checkpoint import CheckpointStore, fingerprint
from .conditioning import (
    Conditioning,
    encode_image_embeds,
    encode_latent,
    encode_text,
    resize_and_center_crop,
    to_pixels,
)
from .loading import Components, load_components
from .memory import MemoryMode, Placement, choose_mode, free_gpu_gb, pick_device
from .preview import fit_latent_rgb, latent_preview
from .registry import SamplingOrder, get_spec
from .request import GenerationParams
from .samplers import SAMPLERS, flow_mu, flow_sigmas
from .sections import (
    CONTEXT_LATENTS,
    OverlapBlender,
    Section,
    decode_windows,
    history_context,
    overlap_frames,
    plan_sections,
    section_span,
)

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """One progress event. ``section`` and ``step`` count from 1; ``phase`` is encoding, sampling,
    decoding or done. ``preview`` is a cheap RGB strip of the current section's frames."""

    phase: str
    section: int
    sections: int
    step: int
    steps: int
    elapsed: float
    eta_seconds: float | None
    frames_done: int = 0
    preview: np.ndarray | None = field(default=None, repr=False)


ProgressFn = Callable[[Progress], None]


@dataclass
class _Run:
    """Mutable state of one generation."""

    params: GenerationParams
    plan: list[Section]
    cond: Conditioning
    generator: torch.Generator
    fingerprint: str
    on_progress: ProgressFn | None
    should_cancel: Callable[[], bool] | None
    started: float = field(default_factory=time.monotonic)
    generated: list[torch.Tensor] = field(default_factory=list)  # per section, generation order
    steps_timed: int = 0
    sampling_time: float = 0.0
    decode_time: float = 0.0
    windows_decoded: int = 0

    def decode_eta(self, windows_left: int) -> float:
        """Seconds to decode the windows left, from the windows decoded so far (0 before any)."""
        return self.decode_time / self.windows_decoded * windows_left if self.windows_decoded else 0.0


class Engine:
    """A loaded model on a device. Load once, generate many videos."""

    def __init__(
        self,
        components: Components,
        placement: Placement,
        *,
        step_cache: StepCache | None = None,
        layout_cache: LayoutCache | None = None,
        compile_clock: CompileClock | None = None,
    ) -> None:
        self.components = components
        self.spec = components.spec
        self.placement = placement
        self.device = placement.device
        if step_cache is None:  # built here when not by `load` (which puts its hooks around the placement)
            step_cache = StepCache(components.transformer)
            step_cache.install_inner()
            step_cache.install_outer()
        if layout_cache is None:
            layout_cache = LayoutCache(components.transformer)
            layout_cache.install()
        self.step_cache, self.layout_cache, self.compile_clock = step_cache, layout_cache, compile_clock
        self.step_cache_override: tuple[str, float] | None = None
        with placement.use("vae"):
            self.latent_rgb = fit_latent_rgb(components.vae)

    @classmethod
    def load(
        cls,
        model: str = "framepack",
        *,
        settings: Settings | None = None,
        device: str | None = None,
        memory: str | None = None,
        attention: str | None = None,
        compile: bool | None = None,
    ) -> Engine:
        """Load a model. ``attention`` and ``compile`` override the settings' (see `acceleration`)."""
        settings = settings or get_settings()
        spec = get_spec(model)
        dev = pick_device(device or settings.device)
        components = load_components(
            spec,
            model_dir=settings.model_dir,
            cache_dir=settings.cache_dir,
            device=dev,
            download_ok=settings.auto_download,
        )
        free = free_gpu_gb(dev) if dev.type == "cuda" else None
        mode = choose_mode(memory or settings.memory, dev, free, settings.high_vram_gb, settings.preserved_memory_gb)
        return cls.assemble(
            components, mode, dev,
            attention=attention or settings.attention, compile=settings.compile if compile is None else compile,
        )  # fmt: skip

    @classmethod
    def assemble(
        cls, components: Components, mode: MemoryMode, device: torch.device, *, attention: str, compile: bool
    ) -> Engine:
        """An engine on loaded components (on the CPU): attention, compile, caches and memory mode."""
        transformer = components.transformer
        set_attention(transformer, attention, device)
        clock = None
        if compile:
            clock = CompileClock()
            log.info("compiling %d transformer blocks at their first call", compile_blocks(transformer))
        # The order of the hooks matters (each wraps the ones before): compiled blocks innermost, then
        # the step caches' first-block hook, then the memory mode's hooks, then the block-skipping hooks.
        layout_cache = LayoutCache(transformer)
        layout_cache.install()
        step_cache = StepCache(transformer)
        step_cache.install_inner()
        placement = Placement(components, mode, device)
        step_cache.install_outer()
        return cls(components, placement, step_cache=step_cache, layout_cache=layout_cache, compile_clock=clock)

    @property
    def memory_mode(self) -> MemoryMode:
        return self.placement.mode

    @property
    def compile_seconds(self) -> float | None:
        """Seconds spent compiling the transformer so far (None: not compiled)."""
        return self.compile_clock.seconds if self.compile_clock is not None else None

    # ---- conditioning -------------------------------------------------------------------------

    def _condition(
        self,
        params: GenerationParams,
        image: Image.Image,
        last_image: Image.Image | None,
        gen: torch.Generator,
    ) -> Conditioning:
        c = self.components
        width, height = params.size
        with self.placement.use("text_encoder", "text_encoder_2"):
            positive = encode_text(c, params.prompt)
            negative = encode_text(c, params.negative_prompt) if params.true_cfg_scale > 1 else None
        pixels = to_pixels(resize_and_center_crop(image, width, height))
        end_pixels = to_pixels(resize_and_center_crop(last_image, width, height)) if last_image else None
        with self.placement.use("image_encoder"):
            image_embeds = encode_image_embeds(c, pixels)
            if end_pixels is not None:
                # As the end-frame extension of the reference (FramePack PR 167) and diffusers do.
                image_embeds = (image_embeds + encode_image_embeds(c, end_pixels)) / 2
        with self.placement.use("vae"):
            start_latent = encode_latent(c.vae, pixels, gen)
            end_latent = encode_latent(c.vae, end_pixels, gen) if end_pixels is not None else None
        dtype = c.transformer.dtype
        return Conditioning(
            positive=positive.to(self.device, dtype),
            negative=negative.to(self.device, dtype) if negative else None,
            image_embeds=image_embeds.to(self.device, dtype),
            start_latent=start_latent.cpu(),
            end_latent=end_latent.cpu() if end_latent is not None else None,
        )

    # ---- the loop ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def frames(
        self,
        params: GenerationParams,
        image: Image.Image,
        last_image: Image.Image | None = None,
        *,
        on_progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
        checkpoint: CheckpointStore | None = None,
        should_pause: Callable[[], bool] | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield the video as uint8 (T, H, W, 3) chunks in time order, ``num_frames`` in all.

        ``params.seed`` must be concrete (see `GenerationParams.resolved`). ``should_pause`` is asked
        after each section's checkpoint is saved; True stops the run there (`GenerationPaused`).
        """
        if params.model != self.spec.name:
            raise InputError("model", f"this engine runs {self.spec.name!r}, not {params.model!r}")
        if params.seed < 0:
            raise InputError("seed", "resolve the random seed before generating")
        if last_image is not None and self.spec.order is not SamplingOrder.INVERTED:
            raise InputError("last_image", f"an end image needs an inverted-order model, not {self.spec.name!r}")
        lws = params.latent_window_size
        plan = plan_sections(self.spec.order, params.sections, lws)
        generator = torch.Generator("cpu").manual_seed(params.seed)
        self._emit(on_progress, Progress("encoding", 0, len(plan), 0, params.num_inference_steps, 0.0, None))
        run = _Run(
            params=params,
            plan=plan,
            cond=self._condition(params, image, last_image, generator),
            generator=generator,
            fingerprint=fingerprint(params.model_dump(exclude={"image", "last_image"})),
            on_progress=on_progress,
            should_cancel=should_cancel,
        )
        if checkpoint is not None and (state := checkpoint.load()) is not None:
            if state.fingerprint != run.fingerprint:
                raise ValueError("the checkpoint belongs to another request; refusing to resume from it")
            run.generated = state.latents
            generator.set_state(state.rng_state)
            log.info("resuming after section %d of %d", state.sections_done, len(plan))

        windows = decode_windows(self.spec.order, len(plan), lws)
        blender = OverlapBlender(overlap_frames(lws))
        remaining = params.num_frames
        forward = self.spec.order is SamplingOrder.FORWARD
        for section in plan:
            if section.index >= len(run.generated):
                run.generated.append(self._sample_section(run, section))
                if checkpoint is not None:
                    checkpoint.save_section(run.fingerprint, section.index, run.generated[-1], generator.get_state())
                    if should_pause is not None and section.index < len(plan) - 1 and should_pause():
                        raise GenerationPaused(f"paused after section {section.index + 1} of {len(plan)}")
            if forward:  # window k needs sections up to k: decode it now
                chunk = self._decode_window(run, windows, section.index, blender)
                remaining = yield from self._trimmed(chunk, remaining)
        if not forward:
            for j in range(len(windows)):
                chunk = self._decode_window(run, windows, j, blender)
                remaining = yield from self._trimmed(chunk, remaining)
        elapsed = time.monotonic() - run.started
        self._emit(on_progress, Progress("done", len(plan), len(plan), 0, 0, elapsed, 0.0, params.num_frames))

    @staticmethod
    def _trimmed(chunk: np.ndarray, remaining: int) -> Iterator[np.ndarray]:
        """Yield at most ``remaining`` frames (the surplus of the last section is dropped)."""
        if remaining > 0 and len(chunk):
            yield chunk[:remaining]
        return max(0, remaining - len(chunk))

    def _emit(self, on_progress: ProgressFn | None, event: Progress) -> None:
        if on_progress is not None:
            on_progress(event)

    def _check_cancel(self, run: _Run) -> None:
        if run.should_cancel is not None and run.should_cancel():
            raise GenerationCancelled("generation cancelled")

    def _recent_history(self, run: _Run) -> torch.Tensor:
        """The latest generated sections that can reach the context, in time order (no start latent)."""
        count = -(-CONTEXT_LATENTS // run.params.latent_window_size) + 1
        chunks = run.generated[-count:]
        if self.spec.order is SamplingOrder.INVERTED:
            chunks = chunks[::-1]
        return torch.cat(chunks, dim=2) if chunks else run.cond.start_latent[:, :, :0]

    def _sample_section(self, run: _Run, section: Section) -> torch.Tensor:
        params, cond = run.params, run.cond
        lws, steps = params.latent_window_size, params.num_inference_steps
        ix = section.indices
        one, two, four = history_context(self.spec.order, self._recent_history(run), cond.start_latent)
        if section.is_first and cond.end_latent is not None:
            one = cond.end_latent  # the end image is the 1x history of the last-in-time section
        _, channels, _, h, w = cond.start_latent.shape
        noise = torch.randn((1, channels, lws, h, w), generator=run.generator, dtype=torch.float32)
        sigmas = flow_sigmas(steps, flow_mu(lws * h * w / 4))
        dtype = self.components.transformer.dtype
        clean = torch.cat([cond.start_latent, one], dim=2)
        inputs = {
            "image_embeds": cond.image_embeds,
            "guidance": torch.tensor([params.guidance_scale], dtype=dtype, device=self.device) * 1000.0,
            "latents_clean": clean.to(self.device, dtype),
            "latents_history_2x": two.to(self.device, dtype),
            "latents_history_4x": four.to(self.device, dtype),
            # one set of index tensors per layout, so that the layout cache recognises a repeated layout
            **self.layout_cache.indices(
                (str(self.device), *map(tuple, (ix.latents, ix.clean, ix.history_2x, ix.history_4x))),
                lambda: ix.as_tensors(self.device),
            ),
        }
        transformer = self.components.transformer
        dev_sigmas = sigmas.to(self.device)
        step_cache = self.step_cache

        def branch(x: torch.Tensor, t: torch.Tensor, text, name: str) -> torch.Tensor:
            with step_cache.branch(name):
                return transformer(
                    hidden_states=x,
                    timestep=t,
                    encoder_hidden_states=text.embeds,
                    encoder_attention_mask=text.mask,
                    pooled_projections=text.pooled,
                    return_dict=False,
                    **inputs,
                )[0].float()

        def velocity(x: torch.Tensor, i: int) -> torch.Tensor:
            t = (dev_sigmas[i : i + 1] * 1000.0).to(torch.float32)
            xd = x.to(dtype)
            v = branch(xd, t, cond.positive, "positive")
            if cond.negative is not None:
                v_neg = branch(xd, t, cond.negative, "negative")
                v = v_neg + params.true_cfg_scale * (v - v_neg)
            return v

        started = time.monotonic()

        def on_step(i: int, total: int, x0: torch.Tensor) -> None:
            self._check_cancel(run)
            run.steps_timed += 1
            per_step = (run.sampling_time + time.monotonic() - started) / run.steps_timed
            todo = len(run.plan) * steps - (section.index * steps + i + 1)
            windows_left = len(run.plan) - run.windows_decoded
            preview = None
            if run.on_progress is not None:
                preview = latent_preview(x0, self.latent_rgb, self.components.vae.config.scaling_factor)
            self._emit(
                run.on_progress,
                Progress(
                    "sampling", section.index + 1, len(run.plan), i + 1, total,
                    time.monotonic() - run.started, per_step * todo + run.decode_eta(windows_left), 0, preview,
                ),
            )  # fmt: skip

        self._check_cancel(run)
        method, threshold = self.step_cache_choice(params)
        with self.placement.use("transformer"), step_cache.section(method, threshold, steps):
            x = SAMPLERS[params.sampler](
                lambda x, _sigma, i: velocity(x, i), noise.to(self.device), dev_sigmas, on_step
            )
            if method is not None:
                log.info(
                    "section %d of %d: %s (threshold %g) ran the blocks in %d of %d transformer calls",
                    section.index + 1, len(run.plan), method, threshold, step_cache.computed, step_cache.calls,
                )  # fmt: skip
        if self.compile_clock is not None and (spent := self.compile_clock.lap()) > 0:
            log.info("section %d: %.1f s spent compiling the transformer blocks", section.index + 1, spent)
        run.sampling_time += time.monotonic() - started
        return x.float().cpu()

    def step_cache_choice(self, params: GenerationParams) -> tuple[str | None, float]:
        """The step cache a request asks for and its threshold (None: the exact path).

        ``step_cache_override`` (method, threshold) forces one on every section: diffusers' first-block
        cache is reached only this way, by the benchmarks and tests that compare it with TeaCache
        (requests offer TeaCache alone; see the README's Speed section).
        """
        if self.step_cache_override is not None:
            return self.step_cache_override
        if params.enable_teacache:
            return "teacache", params.teacache_threshold
        return None, 0.0

    def _latent_span(self, run: _Run, a: int, b: int) -> torch.Tensor:
        """Latents [a, b) of the finished video's latent sequence [start, generated...]."""
        count, lws = len(run.plan), run.params.latent_window_size
        done = range(len(run.generated))
        pieces = [run.cond.start_latent] if a == 0 else []
        for k in done if self.spec.order is SamplingOrder.FORWARD else reversed(done):  # time order
            lo, hi = section_span(self.spec.order, k, count, lws)
            if lo < b and hi > a:
                pieces.append(run.generated[k][:, :, max(a, lo) - lo : min(b, hi) - lo])
        return torch.cat(pieces, dim=2)

    def _decode_window(self, run: _Run, windows: list[tuple[int, int]], j: int, blender: OverlapBlender):
        a, b = windows[j]
        span = self._latent_span(run, a, b)
        vae = self.components.vae
        self._check_cancel(run)
        started = time.monotonic()
        with self.placement.use("vae"):
            latents = span.to(self.device, vae.dtype) / vae.config.scaling_factor
            pixels = vae.decode(latents, return_dict=False)[0].float().cpu()
        run.decode_time += time.monotonic() - started
        run.windows_decoded += 1
        out = blender.push(pixels, last=j == len(windows) - 1)
        frames = (out[0].clamp(-1, 1) * 127.5 + 127.5).to(torch.uint8).permute(1, 2, 3, 0).numpy()
        self._emit(
            run.on_progress,
            Progress(
                "decoding", min(j + 1, len(run.plan)), len(run.plan), j + 1, len(windows),
                time.monotonic() - run.started, run.decode_eta(len(windows) - j - 1), 0,
            ),
        )  # fmt: skip
        return frames
