"""Loopback helpers for the tests that start server processes (S3, Beam's job service,
Spark): a free port, and waiting until a started process listens on it."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    """A free loopback port below the ephemeral range (no outgoing connection takes it
    before the server that is given it listens)."""
    from pipeline.synth.server import free_hosts

    return int(free_hosts(1, ips=1)[0].rsplit(":", 1)[1])


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    """Return once ``proc`` accepts connections on ``port``; kill it and fail if it exits
    or does not listen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.2)
