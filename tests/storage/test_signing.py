"""UrlSigner and the persisted secret."""

from __future__ import annotations

import stat
import urllib.parse
from pathlib import Path

import pytest

from framepack_server.storage import UrlSigner, load_or_create_secret

SECRET = b"s" * 32
PATH = "/files/outputs/job1.mp4"
NOW = 1_700_000_000.0


def parse(query: str) -> dict[str, str]:
    parsed = urllib.parse.parse_qs(query, strict_parsing=True)
    assert set(parsed) == {"expires", "sig"}
    return {k: v[0] for k, v in parsed.items()}


def test_sign_format_and_verify() -> None:
    signer = UrlSigner(SECRET)
    q = parse(signer.sign(PATH, 60, now=NOW))
    assert q["expires"] == str(int(NOW + 60))
    assert len(q["sig"]) == 64
    assert signer.verify(PATH, q["expires"], q["sig"], now=NOW)
    assert signer.verify(PATH, int(q["expires"]), q["sig"], now=NOW + 59)


def test_real_clock() -> None:
    signer = UrlSigner(SECRET)
    q = parse(signer.sign(PATH, 60))
    assert signer.verify(PATH, q["expires"], q["sig"])


def test_expired() -> None:
    signer = UrlSigner(SECRET)
    q = parse(signer.sign(PATH, 60, now=NOW))
    assert not signer.verify(PATH, q["expires"], q["sig"], now=NOW + 60)
    assert not signer.verify(PATH, q["expires"], q["sig"], now=NOW + 3600)


def test_tampered_path_and_expiry() -> None:
    signer = UrlSigner(SECRET)
    q = parse(signer.sign(PATH, 60, now=NOW))
    assert not signer.verify("/files/outputs/job2.mp4", q["expires"], q["sig"], now=NOW)
    assert not signer.verify(PATH + "x", q["expires"], q["sig"], now=NOW)
    assert not signer.verify(PATH, str(int(q["expires"]) + 3600), q["sig"], now=NOW)


def test_other_secret_rejected() -> None:
    q = parse(UrlSigner(SECRET).sign(PATH, 60, now=NOW))
    assert not UrlSigner(b"t" * 32).verify(PATH, q["expires"], q["sig"], now=NOW)


@pytest.mark.parametrize(
    ("expires", "sig"),
    [
        ("", "0" * 64),
        ("abc", "0" * 64),
        ("-5", "0" * 64),
        ("1e12", "0" * 64),
        (" 1800000000", "0" * 64),
        ("9" * 40, "0" * 64),
        (True, "0" * 64),
        (None, "0" * 64),
        ("1800000000", ""),
        ("1800000000", "zz" * 32),
        ("1800000000", "0" * 63),
        ("1800000000", "0" * 65),
        ("1800000000", None),
    ],
)
def test_garbage_rejected_without_raising(expires: object, sig: object) -> None:
    assert not UrlSigner(SECRET).verify(PATH, expires, sig, now=NOW)  # type: ignore[arg-type]


def test_uppercase_signature_rejected() -> None:
    signer = UrlSigner(SECRET)
    q = parse(signer.sign(PATH, 60, now=NOW))
    assert not signer.verify(PATH, q["expires"], q["sig"].upper(), now=NOW)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"short")
    with pytest.raises(ValueError):
        UrlSigner(SECRET).sign(PATH, 0)


def test_secret_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "url-secret"
    first = load_or_create_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["url-secret"]


def test_urls_survive_restart(tmp_path: Path) -> None:
    path = tmp_path / "url-secret"
    query = parse(UrlSigner(load_or_create_secret(path)).sign(PATH, 60, now=NOW))
    assert UrlSigner(load_or_create_secret(path)).verify(PATH, query["expires"], query["sig"], now=NOW)


def test_short_secret_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "url-secret"
    path.write_bytes(b"")
    with pytest.raises(ValueError):
        load_or_create_secret(path)
