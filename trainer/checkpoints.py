"""Checkpoint naming and lookup, in one place: a run folder keeps its checkpoints under
``checkpoints/step<NNNNNNNN>/``, and a checkpoint is complete once its sidecar
(``openwit.json``: step, data position, model config) is written, after every rank saved.
train writes them; train's resume, export and eval find them here. The run folder may be
local or on object storage (the file layer's URLs); DeepSpeed itself reads and writes a
local copy (``local_copy``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import Iterator

from schemas import fileio

SIDECAR = "openwit.json"
CHECKPOINTS = "checkpoints"


def tag(step: int) -> str:
    return f"step{step:08d}"


def folder(run: str) -> str:
    return fileio.join(str(run), CHECKPOINTS)


def done(ckpt_dir: str) -> list[tuple[int, str]]:
    """(step, tag) of complete checkpoints (their sidecar exists), oldest first."""
    out = []
    for name in fileio.walk(ckpt_dir):
        parts = name.split("/")
        if len(parts) == 2 and parts[1] == SIDECAR:
            out.append((fileio.read_json(fileio.join(ckpt_dir, name))["step"], parts[0]))
    return sorted(out)


def find(ckpt_dir: str, wanted: str) -> tuple[str | None, str | None]:
    """(tag, sidecar) of ``wanted`` ('latest' or a tag): (None, None) when 'latest' finds
    no complete checkpoint; the sidecar may not exist for a named tag (the caller says so
    in its own words)."""
    if wanted == "latest":
        complete = done(ckpt_dir)
        if not complete:
            return None, None
        wanted = complete[-1][1]
    return wanted, fileio.join(ckpt_dir, wanted, SIDECAR)


def work_folder(run: str) -> str:
    """The local folder where a run's files are made: the run folder itself on a local
    disk; for a run on object storage, a folder of this machine's temp space that is the
    same for every rerun of that run (set OPENWIT_WORK to choose where)."""
    if fileio.is_local(run):
        return run
    base = os.environ.get("OPENWIT_WORK") or tempfile.gettempdir()
    return os.path.join(base, f"openwit-run-{hashlib.blake2b(run.encode(), digest_size=6).hexdigest()}")


@contextlib.contextmanager
def local_copy(ckpt_dir: str, tag_: str) -> Iterator[str]:
    """A local checkpoints folder holding ``tag_`` (``ckpt_dir`` itself when local)."""
    if fileio.is_local(ckpt_dir):
        yield ckpt_dir
        return
    with tempfile.TemporaryDirectory(prefix="openwit-ckpt-") as tmp:
        fileio.get_tree(fileio.join(ckpt_dir, tag_), os.path.join(tmp, tag_))
        yield tmp
