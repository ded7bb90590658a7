"""Checkpoint naming and lookup, in one place: a run folder keeps its checkpoints under
``checkpoints/step<NNNNNNNN>/``, and a checkpoint is complete once its sidecar
(``openwit.json``: step, data position, model config) is written, after every rank saved.
train writes them; train's resume, export and eval find them here."""

from __future__ import annotations

import json
from pathlib import Path

SIDECAR = "openwit.json"
CHECKPOINTS = "checkpoints"


def tag(step: int) -> str:
    return f"step{step:08d}"


def folder(run: str | Path) -> Path:
    return Path(run) / CHECKPOINTS


def done(ckpt_dir: Path) -> list[tuple[int, str]]:
    """(step, tag) of complete checkpoints (their sidecar exists), oldest first."""
    out = []
    if ckpt_dir.is_dir():
        for d in ckpt_dir.iterdir():
            if d.is_dir() and (d / SIDECAR).is_file():
                out.append((json.loads((d / SIDECAR).read_text())["step"], d.name))
    return sorted(out)


def find(ckpt_dir: Path, wanted: str) -> tuple[str | None, Path | None]:
    """(tag, sidecar) of ``wanted`` ('latest' or a tag): (None, None) when 'latest' finds
    no complete checkpoint; the sidecar path may not exist for a named tag (the caller
    says so in its own words)."""
    if wanted == "latest":
        complete = done(ckpt_dir)
        if not complete:
            return None, None
        wanted = complete[-1][1]
    return wanted, ckpt_dir / wanted / SIDECAR
