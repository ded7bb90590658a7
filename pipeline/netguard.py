"""Network safety for fetching untrusted URLs, as urllib handlers (img2dataset fetches with
``urllib.request.urlopen``): the address guard, an optional explicit proxy, one wall-clock
deadline per fetch, capped redirects and bodies, http(s) only, X-Robots-Tag and robots.txt.

The guard sits where the socket is opened, so it holds for the first request and for every
redirect hop alike, and it connects to the very address it checked (a second DNS answer
cannot swap in another: no rebinding window). Through a proxy (only one named explicitly:
the environment's ``http_proxy`` and friends are ignored), the target is resolved and
checked here and the proxy is asked for that checked address (absolute-URI request or
``CONNECT ip:port``), so the proxy cannot be steered to a refused address either.

Only globally routable addresses pass: loopback, private (RFC 1918, CGNAT), link-local
(169.254.169.254 included), multicast, reserved, unspecified, documentation, benchmarking
and every other IANA special-purpose block, and their IPv6 equivalents (IPv4-mapped, 6to4,
Teredo and NAT64 forms checked by the IPv4 address inside; IPv6 outside 2000::/3 refused),
unless ``allow_private`` or an allow-list entry (an address or network, optionally with a
port) says otherwise.

A connect-to entry (``HOST:PORT:ADDRESS:PORT``, as curl's ``--connect-to``) sends the
requests for one host and port to another address and port, keeping the URL and the
``Host`` header: a mirror, or virtual hosts served on loopback. The address connected to
is checked as any other.
"""

from __future__ import annotations

import base64
import heapq
import http.client
import ipaddress
import itertools
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Iterable
from urllib.parse import unquote, urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_USER_AGENT = "openwit/0.1 (+https://github.com/openwit/openwit; image-text dataset builder)"
USER_AGENT_TOKEN = "openwit"
HTTP_SCHEMES = ("http", "https")


class FetchRefused(Exception):
    """A fetch the guard refused; ``reason`` is its schemas.REASONS code.

    Not an OSError on purpose: urllib wraps OSErrors raised while connecting into a
    generic URLError, which would hide the reason; this propagates as it is.
    """

    reason = "download_error"

    def __init__(self, detail: str):
        super().__init__(f"{self.reason}: {detail}")


class ForbiddenAddress(FetchRefused):
    """The host is, or resolves to, an address the policy refuses."""

    reason = "forbidden_address"

    def __init__(self, detail: str, host: str = ""):
        super().__init__(detail)
        self.host = host


class TooLarge(FetchRefused):
    """The body is larger than the byte cap."""

    reason = "too_large_bytes"


class RobotsDisallowed(FetchRefused):
    """robots.txt disallows the path for our user-agent token (or could not be fetched)."""

    reason = "robots_disallowed"


class OptedOut(FetchRefused):
    """The response's X-Robots-Tag opts out of our use."""

    reason = "opted_out"


class FetchTimeout(FetchRefused):
    """The fetch (connect, every hop, headers and body) ran past its wall-clock deadline."""

    reason = "timeout"


class InvalidUrl(FetchRefused):
    """Not an http(s) URL, on the first request or on a redirect hop."""

    reason = "invalid_url"


# -- addresses -------------------------------------------------------------------------------

