"""Progress of a Beam job run on this machine: units done, records, rate and ETA on stderr.

Beam's local runner prints nothing until a job ends. While one runs, the launcher sets
``OPENWIT_PROGRESS_DIR`` to a fresh folder; the worker processes it starts inherit it, and
each finished unit of work (an input file, a shard) appends one line to its process's
file there (``tick``). A thread of the launcher sums those lines every
``OPENWIT_PROGRESS_SECONDS`` seconds (default 10) and prints one line when anything moved:

    [extract] files 12/40 (30%)  1,234,567 records  45,120 records/s  ETA 1m20s

On a remote runner the workers do not share the launcher's disk or environment: the
runner's own interface (Dataflow's console, Flink's and Spark's UIs) shows progress.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time

ENV = "OPENWIT_PROGRESS_DIR"
EVERY_ENV = "OPENWIT_PROGRESS_SECONDS"
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def tick(kind: str, records: int = 0) -> None:
    """Count one finished unit of ``kind`` (and the records it held) for the launcher."""
    folder = os.environ.get(ENV)
    if not folder or not os.path.isdir(folder):
        return
    try:
        with open(os.path.join(folder, f"{os.getpid()}.txt"), "a", encoding="ascii") as fh:
            fh.write(f"{kind} {int(records)}\n")
    except OSError:
        pass  # progress is a courtesy: never fail a job over it


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def line(stage: str, totals: dict[str, int], done: dict[str, int], records: int, unit: str, elapsed: float) -> str:
    """The progress line: each kind done of its total, records, rate, ETA (from the mean
    fraction done over the kinds, so a job with later steps does not claim to be finished
    when its first step is)."""
    parts = [f"{kind} {done.get(kind, 0):,}/{total:,}" for kind, total in totals.items()]
    fractions = [min(done.get(k, 0) / t, 1.0) for k, t in totals.items() if t > 0]
    fraction = sum(fractions) / len(fractions) if fractions else 0.0
    text = f"[{stage}] {', '.join(parts)} ({fraction:.0%})  {records:,} {unit}  {records / max(elapsed, 1e-9):,.0f} {unit}/s"
    if 0 < fraction < 1:
        text += f"  ETA {_duration(elapsed * (1 - fraction) / fraction)}"
    return text


class Reporter:
    """While the ``with`` block runs a job on a local runner: progress lines on stderr."""

    def __init__(self, stage: str, totals: dict[str, int], runner: str | None, unit: str = "records"):
        self.stage, self.totals, self.unit = stage, dict(totals), unit
        self.active = (runner or "FnApiRunner").rsplit(".", 1)[-1] in LOCAL_RUNNERS and ENV not in os.environ
        try:
            self.every = float(os.environ.get(EVERY_ENV, "10"))
        except ValueError:
            self.every = 10.0
        self._stop = threading.Event()
        self._folder: str | None = None
        self._thread: threading.Thread | None = None
        self._shown: tuple | None = None
        self._start = 0.0

    def __enter__(self) -> Reporter:
        if not self.active or self.every <= 0:
            return self
        self._folder = tempfile.mkdtemp(prefix="openwit-progress-")
        os.environ[ENV] = self._folder
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="openwit-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._folder is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if exc[0] is None and self._shown is not None:
            self._show()  # the last state, if it moved since the last line
        os.environ.pop(ENV, None)
        shutil.rmtree(self._folder, ignore_errors=True)
        self._folder = None

    def read(self) -> tuple[dict[str, int], int]:
        done: dict[str, int] = {}
        records = 0
        for name in os.listdir(self._folder or "."):
            try:
                with open(os.path.join(self._folder, name), encoding="ascii") as fh:
                    for entry in fh:
                        kind, _, n = entry.strip().partition(" ")
                        if n.isdigit():
                            done[kind] = done.get(kind, 0) + 1
                            records += int(n)
            except OSError:
                continue
        return done, records

    def _show(self) -> None:
        done, records = self.read()
        state = (tuple(sorted(done.items())), records)
        if done and state != self._shown:
            self._shown = state
            print(line(self.stage, self.totals, done, records, self.unit, time.monotonic() - self._start),
                  file=sys.stderr, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._show()
