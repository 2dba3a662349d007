"""Reading input images from wherever a user points at them.

:func:`load_image` accepts

* a local file path (``str`` or :class:`os.PathLike`; CLI use);
* an ``http://`` or ``https://`` URL, fetched by the guarded fetcher (`media.fetch`): no private
  or reserved addresses unless allowed, at most 5 redirects each re-checked, time limits, and
  stopped as soon as it exceeds ``max_bytes``;
* a data URI (``data:image/png;base64,...``);
* naked base64 text (standard or URL-safe alphabet, padding optional);
* raw ``bytes`` / ``bytearray`` / ``memoryview``.

and returns a fully decoded RGB :class:`PIL.Image.Image`: EXIF orientation applied,
first frame of an animation, transparency composited on white, 16-bit and float modes
scaled down to 8 bits.  Truncated files fail here, not later in the pipeline.

Every failure is an :class:`~framepack_server.errors.InputError` that names the request
field (``image``, ``last_image`` ...) and says what is wrong in plain words; bad input
never escapes as a traceback.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import urllib.parse
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from framepack_server.errors import InputError

from .fetch import FetchPolicy, fetch

__all__ = ["MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE", "MIN_IMAGE_SIDE", "load_image"]

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 64_000_000
MIN_IMAGE_SIDE = 16
MAX_IMAGE_SIDE = 16384

_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# Base64 text, standard or URL-safe alphabet, whitespace allowed (line-wrapped input).
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/\-_=\s]+$")
# Strings at least this long that use only base64 characters are taken for base64 when
# they are not an existing file (a 16x16 PNG is already ~100 characters of base64).
_MIN_BASE64_CHARS = 64
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def load_image(
    source: str | bytes | bytearray | memoryview | os.PathLike[str],
    field: str = "image",
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    fetch_policy: FetchPolicy | None = None,
) -> Image.Image:
    """Load ``source`` (path, URL, data URI, base64 text or bytes) as an RGB image.

    ``field`` names the request field in errors.  ``max_bytes`` caps the encoded size,
    ``max_pixels`` the decoded width x height (decompression bombs); ``fetch_policy`` governs
    URL fetching (default: no private addresses, see `media.fetch`).  Images smaller than
    16x16 are refused.

    Raises :class:`InputError` for every problem with the input.
    """
    data, from_text = _read_source(source, field, max_bytes=max_bytes, policy=fetch_policy)
    if not data:
        raise InputError(field, "the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise _too_large(field, _size(len(data)), max_bytes)
    try:
        return _decode(data, field, max_pixels=max_pixels)
    except InputError as e:
        if from_text and e.message.startswith("not an image"):
            raise InputError(
                field,
                "not an image: the text was read as base64 (if it is a file path, that file does not exist)",
            ) from None
        raise


# --------------------------------------------------------------------------- sources


def _read_source(source: object, field: str, *, max_bytes: int, policy: FetchPolicy | None) -> tuple[bytes, bool]:
    """Return the encoded image bytes and whether they came from naked base64 text."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), False
    if isinstance(source, os.PathLike):
        return _read_file(Path(source), field, max_bytes), False
    if not isinstance(source, str):
        raise InputError(
            field, f"expected a file path, URL, data URI, base64 text or bytes, got {type(source).__name__}"
        )

    text = source.strip()
    if not text:
        raise InputError(field, "no image given (empty string)")
    match = _SCHEME_RE.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme not in ("http", "https"):
            raise InputError(field, f"unsupported URL scheme {scheme!r}; use http or https")
        return _fetch_url(text, field, max_bytes=max_bytes, policy=policy), False
    if text[:5].lower() == "data:":
        return _decode_data_uri(text, field, max_bytes), False

    path = _existing_path(source)
    if path is not None:
        return _read_file(path, field, max_bytes), False
    if len(text) >= _MIN_BASE64_CHARS and _BASE64_RE.match(text):
        return _decode_base64(text, field, max_bytes), True
    raise InputError(
        field,
        f"file not found: {_short(source)} (expected a file path, http(s) URL, data URI or base64 image)",
    )


