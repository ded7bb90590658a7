"""A small hostile web on loopback for the fetch guards' tests: servers whose routes a test
writes (lying headers, trickled bytes, odd robots.txt), a forbidden server that counts every
connection it accepts, and a forwarding HTTP proxy that logs what it was asked for."""

from __future__ import annotations

import io
import select
import socket
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

from PIL import Image

from pipeline.netguard import AddressPolicy

Route = Callable[[BaseHTTPRequestHandler], None]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()


class _Handler(BaseHTTPRequestHandler):
    server: "HostileServer"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.server.hit(path)
        route = self.server.routes.get(path)
        try:
            if route is None:
                send(self, 404, b"not here", "text/plain")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass


class HostileServer(ThreadingHTTPServer):
    """One listening socket; ``routes`` maps a path to what the handler does."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.routes: dict[str, Route] = {}
        self.hits: Counter = Counter()
        self.connections = 0
        self.lock = threading.Lock()
        self.bytes_sent: Counter = Counter()
        super().__init__((address, 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def get_request(self):
        conn = super().get_request()
        with self.lock:
            self.connections += 1
        return conn

    def hit(self, path: str) -> None:
        with self.lock:
            self.hits[path] += 1

    @property
    def address(self) -> str:
        return f"{self.server_address[0]}:{self.server_address[1]}"

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.server_address[0]}:{self.server_address[1]}{path}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "image/png",
         headers: dict[str, str] | None = None, length: str | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", length if length is not None else str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def stream(h: BaseHTTPRequestHandler, total: int, length: str | None, chunk: int = 64 << 10) -> None:
    """``total`` bytes in chunks, the header claiming ``length`` (None: no Content-Length);
    the server's ``bytes_sent[path]`` says how far it got before the client went away."""
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    if length is not None:
        h.send_header("Content-Length", length)
    h.end_headers()
    path = urlsplit(h.path).path
    block = b"\0" * chunk
    sent = 0
    try:
        while sent < total:
            h.wfile.write(block)
            sent += chunk
            with h.server.lock:
                h.server.bytes_sent[path] = sent
    except OSError:
        pass


def trickle(h: BaseHTTPRequestHandler, raw: bytes, every: float) -> None:
    """Send ``raw`` (status line and all) one byte every ``every`` seconds."""
    try:
        for i in range(len(raw)):
            h.wfile.write(raw[i:i + 1])
            h.wfile.flush()
            time.sleep(every)
    except OSError:
        pass


class ForwardProxy(ThreadingHTTPServer):
    """A forwarding proxy: absolute-URI requests are relayed, CONNECT is tunnelled. ``asked``
    lists every target it was asked for ("GET http://h:p/x", "CONNECT h:p")."""

    daemon_threads = True

    def __init__(self) -> None:
        self.asked: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    server: ForwardProxy
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.asked.append(f"GET {self.path}")
        parts = urlsplit(self.path)
        try:
            upstream = socket.create_connection((parts.hostname, parts.port or 80), timeout=5)
        except OSError:
            send(self, 502, b"bad gateway", "text/plain")
            return
        with upstream:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            head = [f"GET {path} HTTP/1.0"] + [f"{k}: {v}" for k, v in self.headers.items()
                                               if k.lower() not in ("proxy-connection", "proxy-authorization")]
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            while data := upstream.recv(65536):
                self.wfile.write(data)

    def do_CONNECT(self) -> None:
        self.server.asked.append(f"CONNECT {self.path}")
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        except OSError:
            send(self, 502, b"bad gateway", "text/plain")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        with upstream:
            sockets = [self.connection, upstream]
            while True:
                ready, _, _ = select.select(sockets, [], [], 5)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (upstream if s is self.connection else self.connection).sendall(data)


def only(server: HostileServer, port: bool = True) -> AddressPolicy:
    """A policy allowing this server's address (and, with ``port``, only its port)."""
    return AddressPolicy.from_strings([server.address if port else server.server_address[0]])
