"""Network safety for fetching untrusted URLs: the address guard, capped redirects and bodies,
and robots.txt, as urllib handlers (img2dataset fetches with ``urllib.request.urlopen``).

The guard sits where the socket is opened, so it holds for the first request and for every
redirect hop alike, and it connects to the very address it checked (a second DNS answer
cannot swap in another: no rebinding window). Only globally routable addresses pass:
loopback, private (RFC 1918, CGNAT), link-local (169.254.169.254 included), multicast,
reserved, unspecified and documentation ranges, and their IPv6 equivalents (including
IPv4-mapped, 6to4 and Teredo forms), are refused unless ``allow_private`` or an explicit
allow-list says otherwise.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_USER_AGENT = "openwit/0.1 (+https://github.com/openwit/openwit; image-text dataset builder)"
USER_AGENT_TOKEN = "openwit"


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


class TooLarge(FetchRefused):
    """The body is larger than the byte cap."""

    reason = "too_large_bytes"


class RobotsDisallowed(FetchRefused):
    """robots.txt disallows the path for our user-agent token."""

    reason = "robots_disallowed"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
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
    if not ip.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses may be connected to. The default allows the public internet only."""

    allow_private: bool = False
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default_factory=tuple)

    @classmethod
    def from_strings(cls, allow: Iterable[str] = (), allow_private: bool = False) -> "AddressPolicy":
        return cls(allow_private, tuple(ipaddress.ip_network(a, strict=False) for a in allow))

    def check(self, ip: IPAddress) -> str | None:
        """The refusal reason for this address, or None if it may be used."""
        if self.allow_private or any(ip in net for net in self.allow):
            return None
        return why_forbidden(ip)

    def resolve(self, host: str, port: int) -> list[tuple]:
        """getaddrinfo results for host:port; ForbiddenAddress if any address is refused."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise urllib.error.URLError(f"cannot resolve {host}: {e}") from None
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            reason = self.check(ip)
            if reason:
                raise ForbiddenAddress(f"{host} is {ip}, {reason}")
        return infos


def _connect(policy: AddressPolicy, host: str, port: int, timeout: float | None,
             source_address: tuple | None) -> socket.socket:
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in policy.resolve(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)  # the checked address itself, not a new lookup
            return sock
        except OSError as e:
            last = e
            sock.close()
    raise last or OSError(f"cannot connect to {host}:{port}")


def _guarded_connection(base: type, policy: AddressPolicy) -> type:
    class Guarded(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            self.sock = _connect(policy, self.host, self.port, self.timeout, self.source_address)
            if self._tunnel_host:
                self._tunnel()
            if isinstance(self, http.client.HTTPSConnection):
                self.sock = self._context.wrap_socket(self.sock, server_hostname=self._tunnel_host or self.host)

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


class GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: AddressPolicy, limiter: HostLimiter | None = None):
        super().__init__()
        self._connection = _guarded_connection(http.client.HTTPConnection, policy)
        self._limiter = limiter

    def http_open(self, req: urllib.request.Request):
        if self._limiter is None:
            return self.do_open(self._connection, req)
        with self._limiter.slot(req.host):  # held until the response headers are in
            return self.do_open(self._connection, req)


class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: AddressPolicy, context: ssl.SSLContext | None = None,
                 limiter: HostLimiter | None = None):
        super().__init__(context=context)
        self._connection = _guarded_connection(http.client.HTTPSConnection, policy)
        self._limiter = limiter

    def https_open(self, req: urllib.request.Request):
        if self._limiter is None:
            return self.do_open(self._connection, req, context=self._context)
        with self._limiter.slot(req.host):
            return self.do_open(self._connection, req, context=self._context)


class CappedRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Redirects only to http(s), at most ``max_redirects`` hops, never back to a seen URL."""

    def __init__(self, max_redirects: int = 5):
        super().__init__()
        self.max_redirections = max_redirects

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-http url ({scheme}:)", headers, fp)
        visited = getattr(req, "redirect_dict", {})
        if newurl in visited:
            raise urllib.error.HTTPError(newurl, code, "redirect_loop: the redirect revisits a url", headers, fp)
        if sum(visited.values()) >= self.max_redirections:
            raise urllib.error.HTTPError(newurl, code, f"too_many_redirects: more than {self.max_redirections}",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class ByteCapProcessor(urllib.request.BaseHandler):
    """Refuse a body larger than ``max_bytes``: by its Content-Length, or while it is read."""

    handler_order = 900

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes

    def http_response(self, request, response):
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            response.close()
            raise TooLarge(f"Content-Length {length} > {self.max_bytes}")
        read, cap = response.read, self.max_bytes

        def capped_read(amt: int | None = None) -> bytes:
            if (amt is None or amt < 0) and getattr(response, "length", None) is not None:
                data = read()  # a known length (already under the cap): a short body raises IncompleteRead
            else:
                data = read(cap + 1 if amt is None or amt < 0 else amt)
            capped_read.total += len(data)  # type: ignore[attr-defined]
            if capped_read.total > cap:  # type: ignore[attr-defined]
                raise TooLarge(f"body exceeds {cap} bytes")
            return data

        capped_read.total = 0  # type: ignore[attr-defined]
        response.read = capped_read
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


class RobotsProcessor(urllib.request.BaseHandler):
    """Refuse a request (and every redirect hop) that robots.txt disallows."""

    handler_order = 400

    def __init__(self, robots: "RobotsCache"):
        self.robots = robots

    def http_request(self, request):
        url = request.full_url
        if urlsplit(url).path != "/robots.txt" and not self.robots.allowed(url):
            raise RobotsDisallowed(f"robots.txt of {urlsplit(url).netloc} disallows {urlsplit(url).path}")
        return request

    https_request = http_request


def build_opener(policy: AddressPolicy, max_redirects: int = 5, max_bytes: int = 32 << 20,
                 user_agent: str | None = None, robots: bool = False, timeout: float = 10.0,
                 max_per_host: int = 0) -> urllib.request.OpenerDirector:
    """An opener whose every connection, redirect and body obeys the limits; with
    ``robots``, every request is first checked against the host's robots.txt (fetched
    once per host through the same guards); with ``max_per_host``, at most that many
    requests of this process wait on one host at a time."""
    limiter = HostLimiter(max_per_host) if max_per_host > 0 else None
    handlers: list[urllib.request.BaseHandler] = [
        GuardedHTTPHandler(policy, limiter), GuardedHTTPSHandler(policy, limiter=limiter),
        CappedRedirectHandler(max_redirects), ByteCapProcessor(max_bytes)]
    if user_agent:
        handlers.append(UserAgentProcessor(user_agent))
    if robots:
        base = urllib.request.build_opener(*handlers)
        handlers.append(RobotsProcessor(RobotsCache(base, user_agent or DEFAULT_USER_AGENT, timeout=timeout)))
    return urllib.request.build_opener(*handlers)


class RobotsCache:
    """robots.txt per host (scheme://netloc), fetched once through the guarded opener.

    Per RFC 9309: a 4xx answer (no robots.txt) allows everything; a 5xx answer or an
    unreachable host disallows everything for this run, since the site may be down.
    """

    def __init__(self, opener: urllib.request.OpenerDirector, user_agent: str = DEFAULT_USER_AGENT,
                 token: str = USER_AGENT_TOKEN, timeout: float = 10.0):
        self.opener, self.user_agent, self.token, self.timeout = opener, user_agent, token, timeout
        self._rules: dict[str, RobotFileParser | ForbiddenAddress] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        rules = self._rules.get(origin)
        if rules is None:
            with self._guard:
                lock = self._locks.setdefault(origin, threading.Lock())
            with lock:
                rules = self._rules.get(origin)
                if rules is None:
                    rules = self._fetch(origin)
                    self._rules[origin] = rules
        if isinstance(rules, ForbiddenAddress):
            raise rules  # the host itself is refused: say so, not "robots.txt disallows"
        return rules.can_fetch(self.token, url)

    def _fetch(self, origin: str) -> RobotFileParser | ForbiddenAddress:
        self.fetches += 1
        rules = RobotFileParser(f"{origin}/robots.txt")
        request = urllib.request.Request(f"{origin}/robots.txt", headers={"User-Agent": self.user_agent})
        try:
            with self.opener.open(request, timeout=self.timeout) as resp:
                rules.parse(resp.read(512 * 1024).decode("utf-8", "replace").splitlines())
        except ForbiddenAddress as e:
            return e
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500:
                rules.allow_all = True
            else:
                rules.disallow_all = True
        except (FetchRefused, urllib.error.URLError, OSError, ValueError):
            rules.disallow_all = True
        return rules