# IANA's IPv4 and IPv6 special-purpose address registries, every entry (globally reachable
# or not: no image is served from an anycast relay or an AS112 sink), plus site-local.
SPECIAL_PURPOSE: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24",
    "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23", "2001:db8::/32",
    "2620:4f:8000::/48", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
))
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def why_forbidden(ip: IPAddress) -> str | None:
    """Why an address must not be fetched from, or None if it is globally routable."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = why_forbidden(inner)
            return f"{reason} (embedded in {ip})" if reason else None
    for attr, label in (("is_loopback", "loopback"), ("is_unspecified", "unspecified"),
                        ("is_link_local", "link-local"), ("is_multicast", "multicast"),
                        ("is_private", "private"), ("is_reserved", "reserved")):
        if getattr(ip, attr):
            return label
    for net in SPECIAL_PURPOSE:
        if ip.version == net.version and ip in net:
            return f"special-purpose {net}"
    if isinstance(ip, ipaddress.IPv6Address) and ip not in GLOBAL_UNICAST_V6:
        return "outside IPv6 global unicast 2000::/3"
    if not ip.is_global:
        return "not globally routable"
    return None


_ALLOW_V6 = re.compile(r"\[(?P<net>[^\]]+)\](?::(?P<port>[^:]*))?")


def parse_allow(entry: str) -> tuple[IPNetwork, int | None]:
    """``ADDRESS``, ``NETWORK``, ``ADDRESS:PORT``, ``NETWORK:PORT``; IPv6 with a port in
    brackets (``[::1]:8080``, ``[fd00::/8]:443``). ValueError with a one-line message."""
    text = entry.strip()
    m = _ALLOW_V6.fullmatch(text)
    if m:
        net, port = m.group("net"), m.group("port")
    elif text.count(":") == 1:
        net, port = text.split(":")
    else:
        net, port = text, None
    try:
        network = ipaddress.ip_network(net.strip(), strict=False)
    except ValueError:
        raise ValueError(f"--allow {entry!r}: not an address or network (hostnames are not accepted)") from None
    if port is None:
        return network, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--allow {entry!r}: the port must be a number from 1 to 65535")
    return network, int(port)


_CONNECT_TO = re.compile(r"(?P<host>\[[^\]]+\]|[^:\[\]]+):(?P<port>[^:]*):(?P<to>\[[^\]]+\]|[^:\[\]]+):(?P<to_port>[^:]*)")


def parse_connect_to(entry: str) -> tuple[str, int, str, int]:
    """``HOST:PORT:ADDRESS:PORT`` (IPv6 in brackets) as (host, port, address, port), the
    hosts lower-cased and unbracketed. ValueError with a one-line message."""
    m = _CONNECT_TO.fullmatch(entry.strip())
    if not m:
        raise ValueError(f"--connect-to {entry!r}: expected HOST:PORT:ADDRESS:PORT, e.g. "
                         "images.example.test:80:127.0.0.1:8080")
    ports = []
    for name in ("port", "to_port"):
        port = m.group(name)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--connect-to {entry!r}: the ports must be numbers from 1 to 65535")
        ports.append(int(port))
    host, to = (m.group(g).strip("[]").lower().rstrip(".") for g in ("host", "to"))  # not-a-column
    if not host or not to:
        raise ValueError(f"--connect-to {entry!r}: empty host")
    return host, ports[0], to, ports[1]


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses (and ports) may be connected to. The default allows the public
    internet only; ``allow`` entries exempt an address or network, on one port or all."""

    allow_private: bool = False
    allow: tuple[tuple[IPNetwork, int | None], ...] = field(default_factory=tuple)
    connect_to: tuple[tuple[str, int, str, int], ...] = field(default_factory=tuple)

    @classmethod
    def from_strings(cls, allow: Iterable[str] = (), allow_private: bool = False,
                     connect_to: Iterable[str] = ()) -> "AddressPolicy":
        return cls(allow_private, tuple(parse_allow(a) for a in allow),
                   tuple(parse_connect_to(c) for c in connect_to))

    def route(self, host: str, port: int) -> tuple[str, int]:
        """Where a request for host:port connects: its connect-to target, or itself."""
        key = host.strip("[]").lower().rstrip(".")
        for name, name_port, target, target_port in self.connect_to:
            if name == key and name_port == port:
                return target, target_port
        return host, port

    def check(self, ip: IPAddress, port: int | None = None) -> str | None:
        """The refusal reason for this address and port, or None if they may be used."""
        if self.allow_private:
            return None
        for net, allowed_port in self.allow:
            if ip.version == net.version and ip in net and allowed_port in (None, port):
                return None
        reason = why_forbidden(ip)
        if reason and any(ip.version == net.version and ip in net for net, _ in self.allow):
            reason += f", and port {port} is not the allowed one"
        return reason

    def resolve(self, host: str, port: int) -> list[tuple]:
        """getaddrinfo results for host:port (or for its connect-to target); ForbiddenAddress
        if any address is refused."""
        target, target_port = self.route(host, port)
        via = "" if (target, target_port) == (host, port) else f" (connecting to {target}:{target_port})"
        try:
            infos = socket.getaddrinfo(target, target_port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise urllib.error.URLError(f"cannot resolve {target}: {e}") from None
        for info in infos:
            address = info[4][0]
            reason = _verdict(self, address, target_port)
            if reason:
                raise ForbiddenAddress(f"{host}:{port}{via} is {address.split('%')[0]}, {reason}", host)
        return infos


@lru_cache(maxsize=8192)
def _verdict(policy: AddressPolicy, address: str, port: int) -> str | None:
    """policy.check of a resolved address, remembered: a crawl meets the same few
    thousand addresses again and again, and the check walks every special-purpose block."""
    return policy.check(ipaddress.ip_address(address.split("%")[0]), port)


# -- one deadline per fetch --------------------------------------------------------------------

class Fetch:
    """One fetch's wall-clock deadline, shared by its redirect hops and its body reads."""

    __slots__ = ("deadline", "budget", "expired")

    def __init__(self, budget: float):
        self.budget, self.deadline, self.expired = budget, time.monotonic() + budget, False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, what: str) -> FetchTimeout:
        return FetchTimeout(f"{what} took longer than {self.budget:g}s")


