"""Guarded HTTP(S) fetching of user-supplied URLs (input images, webhooks).

A URL taken from a request must not reach the server's own network (SSRF): 127.0.0.1, the
cloud metadata service at 169.254.169.254, intranet hosts.  This is hand-written because
``advocate``, the usual guard (for requests), is unmaintained since 2020, and httpx has no
such guard of its own.  What it does:

* the host is parsed, IP literals in every spelling the OS accepts (``2130706433``,
  ``0x7f.1``, ``[::ffff:127.0.0.1]`` ...) included, and a name is resolved once; every
  address must be global unless it is on :attr:`FetchPolicy.allow`, else nothing connects;
* the connection goes to the checked IP itself, so httpx never resolves the name and a DNS
  answer that changes after the check (rebinding) has no effect.  The original name goes in
  the ``Host`` header and, for https, is the TLS server name (SNI) that the certificate is
  verified against (httpcore's ``sni_hostname`` request extension);
* redirects are followed by hand (GET only), every hop checked the same way;
* connect, read and total timeouts, a byte cap, identity encoding, no credentials (no
  ``Authorization``, no cookies) and nothing from the environment (proxies, netrc).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from framepack_server.errors import InputError

__all__ = ["FetchPolicy", "Resolver", "check_url", "fetch", "is_refused_address", "post_json"]

Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> IP address strings``; the default uses :func:`socket.getaddrinfo`."""

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = {301, 302, 303, 307, 308}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NEVER_SENT = {"authorization", "proxy-authorization", "cookie", "host"}
_BASE_HEADERS = {"User-Agent": "framepack-server", "Accept": "*/*", "Accept-Encoding": "identity"}
_LEGACY_V4 = re.compile(r"^[0-9a-fx.]+$")  # decimal, octal, hex and short IPv4 spellings
_NAME = re.compile(r"^[a-z0-9_.-]+$")


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch.  ``allow`` (CIDR networks and/or host names) is the only way
    around the address guard: for tests and private deployments."""

    allow: tuple[str, ...] = ()
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0  # the whole download, against servers that drip bytes
    ca_file: str | None = None  # PEM bundle that replaces the default CAs (private deployments, tests)


def is_refused_address(ip: str) -> bool:
    """True unless ``ip`` is a global unicast address (embedded IPv4 judged by itself)."""
    try:
        addr: _IP = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return True
    embedded = _embedded_v4(addr)
    addr = embedded if embedded is not None else addr
    if addr.is_multicast or addr.is_reserved or addr.is_unspecified or addr.is_link_local or addr.is_private:
        return True
    if isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local:
        return True
    return addr in _CGNAT or not addr.is_global


def check_url(
    url: str, field: str, policy: FetchPolicy = FetchPolicy(), resolver: Resolver | None = None
) -> tuple[str, list[str]]:
    """Parse, resolve and check ``url``; return ``(host, checked addresses)`` or raise :class:`InputError`."""
    parts, host, port = _parse(url, field)
    return host, _checked_addresses(host, port, field, policy, resolver)


def fetch(
    url: str,
    field: str,
    policy: FetchPolicy = FetchPolicy(),
    *,
    resolver: Resolver | None = None,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """Send ``method`` to ``url`` and return the body of a 2xx answer, at most ``policy.max_bytes``."""
    shown = _short(url)
    deadline = time.monotonic() + policy.total_timeout
    with _errors(field, shown), _open(url, field, policy, resolver, method, body, headers) as response:
        if not 200 <= response.status_code < 300:
            raise InputError(field, f"HTTP {response.status_code} from {shown}")
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise InputError(field, f"compressed responses are not supported: {shown}")
        too_large = InputError(field, f"the response is larger than {policy.max_bytes} bytes: {shown}")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > policy.max_bytes:
            raise too_large
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > policy.max_bytes:
                raise too_large
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("total timeout")
            chunks.append(chunk)
        return b"".join(chunks)


def post_json(
    url: str,
    field: str,
    policy: FetchPolicy,
    body: bytes,
    headers: dict[str, str],
    resolver: Resolver | None = None,
) -> int:
    """POST ``body`` (a webhook) and return the HTTP status; redirects are not followed (3xx is returned)."""
    headers = {"Content-Type": "application/json", **headers}
    with _errors(field, _short(url)), _open(url, field, policy, resolver, "POST", body, headers) as response:
        return response.status_code


# --------------------------------------------------------------------------- internals


@contextmanager
def _open(
    url: str,
    field: str,
    policy: FetchPolicy,
    resolver: Resolver | None,
    method: str,
    body: bytes | None,
    headers: dict[str, str] | None,
) -> Iterator[httpx.Response]:
    """Yield the streamed response, after following (GET) redirects hop by hop."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=policy.ca_file) if policy.ca_file else True
    timeout = httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout)
    sent = {k: v for k, v in (headers or {}).items() if k.lower() not in _NEVER_SENT}
    follow = method.upper() == "GET"
    for _hop in range(policy.max_redirects + 1):
        parts, host, port = _parse(url, field)
        addresses = _checked_addresses(host, port, field, policy, resolver)  # before any connection
        default_port = port == _DEFAULT_PORTS[parts.scheme]
        sent["Host"] = _bracket(host) + ("" if default_port else f":{port}")
        # For a name, TLS sends it as SNI and verifies the certificate against it, not against the IP.
        extensions = {"sni_hostname": host} if parts.scheme == "https" and _literal(host) is None else {}
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # A client per hop: no cookie jar carried over, no pooled connection reused for another name.
        with httpx.Client(verify=verify, timeout=timeout, trust_env=False, headers=_BASE_HEADERS) as client:
            requests = [
                client.build_request(method, ip_url, content=body, headers=sent, extensions=extensions)
                for ip_url in (f"{parts.scheme}://{_bracket(ip)}:{port}{target}" for ip in addresses)
            ]
            response = _send(client, requests)
            try:
                location = response.headers.get("Location")
                if follow and response.status_code in _REDIRECTS and location:
                    url = urllib.parse.urljoin(url, location)
                    continue
                yield response
                return
            finally:
                response.close()
    raise InputError(field, f"too many redirects (more than {policy.max_redirects})")


