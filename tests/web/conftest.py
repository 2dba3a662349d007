"""A real `framepack serve` (tiny models) and a headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

try:
    from playwright.sync_api import sync_playwright
except ImportError as exc:  # fail, never skip: the page's tests are part of the suite
    raise ImportError("the web page's tests need Playwright for Python: pip install playwright") from exc


def _load_api_conftest():
    """`Server` and `free_port` live in tests/api/conftest.py; load that file by path (no packages here)."""
    name = "_framepack_tests_api_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "api" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_api = _load_api_conftest()
Server = _api.Server
free_port = _api.free_port

# Debian's Chromium (`apt-get install -y chromium`); Playwright's own browser download is not used.
CHROMIUM = os.environ.get("FRAMEPACK_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory, settings):
    srv = Server(tmp_path_factory.mktemp("web") / "data", settings.cache_dir, free_port(), {}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it with `apt-get update && apt-get install -y chromium` "
            "(or point FRAMEPACK_TEST_CHROMIUM at a Chromium binary)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh desktop-sized page (its own storage); ``page.js_errors`` collects uncaught script errors."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        base_url=server.url,
        reduced_motion="reduce",  # no smooth scrolls
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    yield page
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
