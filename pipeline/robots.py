"""Opt-outs: robots.txt (RFC 9309) and the robots directives of a response or a page.

- ``opted_out``: the one parser of robots directives, for the ``X-Robots-Tag`` header
  (download) and ``<meta name="robots">`` / ``<meta name="openwit">`` (extract) alike:
  comma lists, ``agent:`` scopes (``noimageai, googlebot: noindex`` says noimageai to every
  agent and noindex to googlebot only), ``none``.
- ``RobotsCache``: robots.txt per origin, matched by protego (longest match wins, Allow
  wins a tie, ``*`` and ``$`` wildcards), a byte-order mark dropped, the first 500 KiB
  parsed. Per RFC 9309: a 4xx answer (429 aside) or more redirects than the cap means no
  robots.txt (everything allowed); a 5xx or 429 answer, a network error, a truncated body
  or any other failure means the host is unreachable (everything disallowed); a deadline
  passed gives reason ``timeout``. Every outcome is cached, per process and, with a
  ``store`` folder, across the processes of a run: one fetch per origin per run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import urllib.error
import urllib.request
from typing import Iterable
from urllib.parse import urlsplit

from protego import Protego

from pipeline.netguard import USER_AGENT_TOKEN, FetchTimeout, ForbiddenAddress, RobotsDisallowed
from schemas import fileio

OPT_OUT = frozenset({"noai", "noimageai", "noindex", "noimageindex", "none"})
ALL_AGENTS = frozenset({"robots", "*"})
# Directives whose value follows a colon: not agent scopes.
VALUED = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
_SCOPED = re.compile(r"\s*([A-Za-z0-9_.*-]+)\s*:\s*(.*)", re.DOTALL)
ROBOTS_LIMIT = 500 * 1024  # RFC 9309 2.5: parse at least the first 500 KiB


def directives(value: str, scope: str | None = None) -> list[tuple[str | None, str]]:
    """(agent or None for every agent, directive) pairs of one header or meta value. An
    ``agent:`` prefix scopes its item and the items after it, until the next prefix."""
    out = []
    for item in str(value).replace(";", ",").split(","):
        m = _SCOPED.fullmatch(item)
        if m and m.group(1).lower() not in VALUED:
            scope = m.group(1).lower()
            item = m.group(2)
        directive = item.strip().lower().split(":")[0].strip()
        if directive:
            out.append((None if scope in ALL_AGENTS else scope, directive))
    return out


def opted_out(headers: Iterable[str] = (), metas: Iterable[tuple[str, str]] = (),
              token: str = USER_AGENT_TOKEN) -> bool:
    """True if any X-Robots-Tag value in ``headers`` or any (meta name, content) in
    ``metas`` says noai, noimageai, noindex, noimageindex or none to every agent or to
    ``token``. Meta names other than robots and the token are other agents' business."""
    token = token.lower()
    pairs = [p for v in headers for p in directives(v)]
    for name, content in metas:
        name = (name or "").strip().lower()
        if name in ALL_AGENTS or name == token:
            pairs += directives(content, name)
    return any(d in OPT_OUT and (agent is None or agent == token) for agent, d in pairs)


# -- robots.txt --------------------------------------------------------------------------------

def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}"


class RobotsStore:
    """A folder the processes of one run share: one JSON file per origin, written once
    under an exclusive lock, so only one process fetches an origin's robots.txt."""

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def _path(self, origin: str) -> str:
        return os.path.join(self.folder, hashlib.sha256(origin.encode()).hexdigest()[:32] + ".json")

    def _load(self, path: str) -> dict | None:
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def get(self, origin: str, fetch) -> dict:
        path = self._path(origin)
        entry = self._load(path)
        if entry is not None:
            return entry
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            entry = self._load(path)
            if entry is None:
                entry = fetch()
                fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(entry, f)
                fileio.share(tmp)
                os.replace(tmp, path)
        return entry


def decode(body: bytes) -> str:
    """A fetched robots.txt as the parser gets it: the first ``ROBOTS_LIMIT`` bytes, UTF-8
    (RFC 9309 2.3) with a byte-order mark dropped and undecodable bytes replaced."""
    return body[:ROBOTS_LIMIT].decode("utf-8-sig", "replace")


