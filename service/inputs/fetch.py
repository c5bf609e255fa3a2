"""URL inputs, fetched under an SSRF policy (the connection half; the address rules are in ``addresses``).

For each hop (the URL, then every redirect, at most ``max_redirects``): http/https only, no credentials in the
URL, the host in the allowlist when one is set, every address the host resolves to (resolved off the event
loop) passing ``check_address``; then the connection is pinned to the checked address: the request goes to
the IP itself with the original ``Host`` header and, for https, the original name as SNI and for certificate
verification, so a DNS answer that changes between check and connect (rebinding) cannot move it. Bodies are
streamed under a byte cap, uncompressed only, and must start with an image signature, whatever Content-Type says.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import certifi
import httpx

from vitserve.service.core.errors import InvalidInput, UnsupportedMediaType, UrlFetchFailed, UrlForbidden
from vitserve.service.inputs.addresses import AddressRefused, IPAddress, check_address, parse_ip_literal
from vitserve.vit.image_errors import ImageTooLarge

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]

_REDIRECTS = {301, 302, 303, 307, 308}
# One answer for every way a permitted URL can fail (refused, reset, timed out, a non-200 status): the detail
# goes to the server log.
FETCH_FAILED = "could not fetch an image from the URL"
# Signatures of the formats the decoder accepts (vit.decode.ALLOWED_FORMATS).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_SNIFF_BYTES = 12


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, via the loop's ``getaddrinfo`` (run on a thread, off the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class UrlPolicy:
    max_bytes: int
    allow_hosts: tuple[str, ...] = ()  # empty: any host whose addresses pass
    allow_loopback: bool = False  # tests only
    connect_timeout_s: float = 3.0
    timeout_s: float = 10.0  # the whole fetch, redirects included
    max_redirects: int = 3


def looks_like_image(head: bytes) -> bool:
    """Whether ``head`` (the first bytes) starts like a JPEG, PNG, GIF, WebP, BMP or TIFF file."""
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


@dataclass(frozen=True)
class _Hop:
    url: httpx.URL
    address: IPAddress


class UrlFetcher:
    """``fetch(url) -> bytes`` under ``policy``. ``resolver`` and ``transport`` are injectable for tests."""

    def __init__(
        self,
        policy: UrlPolicy,
        *,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy, self.resolver, self.transport = policy, resolver, transport

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext:
        """One TLS context for every fetch (httpx's default trust store, certifi's): building it loads the CA
        bundle, ~45 ms of CPU, which a client created per fetch would pay on every URL, even a refused one."""
        return ssl.create_default_context(cafile=certifi.where())

    async def fetch(self, url: str) -> bytes:
        """The body at ``url``. Raises ``UrlForbidden``, ``UrlFetchFailed``, ``ImageTooLarge`` or
        ``UnsupportedMediaType`` (the body is not an image)."""
        p = self.policy
        timeout = httpx.Timeout(p.timeout_s, connect=p.connect_timeout_s)
        try:
            async with asyncio.timeout(p.timeout_s):
                hop = await self.check(url)  # before the client: a refused URL costs none
                client = httpx.AsyncClient(transport=self.transport, timeout=timeout, trust_env=False, verify=self._tls)
                async with client:
                    return await self._follow(client, hop)
        except TimeoutError:
            raise UrlFetchFailed(f"fetching the URL took longer than {p.timeout_s:g} s") from None
        except httpx.HTTPError as err:
            # The kind of failure (refused, reset, timed out) stays in the log: told to the client, it would make
            # the service a port scanner of whatever the URL policy lets through.
            log.info("URL fetch failed: %s: %s", type(err).__name__, err)
            raise UrlFetchFailed(FETCH_FAILED) from None

    async def _follow(self, client: httpx.AsyncClient, hop: _Hop) -> bytes:
        """Fetch ``hop`` (already checked), following redirects; each new location is checked before it is asked."""
        for _ in range(self.policy.max_redirects + 1):
            headers = {"Host": _host_header(hop.url), "Accept": "image/*", "Accept-Encoding": "identity"}
            extensions = {"sni_hostname": hop.url.host} if hop.url.scheme == "https" else {}
            pinned = hop.url.copy_with(host=str(hop.address))
            async with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                if response.status_code not in _REDIRECTS:
                    if response.status_code != 200:
                        log.info("URL fetch: the upstream answered HTTP %d", response.status_code)
                        raise UrlFetchFailed(FETCH_FAILED)
                    return await self._read(response)
                location = response.headers.get("location")
                if not location:
                    log.info("URL fetch: HTTP %d redirect without a Location header", response.status_code)
                    raise UrlFetchFailed(FETCH_FAILED)
            hop = await self.check(str(hop.url.join(location)))
        raise UrlFetchFailed(f"more than {self.policy.max_redirects} redirects")

    async def check(self, url: str) -> _Hop:
        """Apply the policy to ``url``; return it parsed with the address to connect to."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as err:
            raise InvalidInput(f"invalid URL: {err}") from None
        if parsed.scheme not in ("http", "https"):
            raise UrlForbidden(f"URL scheme {parsed.scheme or 'none'!r} is not allowed; use http or https")
        if parsed.userinfo:
            raise UrlForbidden("credentials in URLs are not accepted")
        host = parsed.host.lower().rstrip(".")
        if not host:
            raise UrlForbidden("the URL has no host")
        if self.policy.allow_hosts and host not in self.policy.allow_hosts:
            raise UrlForbidden(f"host {host!r} is not in the allowed hosts")
        try:
            literal = parse_ip_literal(host)
        except AddressRefused as err:
            raise UrlForbidden(str(err)) from None
        addresses = [literal] if literal is not None else await self._resolve(host, parsed.port or _port(parsed))
        try:
            for address in addresses:
                check_address(address, allow_loopback=self.policy.allow_loopback)
        except AddressRefused as err:
            log.info("URL input refused: %s (%s)", host, err)
            if literal is not None:
                raise UrlForbidden(f"address refused: {err}") from None
            raise UrlForbidden(f"host {host!r} resolves to an address that is not public") from None
        return _Hop(parsed, addresses[0])

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            found = await self.resolver(host, port)
        except (OSError, UnicodeError) as err:
            raise UrlFetchFailed(f"cannot resolve host {host!r}: {err}") from None
        addresses = []
        for text in found:
            address = parse_ip_literal(text)
            if address is None:
                raise UrlFetchFailed(f"resolver returned a non-address {text!r} for {host!r}")
            addresses.append(address)
        if not addresses:
            raise UrlFetchFailed(f"host {host!r} has no addresses")
        return addresses

    async def _read(self, response: httpx.Response) -> bytes:
        cap = self.policy.max_bytes
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise UrlFetchFailed(f"compressed responses ({encoding}) are not accepted")
        declared = response.headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > cap:
            raise ImageTooLarge(f"the URL's body is {declared} bytes; the limit is {cap} bytes")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > cap:
                raise ImageTooLarge(f"the URL's body exceeds the limit of {cap} bytes")
            if len(body) >= _SNIFF_BYTES and len(body) - len(chunk) < _SNIFF_BYTES:
                _require_image(bytes(body[:_SNIFF_BYTES]), response)
        _require_image(bytes(body[:_SNIFF_BYTES]), response)
        return bytes(body)


def _require_image(head: bytes, response: httpx.Response) -> None:
    if not looks_like_image(head):
        log.info("URL fetch: not an image (Content-Type %r)", response.headers.get("content-type", "none"))
        raise UnsupportedMediaType("the URL did not return a JPEG, PNG, GIF, WebP, BMP or TIFF image")


def _port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _host_header(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port is None else f"{host}:{url.port}"