def _existing_path(text: str) -> Path | None:
    try:
        path = Path(text).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError):  # name too long, NUL byte ...
        return None


def _read_file(path: Path, field: str, max_bytes: int) -> bytes:
    try:
        if path.is_dir():
            raise InputError(field, f"{path} is a directory, not an image file")
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_large(field, _size(size), max_bytes)
        with path.open("rb") as f:
            return f.read(max_bytes + 1)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(field, f"file not found: {path}") from None
    except PermissionError:
        raise InputError(field, f"permission denied reading {path}") from None
    except (OSError, ValueError) as e:
        raise InputError(field, f"could not read {_short(str(path))}: {e}") from None


def _decode_data_uri(text: str, field: str, max_bytes: int) -> bytes:
    header, sep, payload = text.partition(",")
    if not sep:
        raise InputError(field, "invalid data URI: no ',' between the header and the data")
    params = header[5:].split(";")
    if "base64" in (p.strip().lower() for p in params[1:]):
        return _decode_base64(payload, field, max_bytes)
    data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise _too_large(field, _size(len(data)), max_bytes)
    return data


def _decode_base64(text: str, field: str, max_bytes: int) -> bytes:
    compact = "".join(text.split())
    if len(compact) * 3 // 4 > max_bytes + 3:
        raise _too_large(field, f"about {_size(len(compact) * 3 // 4)}", max_bytes)
    compact = compact.replace("-", "+").replace("_", "/")
    body = compact.rstrip("=")
    if len(body) % 4 == 1:
        raise InputError(field, "invalid base64 data: the length is not valid (truncated?)")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "invalid base64 data") from None


def _fetch_url(url: str, field: str, *, max_bytes: int, policy: FetchPolicy | None) -> bytes:
    """GET ``url`` through the guarded fetcher (`media.fetch`): hosts that resolve to private or
    reserved addresses are refused unless the policy's allow-list names them; redirects, time and
    size are bounded there."""
    policy = policy or FetchPolicy()
    return fetch(url, field, replace(policy, max_bytes=min(policy.max_bytes, max_bytes)))


# --------------------------------------------------------------------------- decoding


def _decode(data: bytes, field: str, *, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL's own bomb check (global MAX_IMAGE_PIXELS) warns above ~89 Mpx and raises
            # above twice that; ours is per call and stricter, so the warning is an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise InputError(
                    field,
                    f"the image has too many pixels: {width}x{height} = {width * height:,}, "
                    f"the limit is {max_pixels:,}",
                )
            if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
                raise InputError(
                    field,
                    f"the image is too small: {width}x{height} px, the minimum is {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}",
                )
            if max(width, height) > MAX_IMAGE_SIDE:
                raise InputError(
                    field, f"the image is too large: {width}x{height} px, the maximum side is {MAX_IMAGE_SIDE} px"
                )
            img.load()  # first frame of an animation; truncated data fails here
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            field, f"the image has too many pixels (decompression bomb?), the limit is {max_pixels:,}"
        ) from None
    except UnidentifiedImageError:
        raise InputError(field, "not an image, or an image format that cannot be read") from None
    except Exception as e:  # truncated / corrupt files raise OSError, SyntaxError, struct.error ...
        raise InputError(field, f"the image could not be decoded (corrupt or truncated?): {e}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16"):
        # 16-bit grey: keep the top 8 bits (PIL's convert would clip everything above 255).
        arr = np.asarray(img).astype(np.uint16) >> 8
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode == "I":
        # 32-bit integer grey, usually a 16-bit PNG or TIFF: scale a 16-bit range down.
        arr = np.asarray(img, dtype=np.int64)
        if arr.size and arr.max() > 255:
            arr = np.clip(arr, 0, 65535) // 257
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        # Float grey: [0, 1] when it fits there, else taken as [0, 255].
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV ...


# --------------------------------------------------------------------------- helpers


def _too_large(field: str, size: str, max_bytes: int) -> InputError:
    return InputError(field, f"the image is too large: {size}, the limit is {_size(max_bytes)}")


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"