def rules(text: str) -> Protego:
    """The parsed rules of a decoded robots.txt."""
    return Protego.parse(text)


class RobotsCache:
    """robots.txt per origin (scheme://host:port), fetched once through the guarded opener."""

    def __init__(self, opener: urllib.request.OpenerDirector, user_agent: str, token: str = USER_AGENT_TOKEN,
                 timeout: float = 10.0, store: str | None = None):
        self.opener, self.user_agent, self.token, self.timeout = opener, user_agent, token.lower(), timeout
        self.store = RobotsStore(store) if store else None
        self._rules: dict[str, tuple[dict, Protego | None]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0

    def _entry(self, origin: str) -> tuple[dict, Protego | None]:
        cached = self._rules.get(origin)
        if cached is None:
            with self._guard:
                lock = self._locks.setdefault(origin, threading.Lock())
            with lock:
                cached = self._rules.get(origin)
                if cached is None:
                    entry = self.store.get(origin, lambda: self._fetch(origin)) if self.store else self._fetch(origin)
                    parsed = rules(entry["body"]) if entry["outcome"] == "ok" else None
                    cached = self._rules[origin] = (entry, parsed)
        return cached

    def check(self, url: str) -> None:
        """Return if robots.txt lets our token fetch ``url``; raise the refusal otherwise."""
        origin = _origin(url)
        entry, parsed = self._entry(origin)
        outcome, detail = entry["outcome"], entry.get("why", "")
        if outcome == "forbidden":
            raise ForbiddenAddress(detail)  # the host itself is refused: say so
        if outcome == "timeout":
            raise FetchTimeout(f"robots.txt of {origin}: {detail}")
        if outcome == "unreachable":
            raise RobotsDisallowed(f"robots.txt of {origin} unreachable ({detail}): everything disallowed")
        if parsed is not None and not parsed.can_fetch(url, self.token):
            raise RobotsDisallowed(f"robots.txt of {urlsplit(url).netloc} disallows {urlsplit(url).path}")

    def allowed(self, url: str) -> bool:
        try:
            self.check(url)
        except RobotsDisallowed:
            return False
        return True

    def _fetch(self, origin: str) -> dict:
        self.fetches += 1
        request = urllib.request.Request(f"{origin}/robots.txt", headers={"User-Agent": self.user_agent})
        host = urlsplit(origin).hostname or ""
        try:
            with self.opener.open(request, timeout=self.timeout) as resp:
                body = b""
                while len(body) < ROBOTS_LIMIT and (data := resp.read(min(64 << 10, ROBOTS_LIMIT - len(body)))):
                    body += data
            return {"outcome": "ok", "code": 200, "body": decode(body)}
        except ForbiddenAddress as e:
            if e.host == host:
                return {"outcome": "forbidden", "why": str(e).split(": ", 1)[-1]}
            return {"outcome": "unreachable", "why": f"redirected to a refused address: {e}"}
        except FetchTimeout as e:
            return {"outcome": "timeout", "why": str(e).split(": ", 1)[-1]}
        except urllib.error.HTTPError as e:
            if "too_many_redirects" in str(e.reason):
                return {"outcome": "unavailable", "code": e.code, "why": "too many redirects"}
            if 400 <= e.code < 500 and e.code != 429:
                return {"outcome": "unavailable", "code": e.code, "why": f"HTTP {e.code}"}
            return {"outcome": "unreachable", "code": e.code, "why": f"HTTP {e.code}"}
        except Exception as e:  # refused hop, network error, truncated body, bad headers: cached too
            return {"outcome": "unreachable", "why": f"{type(e).__name__}: {e}"[:200]}


class RobotsProcessor(urllib.request.BaseHandler):
    """Refuse a request (and every redirect hop) that robots.txt disallows."""

    handler_order = 400

    def __init__(self, robots: RobotsCache):
        self.robots = robots

    def http_request(self, request):
        if urlsplit(request.full_url).path != "/robots.txt":
            self.robots.check(request.full_url)
        return request

    https_request = http_request
