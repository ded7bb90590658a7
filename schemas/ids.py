"""Stable identifiers shared by every stage and every runner."""

from __future__ import annotations

import hashlib


def uid(url: str, text: str) -> str:
    """The stable id of an (url, text) pair: 32 hex chars of BLAKE2b-128.

    The url is length-prefixed so that no (url, text) split of the same bytes collides.
    Identical on every runner, worker count and rerun (no salt, no process state).
    """
    u = url.encode("utf-8", "surrogatepass")
    t = text.encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(digest_size=16)
    h.update(len(u).to_bytes(8, "big"))
    h.update(u)
    h.update(t)
    return h.hexdigest()
