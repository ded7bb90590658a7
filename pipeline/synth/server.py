"""The loopback web of the synthetic crawl: images rendered from their URL, faults on demand.

Every virtual host gets its own listening socket, so a crawl looks like many hosts with
their own robots.txt. A host is either its loopback address ("127.0.0.N:PORT") or a name
("img3.openwit-demo.test") served on a loopback address chosen when the web starts; a
client reaches a name through a connect-to route (``SyntheticWeb.connect_to``, for
``openwit download --connect-to``), so urls do not depend on the ports of the day. An image URL ends in ``<token>.<ext>``; the token
says what to draw and which fault to apply (see ``world.FAULTS``):

- ``not_found`` 404, ``server_error`` 500, ``unavailable_then_ok`` 503 (``Retry-After: 1``)
  on the first request for the URL and the image afterwards;
- ``slow``: the image after ``slow_seconds`` (woken early by ``stop``);
- ``redirect`` 302 to the fault-free URL; ``redirect_loop`` 302 between two URLs forever;
  ``redirect_forbidden`` 302 to ``http://0.0.0.0:<port>/canary/...``: an unspecified
  address that a careless client connects to locally, so the fetch is counted as a
  canary hit instead of leaving the machine;
- ``wrong_content_type`` 200 text/html; ``truncated`` full Content-Length, half the body;
- ``xrobots_noai`` / ``xrobots_noimageai``: the image with that ``X-Robots-Tag``;
- ``robots_disallow``: served under ``/private/``, which every host's robots.txt disallows
  (requests there are counted, so a test can prove a downloader never fetched them);
- ``bomb``: a 76 kB PNG declaring 20000 x 20000 pixels; ``too_small``: an 8 x 8 image.

``GET /_stats`` returns the host's counters as JSON.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import queue
import os
import socket
import threading
import time
import zlib
from collections import Counter
from dataclasses import replace
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from schemas import UserError
from pipeline.synth.world import BOMB_SIDE, FORMATS, BadToken, ImageSpec, encode, parse_token, tiny_image

ROBOTS_TXT = "User-agent: *\nDisallow: /private/\n"
PRIVATE_PREFIX = "/private/"
CANARY_PREFIX = "/canary/"
FORBIDDEN_REDIRECT_HOST = "0.0.0.0"
STATS_PATH = "/_stats"
HTML_ERROR_PAGE = b"<!doctype html><html><head><title>Oops</title></head><body><h1>Page not found</h1><p>Try our <a href='/'>home page</a>.</p></body></html>"


@lru_cache(maxsize=1)
def bomb_png() -> bytes:
    """A valid 1-bit PNG of BOMB_SIDE x BOMB_SIDE white pixels: ~76 kB that decodes to 400M pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = BOMB_SIDE.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    row = b"\x00" + b"\xff" * ((BOMB_SIDE + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(BOMB_SIDE)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@lru_cache(maxsize=20000)
def image_bytes(token: str) -> bytes:
    return encode(parse_token(token))


class _Host(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], web: "SyntheticWeb"):
        self.web = web
        self.counters: Counter = Counter()
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    def count(self, key: str) -> None:
        with self.lock:
            self.counters[key] += 1


class _Handler(BaseHTTPRequestHandler):
    server: _Host
    server_version = "openwit-synth/1"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # quiet: counters instead
        pass

    # -- responses -------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.count(f"status_{status}")

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.count("status_302")

    def _image(self, spec: ImageSpec, headers: dict[str, str] | None = None) -> None:
        clean = replace(spec, fault=0)
        self._send(200, image_bytes(clean.token()), spec.content_type, headers)

    # -- routing ---------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            self.server.count("client_gone")

    def _route(self) -> None:
        srv = self.server
        srv.count("requests")
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/robots.txt":
            srv.count("robots_txt")
            return self._send(200, ROBOTS_TXT.encode(), "text/plain; charset=utf-8")
        if path == STATS_PATH:
            with srv.lock:
                stats = dict(srv.counters)
            return self._send(200, json.dumps(stats, sort_keys=True).encode(), "application/json")
        if path.startswith(CANARY_PREFIX):
            srv.count("canary_hits")
            return self._send(200, b"canary", "text/plain")
        if path.startswith(PRIVATE_PREFIX):
            srv.count("private_hits")
        name = path.rsplit("/", 1)[-1]
        token, _, ext = name.partition(".")
        try:
            spec = parse_token(token)
        except BadToken:
            srv.count("bad_token")
            return self._send(404, HTML_ERROR_PAGE, "text/html; charset=utf-8")
        fault = spec.fault_name
        srv.count(f"fault_{fault}")
        host = self.headers.get("Host") or "%s:%d" % srv.server_address[:2]
        if fault == "not_found":
            return self._send(404, HTML_ERROR_PAGE, "text/html; charset=utf-8")
        if fault == "server_error":
            return self._send(500, b"Internal Server Error", "text/plain")
        if fault == "unavailable_then_ok":
            with srv.lock:
                first = self.path not in srv.seen
                srv.seen.add(self.path)
            if first:
                return self._send(503, b"Service Unavailable", "text/plain", {"Retry-After": "1"})
            return self._image(spec)
        if fault == "slow":
            if srv.web.stopping.wait(srv.web.slow_seconds):
                return
            return self._image(spec)
        if fault == "redirect":
            target = replace(spec, fault=0).token()
            return self._redirect(f"http://{host}{path.rsplit('/', 1)[0]}/{target}.{ext or FORMATS[spec.fmt]}")
        if fault == "redirect_loop":
            hop = 1 if parts.query != "hop=1" else 2
            return self._redirect(f"http://{host}{path}?hop={hop}")
        if fault == "redirect_forbidden":
            port = srv.server_address[1]
            return self._redirect(f"http://{FORBIDDEN_REDIRECT_HOST}:{port}{CANARY_PREFIX}{name}")
        if fault == "wrong_content_type":
            return self._send(200, HTML_ERROR_PAGE, "text/html; charset=utf-8")
        if fault == "truncated":
            body = image_bytes(replace(spec, fault=0).token())
            self.send_response(200)
            self.send_header("Content-Type", spec.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            srv.count("status_200_truncated")
            return
        if fault == "xrobots_noai":
            return self._image(spec, {"X-Robots-Tag": "noai"})
        if fault == "xrobots_noimageai":
            return self._image(spec, {"X-Robots-Tag": "noimageai"})
        if fault == "bomb":
            return self._send(200, bomb_png(), "image/png")
        if fault == "too_small":
            return self._send(200, tiny_image(spec), "image/jpeg")
        return self._image(spec)  # none, robots_disallow


class SyntheticWeb:
    """Serve the synthetic images on loopback, one listening socket per virtual host.

    Use as a context manager (tests) or call ``start`` / ``stop``; ``urls`` are the base
    URLs, ``stats()`` adds up every host's counters. With ``processes > 1`` the hosts are
    spread over that many server processes (one Python process serves a few hundred
    images a second; a download benchmark wants more); each host lives in exactly one
    process, so its per-URL state (503-then-ok) stays consistent.
    """

    def __init__(self, hosts: list[str] | tuple[str, ...] | dict[str, str], slow_seconds: float = 5.0,
                 processes: int = 1):
        if not hosts:
            raise ValueError("no hosts to serve")
        # the hosts of the urls -> the loopback addresses they are served on
        self.routes = dict(hosts) if isinstance(hosts, dict) else {h: h for h in hosts}
        for h in self.routes.values():
            ip = h.rsplit(":", 1)[0]
            if not ip.startswith("127."):
                raise ValueError(f"{h}: the synthetic web only listens on loopback (127.0.0.0/8)")
        self.hosts = tuple(self.routes.values())  # the listening addresses
        self.slow_seconds = slow_seconds
        self.processes = max(1, min(processes, len(self.hosts)))
        self.stopping = threading.Event()
        self._servers: list[_Host] = []
        self._threads: list[threading.Thread] = []
        self._children: list = []
        self._child_stop = None

    @property
    def urls(self) -> list[str]:
        return [f"http://{h}" for h in self.routes]

    @property
    def connect_to(self) -> list[str]:
        """``HOST:PORT:ADDRESS:PORT`` for every named host (``download --connect-to``)."""
        return [f"{name if ':' in name else name + ':80'}:{address}"
                for name, address in self.routes.items() if name != address]

    def start(self) -> "SyntheticWeb":
        if self.processes > 1:
            return self._start_processes()
        bomb_png()  # build once, before the first request can time out waiting for it
        try:
            for h in self.hosts:
                ip, port = h.rsplit(":", 1)
                self._servers.append(_Host((ip, int(port)), self))
        except OSError as e:
            self.stop()
            raise UserError(f"cannot listen on {h}: {e.strerror or e}") from None
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _start_processes(self) -> "SyntheticWeb":
        # fork: the children only serve, and callers need no __main__ guard (spawn would re-run it)
        ctx = multiprocessing.get_context("fork")
        self._child_stop = ctx.Event()
        results = ctx.Queue()
        for i in range(self.processes):
            hosts = self.hosts[i::self.processes]
            child = ctx.Process(target=_serve_in_process, args=(hosts, self.slow_seconds, self._child_stop, results),
                                daemon=True)
            child.start()
            self._children.append(child)
        errors = []
        for child in self._children:
            try:
                errors.append(results.get(timeout=30))
            except queue.Empty:
                errors.append(f"a server process did not start (exit code {child.exitcode})")
        if any(errors):
            self.stop()
            raise UserError(next(e for e in errors if e))
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._child_stop is not None:
            self._child_stop.set()
            for child in self._children:
                child.join(timeout=10)
                if child.is_alive():
                    child.terminate()
            self._children.clear()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> "SyntheticWeb":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> Counter:
        total: Counter = Counter()
        if self._children:
            for host in self.hosts:  # each host reports its own counters
                ip, port = host.rsplit(":", 1)
                conn = http.client.HTTPConnection(ip, int(port), timeout=10)
                try:
                    conn.request("GET", STATS_PATH)
                    total.update(json.loads(conn.getresponse().read()))
                finally:
                    conn.close()
            total["status_200"] -= len(self.hosts)  # the stats requests themselves
            total["requests"] -= len(self.hosts)
            return +total
        for srv in self._servers:
            with srv.lock:
                total.update(srv.counters)
        return total


def _serve_in_process(hosts: tuple[str, ...], slow_seconds: float, stop, results) -> None:
    """A server process: serve ``hosts`` until ``stop`` is set; report start-up to ``results``."""
    web = SyntheticWeb(hosts, slow_seconds)
    try:
        web.start()
    except UserError as e:
        results.put(str(e))
        return
    results.put("")
    stop.wait()
    web.stop()


def listen_on(hosts: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The loopback address of each host: an address is served on itself, each name on a
    free port (``free_hosts``)."""
    names = [h for h in hosts if not h.startswith("127.")]
    free = iter(free_hosts(len(names)) if names else ())
    return {h: (h if h.startswith("127.") else next(free)) for h in hosts}


def free_hosts(count: int, ips: int = 4) -> tuple[str, ...]:
    """``count`` virtual hosts laid out as ``crawl.default_hosts`` on ports free right now.

    The ports lie below the kernel's ephemeral range: a port from that range can be taken
    by any outgoing connection (another process's HTTP client) between now and the moment
    the server listens, a port below it only by another listener."""
    import random

    ips = max(1, min(ips, count))
    per_ip = -(-count // ips)
    addresses = [f"127.0.0.{1 + i}" for i in range(ips)]
    low, high = 20_000, _ephemeral_low() - per_ip
    draw = random.Random(f"{os.getpid()}-{time.time_ns()}")
    for _ in range(200):
        base = draw.randrange(low, high) if high > low else _any_port(addresses[0])
        if base + per_ip >= 65535:
            continue
        if all(_port_free(ip, p) for ip in addresses for p in range(base, base + per_ip)):
            return tuple(f"{addresses[i % ips]}:{base + i // ips}" for i in range(count))
        time.sleep(0.01)
    raise OSError(f"no block of {per_ip} free ports on {ips} loopback addresses")


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _any_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _port_free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True
