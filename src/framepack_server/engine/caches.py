"""Work the transformer need not repeat: step caches (TeaCache, first-block cache) and per-layout tensors.

**Step caches** skip the transformer's blocks on sampling steps whose input barely changed since the
last computed step, and add the residual that the blocks produced then instead:

- ``teacache``: TeaCache as the reference runs it (FramePack's ``hunyuan_video_packed.py``): the
  indicator is the first dual block's modulated input (``norm1(hidden_states, temb)``); the relative L1
  distance to the previous step's, rescaled by HunyuanVideo's TeaCache polynomial, accumulates until it
  reaches the threshold, then the blocks run and the sum restarts. The first and last step of a section
  always run; the state restarts with every section. Written here because diffusers has no TeaCache:
  the hooks below wrap diffusers' blocks through its public hook registry (``diffusers.hooks``), and
  the model's own code is left as it is.
- ``first-block``: diffusers' first-block cache (``FirstBlockCacheConfig``), which runs the first block
  every step and compares its residual with the previous one. It supports
  ``HunyuanVideoFramepackTransformer3DModel`` (whose blocks are HunyuanVideo's, registered with
  diffusers' cache hooks) but needs a cache context around every call, which diffusers' FramePack
  pipeline does not set; we set one per branch.

With true CFG each branch (positive, negative) keeps its own state: the reference shares one state
between both branches, so its step counter runs twice as fast as the steps and its first/last-step
rule lands on the wrong calls. The exact path (no cache) never passes through any of this but a
pass-through check.

**Layout cache.** Every step, the transformer recomputes the rotary embeddings of the four parts of its
input (noisy window, clean latents, 2x and 4x history) from the frame indices, downsamples the history
ones, embeds the clean latents (3D convolutions) and projects the SigLIP image embedding. None of this
changes between the steps of a section, and the rotary embeddings not between sections of the same
layout either. `LayoutCache` memoises these module calls on the identity of their tensor arguments
(the engine reuses one set of index tensors per layout and one set of context tensors per section), so
results are bit-identical and no device sync is needed to build a key.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

# HunyuanVideo's TeaCache rescale polynomial (highest power first), the one the reference uses.
TEACACHE_COEFFICIENTS = (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02)
TEACACHE_DEFAULT_THRESHOLD = 0.15
FIRST_BLOCK_DEFAULT_THRESHOLD = 0.05
CACHE_METHODS = ("teacache", "first-block")

_HEAD, _BLOCK, _COUNTER = "framepack_teacache_head", "framepack_teacache_block", "framepack_block_counter"


def teacache_rescale(rel_l1: float) -> float:
    """The polynomial that maps the indicator's relative L1 change to the output's (Horner's rule)."""
    value = 0.0
    for c in TEACACHE_COEFFICIENTS:
        value = value * rel_l1 + c
    return value


@dataclass
class TeaCacheState:
    """One branch's TeaCache state within one section of ``steps`` steps."""

    steps: int
    threshold: float
    step: int = 0
    accumulated: float = 0.0
    previous: torch.Tensor | None = None  # the indicator at the previous call
    residual: torch.Tensor | None = None  # output minus input of all blocks at the last computed call
    block_input: torch.Tensor | None = None
    skip: bool = False

    def should_compute(self, modulated: torch.Tensor) -> bool:
        if self.step in (0, self.steps - 1) or self.previous is None or self.residual is None:
            compute, self.accumulated = True, 0.0
        else:
            prev = self.previous
            rel_l1 = ((modulated - prev).abs().mean() / prev.abs().mean()).item()
            self.accumulated += teacache_rescale(rel_l1)
            compute = self.accumulated >= self.threshold
            if compute:
                self.accumulated = 0.0
        self.previous = modulated
        self.step = (self.step + 1) % self.steps
        return compute


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs[name]


def _blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]


def _register(module: torch.nn.Module, hook: Any, name: str) -> None:
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(module)
    if registry.get_hook(name) is None:
        registry.register_hook(hook, name)