class Reaper:
    """One thread per process that shuts down the socket of every fetch past its deadline,
    whatever it is blocked on (connect, TLS, a header trickled a byte at a time, the body).
    A socket's own timeout bounds one read; this bounds the whole fetch. It sweeps at most
    every ``GRAIN`` seconds (a deadline may be overrun by that much), so thousands of
    fetches a second cost a few wake-ups, not one each."""

    GRAIN = 0.1

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Fetch, socket.socket]] = []
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, fetch: Fetch, sock: socket.socket) -> None:
        with self._cond:
            wake = not self._heap or fetch.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (fetch.deadline, next(self._ids), fetch, sock))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="openwit-deadlines", daemon=True)
                self._thread.start()
            elif wake:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(None if wait is None else max(wait, self.GRAIN))
                now, due = time.monotonic(), []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap))
            for _, _, fetch, sock in due:
                fetch.expired = True
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # a closed socket has no fd: OSError, nothing touched
                except OSError:
                    pass


REAPER = Reaper()


def _fetch_of(req: urllib.request.Request, default: float) -> Fetch:
    fetch = getattr(req, "openwit_fetch", None)
    if fetch is None:
        timeout = req.timeout if isinstance(req.timeout, (int, float)) else default
        fetch = req.openwit_fetch = Fetch(float(timeout))  # type: ignore[attr-defined]
    return fetch


# -- connections -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proxy:
    """An explicitly configured forward proxy (``http://[user:pass@]host:port``). Trusted as
    a relay: its own address is not checked, every target is."""

    host: str
    port: int
    auth: str | None = None

    @classmethod
    def parse(cls, url: str) -> "Proxy":
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--proxy {url!r}: expected http://[user:password@]host:port")
        try:
            port = parts.port or 8080
        except ValueError:
            raise ValueError(f"--proxy {url!r}: bad port") from None
        auth = None
        if parts.username is not None:
            creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = "Basic " + base64.b64encode(creds.encode()).decode("ascii")
        return cls(parts.hostname, port, auth)


