"""Shared fixtures: the tiny models are built once per test session into a temporary cache."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from framepack_server.config import Settings, get_settings


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    return get_settings(cache_dir=tmp_path_factory.mktemp("cache"), auto_download=False)


@pytest.fixture(scope="session")
def engines(settings):
    """Engines by model name, loaded once per session."""
    from framepack_server.engine.generate import Engine

    cache: dict[str, Engine] = {}

    def get(model: str) -> Engine:
        if model not in cache:
            cache[model] = Engine.load(model, settings=settings)
        return cache[model]

    return get


def smooth_image(width: int = 120, height: int = 80, seed: int = 0) -> Image.Image:
    """A smooth colour picture (a random image would be all high frequencies)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(2 * np.pi * (rng.random() * 2 * x + rng.random() * 2 * y) + rng.random() * 6) for _ in "rgb"]
    return Image.fromarray(((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8))


@pytest.fixture
def image() -> Image.Image:
    return smooth_image()