def _hook_classes():
    """The hook classes, built on first use so that importing this module does not import diffusers."""
    from diffusers.hooks import ModelHook

    class TeaCacheHead(ModelHook):
        """On the first block: decide, from its modulated input, whether the blocks run this step."""

        def __init__(self, cache: StepCache) -> None:
            super().__init__()
            self.cache = cache

        def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            state = self.cache.teacache_state()
            if state is None:
                return self.fn_ref.original_forward(*args, **kwargs)
            hidden, temb = _arg(args, kwargs, 0, "hidden_states"), _arg(args, kwargs, 2, "temb")
            state.skip = not state.should_compute(module.norm1(hidden, emb=temb)[0])
            if state.skip:
                return hidden, _arg(args, kwargs, 1, "encoder_hidden_states")
            state.block_input = hidden  # the blocks never write into their inputs
            return self.fn_ref.original_forward(*args, **kwargs)

    class TeaCacheBlock(ModelHook):
        """On every other block: pass the input through on a skipped step; the last block adds the
        cached residual then, and records a fresh one on a computed step."""

        def __init__(self, cache: StepCache, tail: bool) -> None:
            super().__init__()
            self.cache, self.tail = cache, tail

        def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            state = self.cache.teacache_state()
            if state is None or not state.skip:
                out = self.fn_ref.original_forward(*args, **kwargs)
                if state is not None and self.tail:
                    state.residual, state.block_input = out[0] - state.block_input, None
                return out
            hidden, context = _arg(args, kwargs, 0, "hidden_states"), _arg(args, kwargs, 1, "encoder_hidden_states")
            return (hidden + state.residual if self.tail else hidden), context

    class Counter(ModelHook):
        """Counts the calls that really run a block (innermost, so skipped calls never reach it)."""

        def __init__(self, cache: StepCache) -> None:
            super().__init__()
            self.cache = cache

        def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
            self.cache.computed += 1
            return args, kwargs

    return TeaCacheHead, TeaCacheBlock, Counter


class StepCache:
    """The step caches of one transformer, off unless a section turns one on.

    Installed in two parts around the memory placement (see `Engine.assemble`): `install_inner` before it,
    so that the first block's hook runs after group offloading has brought that block's weights in (its
    norm is needed for the indicator); `install_outer` after it, so that a skipped block is skipped
    before group offloading would stream its weights in.
    """

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self.method: str | None = None
        self.threshold = 0.0
        self.steps = 0
        self.calls = 0  # transformer calls in the current section (each branch counts)
        self.computed = 0  # of which ran the blocks
        self._branch = "positive"
        self._states: dict[str, TeaCacheState] = {}
        self.history: list[tuple[str | None, int, int]] = []  # (method, calls, computed) of recent sections

    def install_inner(self) -> None:
        head, _block, counter = _hook_classes()
        blocks = _blocks(self.transformer)
        _register(blocks[-1], counter(self), _COUNTER)
        _register(blocks[0], head(self), _HEAD)

    def install_outer(self) -> None:
        _head, block, _counter = _hook_classes()
        blocks = _blocks(self.transformer)
        for i, b in enumerate(blocks[1:], start=1):
            _register(b, block(self, tail=i == len(blocks) - 1), _BLOCK)
        if len(blocks) == 1:  # the head is the tail: it records and applies the residual too
            _register(blocks[0], block(self, tail=True), _BLOCK)

    def teacache_state(self) -> TeaCacheState | None:
        if self.method != "teacache":
            return None
        if self._branch not in self._states:
            self._states[self._branch] = TeaCacheState(self.steps, self.threshold)
        return self._states[self._branch]

    @contextlib.contextmanager
    def section(self, method: str | None, threshold: float, steps: int) -> Iterator[StepCache]:
        """Turn ``method`` on (None: off) for one section of ``steps`` steps, with a fresh state."""
        if method is not None and method not in CACHE_METHODS:
            raise ValueError(f"unknown cache method {method!r}")
        self.method, self.threshold, self.steps = method, threshold, steps
        self.calls = self.computed = 0
        self._states.clear()
        if method == "first-block":
            from diffusers.hooks import FirstBlockCacheConfig

            self.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
        try:
            yield self
        finally:
            if method == "first-block":
                self.transformer.disable_cache()
            self.history = [*self.history[-63:], (method, self.calls, self.computed)]
            self.method = None
            self._states.clear()

    @contextlib.contextmanager
    def branch(self, name: str) -> Iterator[None]:
        """One transformer call of the named branch (``positive`` or ``negative``)."""
        self._branch = name
        self.calls += 1
        if self.method == "first-block":
            with self.transformer.cache_context(name):
                yield
        else:
            yield

    @property
    def skipped(self) -> int:
        return self.calls - self.computed