def _open_socket(infos: list[tuple], fetch: Fetch, timeout: float | None,
                 source_address: tuple | None) -> socket.socket:
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        remaining = fetch.remaining()
        if remaining <= 0:
            raise fetch.timeout("connecting")
        sock = socket.socket(family, kind, proto)
        REAPER.watch(fetch, sock)
        try:
            if isinstance(timeout, (int, float)):
                sock.settimeout(min(timeout, remaining))
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)  # the checked address itself, not a new lookup
            return sock
        except OSError as e:
            last = e
            sock.close()
    raise last or OSError("cannot connect")


def _ip_literal(infos: list[tuple]) -> tuple[str, int]:
    ip, port = infos[0][4][:2]
    return (f"[{ip}]" if ":" in ip else ip), port


def _guarded_connection(base: type, policy: AddressPolicy, proxy: Proxy | None) -> type:
    class Guarded(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, fetch: Fetch, **kwargs):
            super().__init__(*args, **kwargs)
            self.fetch = fetch
            self.pinned: tuple[str, int] | None = None

        def _pin(self) -> tuple[str, int]:
            """The checked address and port of the target, the address as a literal for the proxy."""
            if self.pinned is None:
                self.pinned = _ip_literal(policy.resolve(self.host, self.port))
            return self.pinned

        def putrequest(self, method, url, *args, **kwargs):
            https = isinstance(self, http.client.HTTPSConnection)
            if proxy is not None and not https:  # ask the proxy for the checked address
                address, port = self._pin()
                url = f"http://{address}:{port}{url}"
            super().putrequest(method, url, *args, **kwargs)
            if proxy is not None and not https and proxy.auth:
                self.putheader("Proxy-Authorization", proxy.auth)

        def connect(self) -> None:
            https = isinstance(self, http.client.HTTPSConnection)
            if proxy is None:
                infos = policy.resolve(self.host, self.port)
                self.sock = _open_socket(infos, self.fetch, self.timeout, self.source_address)
            else:
                target, target_port = self._pin()
                infos = socket.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
                self.sock = _open_socket(infos, self.fetch, self.timeout, self.source_address)
                if https:
                    self._tunnel_host, self._tunnel_port = target, target_port
                    self._tunnel_headers = {"Proxy-Authorization": proxy.auth} if proxy.auth else {}
                    self._tunnel()
            if https:
                self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)
                REAPER.watch(self.fetch, self.sock)

    return Guarded


