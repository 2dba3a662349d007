"""The page at `/`, in a real browser against a real server with the tiny models: key, upload, submit,
live progress, the video playing, history, cancel, field errors, a refused key and a lost server."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.slow

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
IMAGE = Path(__file__).resolve().parents[2] / "examples" / "lighthouse.png"
TERMINAL = ("completed", "failed", "cancelled")

# Every text the progress line shows, recorded in the page as it changes (polling could miss some).
RECORD_PROGRESS = """() => {
  window.__progress = [];
  const el = document.querySelector('#progress-text');
  const record = () => window.__progress.push(el.textContent);
  new MutationObserver(record).observe(el, {childList: true, characterData: true, subtree: true});
}"""

VIDEO_DURATION = """async (video) => {
  if (video.readyState < 1) {
    await new Promise((resolve, reject) => {
      video.addEventListener('loadedmetadata', resolve, {once: true});
      const failed = () => reject(new Error('video error ' + (video.error && video.error.code)));
      video.addEventListener('error', failed, {once: true});
      setTimeout(() => reject(new Error('no loadedmetadata within 20 s')), 20000);
    });
  }
  return video.duration;
}"""


SAMPLING_ADVANCED = """() => new Set(window.__progress.filter((text) => text.startsWith('Section'))).size >= 3"""
IN_VIEW = """(selector) => {
  const box = document.querySelector(selector).getBoundingClientRect();
  return box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
}"""


def open_with_key(page: Page, key: str) -> None:
    page.goto("/")
    expect(page.locator("h1")).to_have_text("FramePack")
    page.fill("#api-key", key)
    page.click("#key-save")
    expect(page.locator("#key-state")).to_contain_text("accepted")


def upload_image(page: Page) -> None:
    page.set_input_files("#image-file", str(IMAGE))
    expect(page.locator("#image-field .status")).to_contain_text("Uploaded lighthouse.png")
    expect(page.locator("#image")).to_have_value(re.compile(r"/api/v3/files/uploads/.+lighthouse\.png\?expires="))


def fill(page: Page, prompt: str, num_frames: int, steps: int) -> None:
    page.fill("#prompt", prompt)
    page.select_option("#resolution", "480p")
    page.fill("#num_frames", str(num_frames))
    page.fill("#num_inference_steps", str(steps))


def api_job(server, job_id: str) -> dict:
    response = httpx.get(f"{server.url}/api/v3/predictions/{job_id}/result", headers=server.headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def newest_job(server) -> dict:
    response = httpx.get(f"{server.url}/api/v3/predictions?page=1&page_size=1", headers=server.headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["data"]["items"][0]


def test_the_page_and_its_assets_are_served_without_a_key(server):
    page = httpx.get(server.url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert "web/app.js" in links and "web/style.css" in links
    assert not [link for link in links if link.startswith(("http:", "https:", "//"))], links  # nothing from CDNs
    for asset, kind in (("/web/app.js", "javascript"), ("/web/style.css", "text/css")):
        response = httpx.get(server.url + asset, timeout=30)
        assert response.status_code == 200 and kind in response.headers["content-type"], asset
    assert "@import" not in httpx.get(server.url + "/web/style.css", timeout=30).text
    assert "/" not in httpx.get(server.url + "/openapi.json", timeout=30).json()["paths"]


def test_generate_watch_progress_play_and_find_in_history(page: Page, server, artifacts):
    open_with_key(page, server.key)
    expect(page.locator("#history-empty")).to_be_visible()
    upload_image(page)
    fill(page, "waves roll under the lighthouse", num_frames=60, steps=6)  # short: the long job is cancelled below
    page.click("#generate")
    expect(page.locator("#progress")).to_be_visible()
    expect(page.locator("#cancel")).to_be_enabled()
    expect(page.locator("#output")).to_have_attribute("data-status", "completed", timeout=90_000)

    job = newest_job(server)
    assert job["status"] == "completed" and job["input"]["prompt"] == "waves roll under the lighthouse"
    video = page.locator("#result-video")
    expect(video).to_be_visible()
    duration = video.evaluate(VIDEO_DURATION)
    assert 1.5 < duration < 2.5, duration  # 60 frames at 30 fps
    page.wait_for_function("() => document.querySelector('#result-video').currentTime > 0", timeout=20_000)
    assert urlsplit(video.get_attribute("src")).path == urlsplit(job["outputs"][0]).path
    assert urlsplit(page.get_attribute("#download", "href")).path == urlsplit(job["outputs"][0]).path
    expect(page.locator("#facts [data-fact=seed]")).to_have_text(str(job["seed"]))
    expect(page.locator("#facts [data-fact=inference]")).to_contain_text(" s")

    card = page.locator(f'.card[data-id="{job["id"]}"]')
    expect(card).to_have_attribute("data-status", "completed")
    expect(card).to_contain_text("waves roll under the lighthouse")
    expect(card.locator("video")).to_have_count(1)
    page.evaluate("window.scrollTo(0, 0)")  # the output panel is sticky: full-page shots from the top
    page.screenshot(path=artifacts / "web-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=artifacts / "web-phone.png", full_page=True)
    page.locator("#output").screenshot(path=artifacts / "web-phone-result.png")
    page.set_viewport_size(DESKTOP)

    # Edit and run again: the form holds the job's parameters.
    page.click("#reset-form")
    expect(page.locator("#prompt")).to_have_value("")
    page.click("#edit")
    expect(page.locator("#prompt")).to_have_value("waves roll under the lighthouse")
    expect(page.locator("#num_frames")).to_have_value("60")
    expect(page.locator("#resolution")).to_have_value("480p")
    expect(page.locator("#seed")).to_have_value(str(job["seed"]))
    expect(page.locator("#image")).to_have_value(re.compile(r"lighthouse\.png"))

    # Again with a new seed: a second job, same parameters, another seed; clicking the first card shows it again.
    page.click("#again")
    expect(page.locator("#output")).not_to_have_attribute("data-status", "completed")
    expect(page.locator("#output")).to_have_attribute("data-status", "completed", timeout=90_000)
    second = newest_job(server)
    assert second["id"] != job["id"] and second["seed"] != job["seed"]
    assert second["input"]["num_frames"] == 60 and second["input"]["prompt"] == job["input"]["prompt"]
    expect(page.locator("#facts [data-fact=seed]")).to_have_text(str(second["seed"]))
    expect(page.locator(".card")).to_have_count(2)
    page.locator(f'.card[data-id="{job["id"]}"]').click()
    expect(page.locator("#facts [data-fact=seed]")).to_have_text(str(job["seed"]))
    assert urlsplit(page.get_attribute("#result-video", "src")).path == urlsplit(job["outputs"][0]).path
    assert page.js_errors == []


def test_progress_advances_then_cancel_a_long_job(page: Page, server, artifacts):
    open_with_key(page, server.key)
    upload_image(page)
    fill(page, "a long river journey", num_frames=600, steps=20)
    page.evaluate(RECORD_PROGRESS)
    page.click("#generate")

    progress = page.locator("#progress-text")
    expect(progress).to_contain_text(re.compile(r"Section \d+ of \d+ · step \d+ of 20"), timeout=60_000)
    page.wait_for_function(SAMPLING_ADVANCED, timeout=60_000)  # section/step text changed at least twice
    expect(page.locator("#preview-figure")).to_be_visible()
    expect(page.locator("#progress-eta")).to_contain_text(re.compile(r"about .+ left"))
    expect(page.locator(".card.selected")).to_have_attribute("data-status", "processing")  # its card follows it
    page.screenshot(path=artifacts / "web-desktop-progress.png")
    page.set_viewport_size(PHONE)
    page.screenshot(path=artifacts / "web-phone-progress.png", full_page=True)
    page.set_viewport_size(DESKTOP)
    page.click("#cancel")
    expect(page.locator("#output")).to_have_attribute("data-status", "cancelled", timeout=30_000)
    expect(page.locator("#result-error")).to_contain_text("Cancelled")
    job = newest_job(server)
    assert job["status"] == "cancelled" and job["input"]["num_frames"] == 600
    expect(page.locator(f'.card[data-id="{job["id"]}"]')).to_have_attribute("data-status", "cancelled")
    assert page.js_errors == []


def test_errors_appear_next_to_their_field(page: Page, server, artifacts):
    open_with_key(page, server.key)
    before = httpx.get(f"{server.url}/api/v3/predictions", headers=server.headers, timeout=30).json()["data"]["total"]

    page.click("#generate")  # nothing chosen yet: said by the image and the prompt, no request made
    expect(page.locator("#err-image")).to_contain_text("Choose or drop an image")
    expect(page.locator("#err-prompt")).not_to_be_empty()

    # A pasted URL (one of our uploads) and a field out of range: the server's 400 names num_frames.
    uploaded = httpx.post(
        f"{server.url}/api/v3/media/upload/binary",
        headers=server.headers,
        files={"file": ("lighthouse.png", IMAGE.read_bytes(), "image/png")},
        timeout=30,
    ).json()["data"]["download_url"]
    page.fill("#image", uploaded)
    page.dispatch_event("#image", "change")
    expect(page.locator("#image-field .drop-preview")).to_be_visible()
    page.fill("#prompt", "too long a video")
    page.fill("#num_frames", "5000")
    with page.expect_request(lambda r: r.method == "POST" and "/api/v3/wavespeed-ai/" in r.url) as submitted:
        page.click("#generate")
    request = submitted.value
    assert urlsplit(request.url).path == "/api/v3/wavespeed-ai/framepack"
    assert request.headers["authorization"] == f"Bearer {server.key}"
    assert request.post_data_json["num_frames"] == 5000 and request.post_data_json["image"] == uploaded
    error = page.locator("#err-num_frames")
    expect(error).to_contain_text("less than or equal to 1800")
    expect(error).to_be_visible()
    by_the_input = "(input) => input.closest('.field').contains(document.getElementById('err-num_frames'))"
    assert page.locator("#num_frames").evaluate(by_the_input)
    expect(page.locator("#num_frames")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#err-image")).to_be_empty()
    expect(page.locator("#form-error")).to_be_empty()
    page.wait_for_function(IN_VIEW, arg="#err-num_frames")  # the page brings the error into view
    page.screenshot(path=artifacts / "web-desktop-field-error.png")
    page.set_viewport_size(PHONE)
    page.locator("#num_frames").scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "web-phone-field-error.png")

    # An advanced field: its error opens the folded section.
    page.fill("#num_frames", "90")
    expect(error).to_be_empty()
    page.click("#advanced summary")
    page.fill("#latent_window_size", "40")
    page.click("#advanced summary")  # folded again
    expect(page.locator("#latent_window_size")).to_be_hidden()
    page.click("#generate")
    expect(page.locator("#advanced")).to_have_attribute("open", "")
    expect(page.locator("#err-latent_window_size")).to_contain_text("less than or equal to 33")
    # TeaCache: a box and its threshold in the advanced section, sent as the request fields.
    page.fill("#latent_window_size", "9")
    page.check("#enable_teacache")
    page.fill("#teacache_threshold", "1.5")
    with page.expect_request(lambda r: r.method == "POST" and "/api/v3/wavespeed-ai/" in r.url) as submitted:
        page.click("#generate")
    sent = submitted.value.post_data_json
    assert sent["enable_teacache"] is True and sent["teacache_threshold"] == 1.5
    expect(page.locator("#err-teacache_threshold")).to_contain_text("less than or equal to 1")
    page.fill("#teacache_threshold", "0.15")
    page.uncheck("#enable_teacache")
    page.fill("#latent_window_size", "40")
    # F1: its own model path, and no end image.
    expect(page.locator("#last-image-field")).to_be_visible()
    page.check("input[name=model][value='wavespeed-ai/framepack-f1']", force=True)
    expect(page.locator("#last-image-field")).to_be_hidden()
    page.fill("#latent_window_size", "9")
    page.fill("#guidance_scale", "-1")
    with page.expect_request(lambda r: r.method == "POST" and "/api/v3/wavespeed-ai/" in r.url) as submitted:
        page.click("#generate")
    assert urlsplit(submitted.value.url).path == "/api/v3/wavespeed-ai/framepack-f1"
    expect(page.locator("#err-guidance_scale")).to_contain_text("greater than or equal to 0")
    expect(page.locator("#err-latent_window_size")).to_be_empty()

    after = httpx.get(f"{server.url}/api/v3/predictions", headers=server.headers, timeout=30).json()["data"]["total"]
    assert after == before
    assert page.js_errors == []


def test_refused_key_and_unreachable_server_are_said_plainly(page: Page, server, artifacts):
    page.goto("/")
    expect(page.locator("#key-state")).to_contain_text("This server needs an API key")
    expect(page.locator("#history-empty")).to_contain_text("once the API key is accepted")
    page.screenshot(path=artifacts / "web-desktop-start.png")
    page.set_viewport_size(PHONE)
    page.screenshot(path=artifacts / "web-phone-start.png")
    page.set_viewport_size(DESKTOP)
    page.fill("#api-key", "fp_not_a_real_key")
    page.click("#key-save")
    expect(page.locator("#key-state")).to_contain_text("refused this API key (401")
    expect(page.locator("#api-key")).to_have_attribute("aria-invalid", "true")

    open_with_key(page, server.key)
    assert page.evaluate("localStorage.getItem('framepack.apiKey')") == server.key
    page.route("**/api/v3/**", lambda route: route.abort("connectionrefused"))
    page.click("#history-refresh")
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#banner")).to_contain_text("Cannot reach the server")
    page.unroute("**/api/v3/**")
    page.click("#history-refresh")
    expect(page.locator("#banner")).to_be_hidden()
    assert page.js_errors == []