def _key_part(value: Any) -> Any:
    """A hashable stand-in for an argument: tensors by identity, containers by their items."""
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value))
    if isinstance(value, tuple | list):
        return tuple(_key_part(v) for v in value)
    if value is None or isinstance(value, int | float | str | bool | torch.device | torch.dtype):
        return value
    raise TypeError(type(value).__name__)


@dataclass
class _Memo:
    """Results of one module's calls, keyed on the identity of their tensor arguments."""

    size: int
    entries: OrderedDict = field(default_factory=OrderedDict)
    hits: int = 0
    misses: int = 0

    @staticmethod
    def key(args: tuple, kwargs: dict) -> tuple | None:
        try:
            return _key_part(args), _key_part(tuple(sorted(kwargs.items())))
        except TypeError:
            return None  # an argument we cannot key on: call through

    def call(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        key = self.key(args, kwargs)
        if key is None:
            return fn(*args, **kwargs)
        if key in self.entries:
            self.entries.move_to_end(key)
            self.hits += 1
            return self.entries[key][1]
        self.misses += 1
        out = fn(*args, **kwargs)
        # The arguments stay referenced by the entry, so that their ids cannot be reused by new
        # tensors while it lives. Nothing here writes into these tensors in place.
        self.entries[key] = ((args, kwargs), out)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return out


class LayoutCache:
    """Memoises the transformer's per-layout and per-section computations (see the module docstring).

    ``enabled = False`` calls straight through (for comparisons); `clear` drops every entry.
    """

    # module attribute -> entries kept. Rotary embeddings: four calls per layout, two layouts kept (the
    # inverted order repeats one layout between its first and last sections); at 720p one layout's
    # embeddings take about 110 MB (fp32), the clean-latent embeddings of a section about 55 MB (bf16).
    MODULES = {"rope": 8, "clean_x_embedder": 2, "image_projection": 2}
    METHODS = {"_pad_rotary_emb": 4}  # the history's downsampled rotary embeddings (2x and 4x)

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self.enabled = True
        self.memos: dict[str, _Memo] = {}
        self._indices: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()

    def install(self) -> None:
        from diffusers.hooks import ModelHook

        cache = self

        class MemoHook(ModelHook):
            def __init__(self, memo: _Memo) -> None:
                super().__init__()
                self.memo = memo

            def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
                if not cache.enabled:
                    return self.fn_ref.original_forward(*args, **kwargs)
                return self.memo.call(self.fn_ref.original_forward, args, kwargs)

        for name, size in self.MODULES.items():
            module = getattr(self.transformer, name, None)
            if isinstance(module, torch.nn.Module):
                self.memos[name] = _Memo(size)
                _register(module, MemoHook(self.memos[name]), "framepack_layout_memo")
        for name, size in self.METHODS.items():
            method = getattr(self.transformer, name, None)
            if method is None:  # a diffusers version without it: nothing to memoise
                continue
            memo = self.memos[name] = _Memo(size)

            def memoised(*args: Any, _memo: _Memo = memo, _method: Callable = method, **kwargs: Any) -> Any:
                return _memo.call(_method, args, kwargs) if cache.enabled else _method(*args, **kwargs)

            setattr(self.transformer, name, memoised)  # an instance attribute shadowing the method

    def indices(self, key: tuple, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The index tensors of one section layout, the same objects every time the layout repeats."""
        if not self.enabled:
            return build()
        if key not in self._indices:
            self._indices[key] = build()
            while len(self._indices) > 8:
                self._indices.popitem(last=False)
        self._indices.move_to_end(key)
        return self._indices[key]

    def clear(self) -> None:
        for memo in self.memos.values():
            memo.entries.clear()
        self._indices.clear()

    @property
    def hits(self) -> int:
        return sum(m.hits for m in self.memos.values())