def _send(client: httpx.Client, requests: list[httpx.Request]) -> httpx.Response:
    """Send to the checked addresses in turn; the first that accepts the connection answers."""
    for request in requests[:-1]:
        try:
            return client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectError:
            pass
    return client.send(requests[-1], stream=True, follow_redirects=False)


def _parse(url: str, field: str) -> tuple[urllib.parse.SplitResult, str, int]:
    shown = _short(url)
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise InputError(field, f"invalid URL: {shown}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InputError(field, f"not an http(s) URL: {shown}")
    if "@" in parts.netloc:
        raise InputError(field, f"user names and passwords are not allowed in the URL: {shown}")
    host = parts.hostname or ""
    if _literal(host) is None:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = ""
        if not _NAME.match(host):
            raise InputError(field, f"invalid host name in the URL: {shown}")
    return parts._replace(scheme=scheme), host, port if port is not None else _DEFAULT_PORTS[scheme]


def _checked_addresses(host: str, port: int, field: str, policy: FetchPolicy, resolver: Resolver | None) -> list[str]:
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [str(a) for a in (resolver or _resolve)(host, port)]
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            raise InputError(field, f"could not resolve host {host}")
    names, networks = _split_allow(policy.allow)
    checked: list[str] = []
    for ip in addresses:
        try:
            addr = str(ipaddress.ip_address(ip.split("%", 1)[0]))  # a scope id is dropped
        except ValueError:
            raise InputError(field, f"could not resolve host {host} (not an IP address: {ip!r})") from None
        if host.rstrip(".") not in names and is_refused_address(addr) and not _in_networks(addr, networks):
            verb = "is" if literal is not None else "resolves to"
            raise InputError(field, f"refused: {host} {verb} a private or reserved address ({addr})")
        checked.append(addr)
    return list(dict.fromkeys(checked))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _split_allow(allow: tuple[str, ...]) -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names: set[str] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in allow:
        literal = _literal(entry)
        if "/" in entry or literal is not None:
            networks.append(ipaddress.ip_network(literal or entry, strict=False))
        else:
            names.add(entry.lower().rstrip("."))
    return names, networks


def _literal(host: str) -> str | None:
    """The canonical form of an IP literal in any spelling, or None for a host name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _LEGACY_V4.match(host.lower()):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            pass
    return None


def _embedded_v4(addr: _IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address."""
    if isinstance(addr, ipaddress.IPv4Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _V4_COMPATIBLE or addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.sixtofour


def _in_networks(ip: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    addr = ipaddress.ip_address(ip)
    embedded = _embedded_v4(addr)
    return any(addr in n or (embedded is not None and embedded in n) for n in networks)


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@contextmanager
def _errors(field: str, shown: str) -> Iterator[None]:
    """Turn httpx's errors into :class:`InputError`."""
    try:
        yield
    except httpx.TimeoutException:
        raise InputError(field, f"timed out: {shown}") from None
    except httpx.ConnectError as e:
        raise InputError(field, f"could not connect to {shown}: {e}") from None
    except httpx.HTTPError as e:
        raise InputError(field, f"could not fetch {shown}: {e}") from None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
