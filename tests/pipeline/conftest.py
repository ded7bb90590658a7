"""Fixtures of the hostile loopback web (tests/pipeline/hostile.py): an allowed server on
127.0.0.1 and a forbidden one on 127.0.0.2 that must never be reached."""

from __future__ import annotations

import pytest

from tests.pipeline.hostile import PNG, HostileServer, send


@pytest.fixture
def ok():
    server = HostileServer("127.0.0.1")
    server.routes["/img.png"] = lambda h: send(h, 200, PNG)
    yield server
    server.close()


@pytest.fixture
def forbidden():
    server = HostileServer("127.0.0.2")
    server.routes["/secret"] = lambda h: send(h, 200, b"secret", "text/plain")
    yield server
    assert server.connections == 0, "the forbidden server was reached"
    server.close()
