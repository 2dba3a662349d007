"""Tests for load_image: every kind of source, every image mode, every failure."""

from __future__ import annotations

import base64
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framepack_server.errors import InputError
from framepack_server.media.fetch import FetchPolicy
from framepack_server.media.images import MAX_IMAGE_BYTES, load_image

# ----------------------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_bytes(size: tuple[int, int] = (32, 24), color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    return encode(Image.new("RGB", size, color))


def noise_png(size: int = 64) -> bytes:
    arr = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encode(Image.fromarray(arr))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` (the header is all PIL reads on open)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def assert_input_error(excinfo: pytest.ExceptionInfo[InputError], *words: str, field: str = "image") -> None:
    err = excinfo.value
    assert err.field == field
    assert err.message
    for word in words:
        assert word.lower() in err.message.lower(), err.message


def px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return tuple(img.getpixel(xy))


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 6) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


# ----------------------------------------------------------------------------- formats and modes


def test_png_from_path_str_and_pathlike(tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    path.write_bytes(png_bytes())
    for source in (str(path), path):
        img = load_image(source)
        assert img.mode == "RGB"
        assert img.size == (32, 24)
        assert px(img, (3, 3)) == (10, 200, 30)


def test_jpeg_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :] = (0, 0, 255)
    arr[:10, :10] = (255, 0, 0)  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    path.write_bytes(encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95))
    img = load_image(path)
    assert img.size == (20, 40)  # width and height swapped
    assert close_to(px(img, (15, 4)), (255, 0, 0), tol=30)  # top-left went to top-right
    assert close_to(px(img, (4, 4)), (0, 0, 255), tol=30)


def test_rgba_composited_on_white() -> None:
    arr = np.zeros((20, 20, 4), np.uint8)
    arr[:, :10] = (255, 0, 0, 255)  # opaque red
    arr[:, 10:] = (0, 0, 0, 0)  # transparent black -> white
    arr[0, 0] = (0, 0, 0, 128)  # half transparent black -> mid grey
    img = load_image(encode(Image.fromarray(arr, "RGBA")))
    assert img.mode == "RGB"
    assert px(img, (5, 5)) == (255, 0, 0)
    assert px(img, (15, 5)) == (255, 255, 255)
    assert close_to(px(img, (0, 0)), (127, 127, 127), tol=2)


def test_la_composited_on_white() -> None:
    arr = np.zeros((16, 16, 2), np.uint8)
    arr[..., 0] = 50
    arr[:, 8:, 1] = 255
    img = load_image(encode(Image.fromarray(arr, "LA")))
    assert px(img, (12, 3)) == (50, 50, 50)
    assert px(img, (3, 3)) == (255, 255, 255)


def test_palette_image() -> None:
    pal = Image.new("RGB", (24, 24), (200, 30, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert pal.mode == "P"
    img = load_image(encode(pal))
    assert img.mode == "RGB"
    assert close_to(px(img, (1, 1)), (200, 30, 40), tol=2)


def test_palette_with_transparency_composited_on_white() -> None:
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    pal.paste(1, (0, 0, 10, 20))
    data = encode(pal, transparency=0)
    img = load_image(data)
    assert px(img, (3, 3)) == (255, 0, 0)
    assert px(img, (15, 3)) == (255, 255, 255)


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red in CMYK
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = load_image(data)
    assert img.mode == "RGB"
    assert close_to(px(img, (16, 16)), (255, 0, 0), tol=10)


def test_16bit_grey_png_scaled_not_clipped() -> None:
    arr = np.full((24, 24), 40000, np.uint16)
    arr[:, 12:] = 1000
    data = encode(Image.fromarray(arr))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    img = load_image(data)
    assert img.mode == "RGB"
    assert px(img, (3, 3)) == (156, 156, 156)  # 40000 >> 8
    assert px(img, (20, 3)) == (3, 3, 3)  # 1000 >> 8


def test_mode_i_and_f_images() -> None:
    i_img = Image.fromarray(np.full((16, 16), 65535, np.int32), "I")
    assert px(load_image(encode(i_img, "TIFF")), (0, 0)) == (255, 255, 255)
    f_img = Image.fromarray(np.full((16, 16), 0.5, np.float32), "F")
    assert close_to(px(load_image(encode(f_img, "TIFF")), (0, 0)), (128, 128, 128), tol=1)


def test_greyscale_and_bilevel() -> None:
    assert px(load_image(encode(Image.new("L", (16, 16), 77))), (0, 0)) == (77, 77, 77)
    assert px(load_image(encode(Image.new("1", (16, 16), 1))), (0, 0)) == (255, 255, 255)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 3
    img = load_image(buf.getvalue())
    assert img.mode == "RGB"
    assert px(img, (10, 10)) == (255, 0, 0)
    assert getattr(img, "n_frames", 1) == 1


def test_result_is_detached_and_loaded(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes())
    img = load_image(path)
    path.unlink()  # the image must not depend on the file any more
    assert np.asarray(img).shape == (24, 32, 3)


# ----------------------------------------------------------------------------- other sources


def test_data_uri() -> None:
    data = png_bytes()
    img = load_image("data:image/png;base64," + base64.b64encode(data).decode())
    assert img.size == (32, 24)
    # media type missing, odd case, surrounding whitespace
    img = load_image("  DATA:;BASE64," + base64.b64encode(data).decode() + "\n")
    assert img.size == (32, 24)


def test_naked_base64_standard_urlsafe_wrapped_unpadded() -> None:
    data = png_bytes()
    text = base64.b64encode(data).decode()
    assert load_image(text).size == (32, 24)
    assert load_image(base64.urlsafe_b64encode(data).decode()).size == (32, 24)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert load_image(wrapped).size == (32, 24)
    assert load_image(text.rstrip("=")).size == (32, 24)


def test_jpeg_base64_starting_with_slash() -> None:
    text = base64.b64encode(encode(Image.new("RGB", (16, 16), (9, 9, 9)), "JPEG")).decode()
    assert text.startswith("/9j/")  # looks like an absolute path, but is not one
    assert load_image(text).size == (16, 16)


def test_raw_bytes_bytearray_memoryview() -> None:
    data = png_bytes()
    for source in (data, bytearray(data), memoryview(data)):
        assert load_image(source).size == (32, 24)


# ----------------------------------------------------------------------------- failures


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError) as e:
        load_image(path)
    assert_input_error(e, "empty")
    with pytest.raises(InputError) as e:
        load_image(b"")
    assert_input_error(e, "empty")


def test_missing_file(tmp_path: Path) -> None:
    for source in (tmp_path / "nope.png", str(tmp_path / "nope.png"), "nope.png"):
        with pytest.raises(InputError) as e:
            load_image(source)
        assert_input_error(e, "not found")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_image(tmp_path)
    assert_input_error(e, "directory")


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError) as e:
        load_image(path)
    assert_input_error(e, "not an image")


def test_truncated_png() -> None:
    data = noise_png(64)
    with pytest.raises(InputError) as e:
        load_image(data[: len(data) // 2])
    assert_input_error(e, "truncated")


def test_too_many_pixels_per_call_cap() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError) as e:
        load_image(png_bytes((40, 40)), max_pixels=1000)
    assert_input_error(e, "too many pixels", "1,600")
    assert before == Image.MAX_IMAGE_PIXELS  # PIL's global is left alone
    assert load_image(png_bytes((40, 40)), max_pixels=1600).size == (40, 40)


@pytest.mark.parametrize("size", [(10_000, 10_000), (20_000, 20_000)])
def test_decompression_bomb_header(size: tuple[int, int]) -> None:
    # 100 Mpx: PIL warns (converted to an error); 400 Mpx: PIL raises DecompressionBombError.
    with pytest.raises(InputError) as e:
        load_image(png_header_only(*size), max_pixels=10**12)
    assert_input_error(e, "too many pixels")
    with pytest.raises(InputError) as e:
        load_image(png_header_only(*size))
    assert_input_error(e, "too many pixels")


def test_too_large_in_bytes(tmp_path: Path) -> None:
    data = noise_png(64)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    for source in (path, data, b64, "data:image/png;base64," + b64):
        with pytest.raises(InputError) as e:
            load_image(source, max_bytes=1000)
        assert_input_error(e, "too large")
    assert MAX_IMAGE_BYTES == 20 * 1024 * 1024


def test_too_small_image() -> None:
    for size in [(15, 16), (16, 15), (1, 1)]:
        with pytest.raises(InputError) as e:
            load_image(png_bytes(size))
        assert_input_error(e, "too small", f"{size[0]}x{size[1]}")
    assert load_image(png_bytes((16, 16))).size == (16, 16)


def test_invalid_base64() -> None:
    sources = [
        "data:image/png;base64,@@@not base64@@@",
        "data:image/png;base64,iVBORw0KGgo=AAAA",  # padding in the middle
        "A" * 65,  # a length no base64 text can have
    ]
    for source in sources:
        with pytest.raises(InputError) as e:
            load_image(source)
        assert_input_error(e, "base64")


def test_valid_base64_of_non_image() -> None:
    text = base64.b64encode(b"hello world, definitely not an image " * 4).decode()
    with pytest.raises(InputError) as e:
        load_image(text)
    assert_input_error(e, "not an image", "base64")


def test_bad_data_uri_and_source_type() -> None:
    with pytest.raises(InputError) as e:
        load_image("data:image/png;base64")
    assert_input_error(e, "data uri")
    with pytest.raises(InputError) as e:
        load_image(12345)  # type: ignore[arg-type]
    assert_input_error(e, "int")
    with pytest.raises(InputError) as e:
        load_image("   ")
    assert_input_error(e, "empty")


def test_other_field_name(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_image(tmp_path / "missing.png", field="last_image")
    assert_input_error(e, "not found", field="last_image")
    assert str(e.value).startswith("last_image: ")


def test_unsupported_scheme() -> None:
    with pytest.raises(InputError) as e:
        load_image("ftp://example.com/a.png")
    assert_input_error(e, "scheme")


# ----------------------------------------------------------------------------- URLs

IMAGE = png_bytes((40, 30), (1, 2, 3))


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # silence the test log
        pass

    def _send(self, status: int, body: bytes = b"", content_type: str = "image/png", length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # http.server names it so
        path = self.path
        if path == "/img.png":
            self._send(200, IMAGE)
        elif path == "/missing.png":
            self._send(404, b"not here", "text/plain")
        elif path == "/error":
            self._send(500, b"oops", "text/plain")
        elif path.startswith("/hops/"):  # /hops/N: N redirects, then the image
            n = int(path.rsplit("/", 1)[1])
            self._redirect(f"/hops/{n - 1}" if n > 1 else "/img.png")
        elif path == "/loop/a":
            self._redirect("/loop/b")
        elif path == "/loop/b":
            self._redirect("/loop/a")
        elif path == "/big":  # no Content-Length: the cap must apply while streaming
            self._send(200, noise_png(64), length=False)
        elif path == "/big-declared":
            self._send(200, noise_png(64))
        elif path == "/text":
            self._send(200, b"<html>hello</html>", "text/html")
        elif path == "/slow":
            time.sleep(1.0)
            self._send(200, IMAGE)
        else:
            self._send(404, b"", "text/plain")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that give up (timeout, size cap) leave broken pipes behind: not a failure.
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


LOCAL = FetchPolicy(allow=("127.0.0.0/8",))  # the test servers listen on loopback


def test_url_to_a_private_address_is_refused_without_the_allow_list(server: str) -> None:
    with pytest.raises(InputError) as e:
        load_image(f"{server}/img.png")
    assert_input_error(e, "private or reserved address")


def test_url_image(server: str) -> None:
    img = load_image(f"{server}/img.png", fetch_policy=LOCAL)
    assert img.size == (40, 30)
    assert px(img, (0, 0)) == (1, 2, 3)


def test_url_http_status(server: str) -> None:
    with pytest.raises(InputError) as e:
        load_image(f"{server}/missing.png", fetch_policy=LOCAL)
    assert_input_error(e, "HTTP 404")
    with pytest.raises(InputError) as e:
        load_image(f"{server}/error", field="last_image", fetch_policy=LOCAL)
    assert_input_error(e, "HTTP 500", field="last_image")


def test_url_redirect_chain_of_two(server: str) -> None:
    assert load_image(f"{server}/hops/2", fetch_policy=LOCAL).size == (40, 30)


def test_url_five_redirects_allowed_six_refused(server: str) -> None:
    assert load_image(f"{server}/hops/5", fetch_policy=LOCAL).size == (40, 30)
    with pytest.raises(InputError) as e:
        load_image(f"{server}/hops/6", fetch_policy=LOCAL)
    assert_input_error(e, "too many redirects")


def test_url_redirect_loop(server: str) -> None:
    with pytest.raises(InputError) as e:
        load_image(f"{server}/loop/a", fetch_policy=LOCAL)
    assert_input_error(e, "too many redirects")


def test_url_too_large(server: str) -> None:
    for path in ("/big", "/big-declared"):
        with pytest.raises(InputError) as e:
            load_image(f"{server}{path}", max_bytes=1000, fetch_policy=LOCAL)
        assert_input_error(e, "larger than 1000 bytes")
    assert load_image(f"{server}/big", fetch_policy=LOCAL).size == (64, 64)


def test_url_not_an_image(server: str) -> None:
    with pytest.raises(InputError) as e:
        load_image(f"{server}/text", fetch_policy=LOCAL)
    assert_input_error(e, "not an image")


def test_url_timeout(server: str) -> None:
    start = time.monotonic()
    with pytest.raises(InputError) as e:
        load_image(f"{server}/slow", fetch_policy=replace(LOCAL, read_timeout=0.2, total_timeout=0.6))
    assert_input_error(e, "timed out")
    assert time.monotonic() - start < 1.0


def test_url_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError) as e:
        load_image(f"http://127.0.0.1:{port}/img.png", fetch_policy=replace(LOCAL, connect_timeout=2.0))
    assert_input_error(e, "could not connect")


def test_image_with_a_side_over_the_maximum_is_refused() -> None:
    buffer = io.BytesIO()
    Image.new("L", (16385, 16), 0).save(buffer, format="PNG")
    with pytest.raises(InputError) as e:
        load_image(buffer.getvalue())
    assert_input_error(e, "maximum side")