class HostLimiter:
    """At most ``per_host`` requests of this process waiting on the same host at once."""

    def __init__(self, per_host: int):
        self.per_host = per_host
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def slot(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            sem = self._slots.get(host)
            if sem is None:
                sem = self._slots[host] = threading.BoundedSemaphore(self.per_host)
            return sem


class _GuardedOpen:
    """The shared body of the http and https handlers: one deadline, the host limiter, and
    a timeout reported as such (not as whatever error the shut-down socket raised)."""

    default_timeout = 10.0

    def _guarded_open(self, connection: type, req: urllib.request.Request, **kwargs):
        fetch = _fetch_of(req, self.default_timeout)
        if fetch.remaining() <= 0:
            raise fetch.timeout("the fetch")
        factory = partial(connection, fetch=fetch)
        try:
            if self._limiter is None:  # type: ignore[attr-defined]
                return self.do_open(factory, req, **kwargs)  # type: ignore[attr-defined]
            with self._limiter.slot(req.host):  # type: ignore[attr-defined]  # held until the headers are in
                return self.do_open(factory, req, **kwargs)  # type: ignore[attr-defined]
        except FetchRefused:
            raise
        except Exception:
            if fetch.expired or fetch.remaining() <= 0:
                raise fetch.timeout(f"fetching {req.full_url}") from None
            raise


class GuardedHTTPHandler(_GuardedOpen, urllib.request.HTTPHandler):
    def __init__(self, policy: AddressPolicy, limiter: HostLimiter | None = None, proxy: Proxy | None = None):
        super().__init__()
        self._connection = _guarded_connection(http.client.HTTPConnection, policy, proxy)
        self._limiter = limiter

    def http_open(self, req: urllib.request.Request):
        return self._guarded_open(self._connection, req)


class GuardedHTTPSHandler(_GuardedOpen, urllib.request.HTTPSHandler):
    def __init__(self, policy: AddressPolicy, context: ssl.SSLContext | None = None,
                 limiter: HostLimiter | None = None, proxy: Proxy | None = None):
        super().__init__(context=context)
        self._connection = _guarded_connection(http.client.HTTPSConnection, policy, proxy)
        self._limiter = limiter

    def https_open(self, req: urllib.request.Request):
        return self._guarded_open(self._connection, req, context=self._context)


class SchemeGuard(urllib.request.BaseHandler):
    """Only http and https are opened: file:, ftp:, data: and the rest are refused before
    any handler for them runs."""

    handler_order = 100

    def default_open(self, req: urllib.request.Request):
        if req.type not in HTTP_SCHEMES:
            raise InvalidUrl(f"{req.type}: urls are not fetched, only http and https")
        return None


class CappedRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Redirects only to http(s), at most ``max_redirects`` hops, never back to a seen URL;
    the hop inherits the fetch's deadline."""

    def __init__(self, max_redirects: int = 5):
        super().__init__()
        self.max_redirections = max_redirects

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("location") or headers.get("uri")
        if location:  # before urllib's own check, which words a file: redirect as an HTTP error
            scheme = urlsplit(urljoin(req.full_url, location.strip())).scheme.lower()
            if scheme not in HTTP_SCHEMES:
                fp.close()
                raise InvalidUrl(f"redirect to a non-http url ({scheme}:)")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in HTTP_SCHEMES:
            raise InvalidUrl(f"redirect to a non-http url ({scheme}:)")
        visited = getattr(req, "redirect_dict", {})
        if newurl in visited:
            raise urllib.error.HTTPError(newurl, code, "redirect_loop: the redirect revisits a url", headers, fp)
        if sum(visited.values()) >= self.max_redirections:
            raise urllib.error.HTTPError(newurl, code, f"too_many_redirects: more than {self.max_redirections}",
                                         headers, fp)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and getattr(req, "openwit_fetch", None) is not None:
            new.openwit_fetch = req.openwit_fetch
        return new


CHUNK = 64 << 10


class ByteCapProcessor(urllib.request.BaseHandler):
    """Bodies are read in bounded chunks, at most ``max_bytes`` + 1 whatever the headers
    say, and within the fetch's deadline. A declared length over the cap is refused before
    reading; a body shorter than its declared length raises IncompleteRead."""

    handler_order = 900

    def __init__(self, max_bytes: int, default_timeout: float = 10.0):
        self.max_bytes, self.default_timeout = max_bytes, default_timeout

    def http_response(self, request, response):
        cap = self.max_bytes
        fetch = _fetch_of(request, self.default_timeout)
        declared = getattr(response, "length", None)  # what http.client made of Content-Length
        if declared is not None and declared > cap:
            response.close()
            raise TooLarge(f"Content-Length {response.headers.get('Content-Length')} > {cap}")
        raw_readinto = response.readinto  # the class's own, captured before it is replaced
        total = [0]

        def one(amt: int) -> bytes:
            if fetch.expired or fetch.remaining() <= 0:
                raise fetch.timeout("reading the body")
            size = min(amt, cap + 1 - total[0])
            left = getattr(response, "length", None)  # what remains of a declared length
            if left is not None:
                size = min(size, left + 1)  # exact reads, and the +1 sees the end
            buf = bytearray(max(0, size))
            try:
                data = bytes(memoryview(buf)[:raw_readinto(buf)])
            except Exception:
                if fetch.expired:
                    raise fetch.timeout("reading the body") from None
                raise
            if fetch.expired and len(data) < len(buf):
                raise fetch.timeout("reading the body")
            total[0] += len(data)
            if total[0] > cap:
                response.close()
                raise TooLarge(f"body exceeds {cap} bytes")
            if not data and buf and getattr(response, "length", None):
                raise http.client.IncompleteRead(b"", response.length)  # closed before the declared end
            return data

        def capped_read(amt: int | None = None) -> bytes:
            if amt is not None and amt >= 0:
                return one(amt)
            parts = []
            while data := one(CHUNK):
                parts.append(data)
            return b"".join(parts)

        def capped_readinto(b) -> int:
            data = one(len(b))
            b[:len(data)] = data
            return len(data)

        response.read = capped_read
        response.readinto = capped_readinto
        response.read1 = lambda n=-1: one(n if n is not None and n >= 0 else CHUNK)
        return response

    https_response = http_response


class UserAgentProcessor(urllib.request.BaseHandler):
    """Send our user-agent string on every request (a caller's own one is replaced)."""

    def __init__(self, user_agent: str):
        self.user_agent = user_agent

    def http_request(self, request):
        request.add_unredirected_header("User-agent", self.user_agent)
        request.headers.pop("User-agent", None)
        return request

    https_request = http_request


class XRobotsProcessor(urllib.request.BaseHandler):
    """Refuse a successful response whose X-Robots-Tag opts out of our token
    (``pipeline.robots.opted_out``: comma lists, ``agent:`` scopes, ``none``)."""

    handler_order = 800

    def __init__(self, token: str):
        from pipeline.robots import opted_out  # robots imports this module: bound once, here

        self.token, self.opted_out = token, opted_out

    def http_response(self, request, response):
        values = response.headers.get_all("X-Robots-Tag") or []
        if 200 <= response.status < 300 and values and self.opted_out(headers=values, token=self.token):
            response.close()
            raise OptedOut(f"X-Robots-Tag {'; '.join(values)[:120]!r}")
        return response

    https_response = http_response


def build_opener(policy: AddressPolicy, max_redirects: int = 5, max_bytes: int = 32 << 20,
                 user_agent: str | None = None, robots: bool = False, timeout: float = 10.0,
                 max_per_host: int = 0, proxy: str | None = None, context: ssl.SSLContext | None = None,
                 x_robots_tag: bool = False, robots_store: str | None = None,
                 token: str = USER_AGENT_TOKEN) -> urllib.request.OpenerDirector:
    """An opener whose every connection, redirect and body obeys the limits. The
    environment's proxy settings are ignored; ``proxy`` routes through one explicitly.
    ``timeout`` is the wall-clock budget of a fetch that names none. With ``robots``, every
    request is first checked against its host's robots.txt (fetched once per host through
    the same guards, shared through ``robots_store`` by the processes of one run); with
    ``x_robots_tag``, opted-out responses are refused; with ``max_per_host``, at most that
    many requests of this process wait on one host at a time."""
    limiter = HostLimiter(max_per_host) if max_per_host > 0 else None
    via = Proxy.parse(proxy) if proxy else None
    http_handler = GuardedHTTPHandler(policy, limiter, via)
    https_handler = GuardedHTTPSHandler(policy, context, limiter, via)
    for h in (http_handler, https_handler):
        h.default_timeout = timeout
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({}), SchemeGuard(), http_handler, https_handler,
        CappedRedirectHandler(max_redirects), ByteCapProcessor(max_bytes, timeout)]
    if user_agent:
        handlers.append(UserAgentProcessor(user_agent))
    if x_robots_tag:
        handlers.append(XRobotsProcessor(token))
    if robots:
        from pipeline.robots import RobotsCache, RobotsProcessor

        base = urllib.request.build_opener(*handlers)
        cache = RobotsCache(base, user_agent or DEFAULT_USER_AGENT, token=token, timeout=timeout, store=robots_store)
        handlers.append(RobotsProcessor(cache))
    return urllib.request.build_opener(*handlers)
