"""Fetch synthetic-crawl URLs as a careful client would, and name what happened.

Used by `openwit demo` to show the faulty web at work, fault by fault. It honours
robots.txt, never follows a redirect to a non-loopback address, bounds redirects and time,
and reads only an image's header to decide whether it is a decompression bomb.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import threading
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from PIL import Image

MAX_REDIRECTS = 5
MAX_PIXELS = 89_478_485  # Pillow's default warning threshold
MIN_SIDE = 16
USER_AGENT = "openwit-probe/1"

# What a careful client observes for each fault of world.FAULTS.
EXPECTED = {
    "none": "ok",
    "not_found": "http_404",
    "server_error": "http_500",
    "unavailable_then_ok": "503_then_ok",
    "slow": "timeout",
    "redirect": "ok",
    "redirect_loop": "redirect_loop",
    "redirect_forbidden": "forbidden_redirect",
    "wrong_content_type": "not_image",
    "truncated": "truncated",
    "xrobots_noai": "x_robots_tag",
    "xrobots_noimageai": "x_robots_tag",
    "robots_disallow": "robots_disallowed",
    "bomb": "bomb",
    "too_small": "too_small",
}


class Prober:
    """``routes`` maps a url's host (``name`` or ``name:port``) to the loopback
    ``address:port`` serving it; the request keeps the url's Host header."""

    def __init__(self, timeout: float = 1.0, routes: dict[str, str] | None = None):
        self.timeout = timeout
        self.routes = dict(routes or {})
        self._robots: dict[str, RobotFileParser] = {}
        self._lock = threading.Lock()

    def _allowed(self, url: str) -> bool:
        netloc = urlsplit(url).netloc
        with self._lock:
            rp = self._robots.get(netloc)
        if rp is None:
            rp = RobotFileParser()
            status, _, body = self._get(f"http://{netloc}/robots.txt")
            rp.parse(body.decode("utf-8", "replace").splitlines() if status == 200 else [])
            with self._lock:
                self._robots[netloc] = rp
        return rp.can_fetch(USER_AGENT, url)

    def _get(self, url: str) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(url)
        address = self.routes.get(parts.netloc)
        host, port = address.rsplit(":", 1) if address else (parts.hostname, parts.port or 80)
        conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Host": parts.netloc})
            resp = conn.getresponse()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            return resp.status, headers, resp.read()
        finally:
            conn.close()

    def probe(self, url: str) -> str:
        """One outcome name for the url (see EXPECTED)."""
        if not url.startswith("http"):
            return "not_http"
        try:
            if not self._allowed(url):
                return "robots_disallowed"
            seen = {url}
            retried = False
            for _ in range(MAX_REDIRECTS + 1):
                status, headers, body = self._get(url)
                if status == 503 and not retried:
                    retried = True
                    status, headers, body = self._get(url)
                    if status == 200:
                        return "503_then_ok" if self._image_outcome(headers, body) == "ok" else "bad_after_503"
                if status in (301, 302, 303, 307, 308):
                    url = urljoin(url, headers.get("location", ""))
                    parts = urlsplit(url)
                    try:
                        if parts.netloc not in self.routes and not ipaddress.ip_address(parts.hostname or "").is_loopback:
                            return "forbidden_redirect"
                    except ValueError:
                        return "forbidden_redirect"
                    if url in seen:
                        return "redirect_loop"
                    seen.add(url)
                    continue
                if status != 200:
                    return f"http_{status}"
                if "x-robots-tag" in headers:
                    return "x_robots_tag"
                return self._image_outcome(headers, body)
            return "too_many_redirects"
        except http.client.IncompleteRead:
            return "truncated"
        except TimeoutError:
            return "timeout"
        except OSError as e:
            return f"connection_error:{e.__class__.__name__}"

    @staticmethod
    def _image_outcome(headers: dict[str, str], body: bytes) -> str:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("image/"):
            return "not_image"
        if ctype.startswith("image/svg"):
            return "svg"
        try:
            with Image.open(io.BytesIO(body)) as im:
                w, h = im.size  # header only: no pixels decoded yet
                if w * h > MAX_PIXELS:
                    return "bomb"
                im.load()
        except Image.DecompressionBombError:
            return "bomb"
        except Exception:
            return "bad_image"
        return "too_small" if min(w, h) < MIN_SIDE else "ok"
