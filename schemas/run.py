"""The run contract: stage names, where each stage's output lies in a run, its ledger's
file name, and the one ledger shape every stage writes and validate and report read.

A ledger (each stage's ``<stage>_stats.json``) holds, beside the stage's own figures::

    "stage": "curate", "in": N, "kept": K, "rejected": {reason: n, ...},
    "steps": [{"step": ..., "in": ..., "kept": ..., "rejected": {...}}, ...],
    "ledger_ok": in == kept + sum(rejected) and every step adds up

A stage of one step lists that step. ``rejected`` is the sum over the steps. Readers use
``read_ledger``; nothing special-cases a stage.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from schemas.columns import STAGE as STAGE_KEY  # a ledger names its stage as a REJECT row does
from schemas.errors import UserError

EXTRACT, CURATE, DOWNLOAD, DEDUPE, SCORE, SHARD = "extract", "curate", "download", "dedupe", "score", "shard"
TRAIN, EVAL, REPORT = "train", "eval", "report"


@dataclass(frozen=True)
class Stage:
    name: str
    folder: str  # the stage's output folder under a run's root
    ledger: str  # the ledger's file name in that folder
    optional: bool = False  # a run may leave it out (then the stage after reads the one before)


# The data stages, in pipeline order.
STAGES = (
    Stage(EXTRACT, "extract", "extract_stats.json"),
    Stage(CURATE, "curate", "curate_stats.json"),
    Stage(DOWNLOAD, "download", "download_stats.json"),
    Stage(DEDUPE, "dedupe", "dedupe_stats.json"),
    Stage(SCORE, "score", "score_stats.json", optional=True),
    Stage(SHARD, "shards", "shard_stats.json"),
)
BY_NAME = {s.name: s for s in STAGES}
# Under a Beam stage's output folder: the files its steps hand each other instead of rows
# through the runner; removed when the stage finishes.
SCRATCH_FOLDER = "_scratch"
DOWNLOAD_LOG = "img2dataset.log"  # in the download output: img2dataset's own output, kept apart from ours
TRAIN_FOLDER = "train"
EVAL_FILE = "eval/results.json"
REPORT_FILE = "report.html"


def stage(name: str) -> Stage:
    return BY_NAME[name]


def join(root: str, *parts: str) -> str:
    """A path under a run's root, local or URL (``s3://b/run`` + ``curate``)."""
    return posixpath.join(root, *parts) if "://" in root else os.path.join(root, *parts)


def layout(root: str) -> dict[str, str]:
    """Where each stage's output lies in a run laid out as the demo and the DAG do."""
    paths = {s.name: join(root, s.folder) for s in STAGES}
    paths[TRAIN] = join(root, TRAIN_FOLDER)
    paths[EVAL] = join(root, *EVAL_FILE.split("/"))
    paths[REPORT] = join(root, REPORT_FILE)
    return paths


def steps_from_counters(counters: Mapping[str, int], order: Sequence[str], entering: int) -> list[dict]:
    """Per step, from counters named ``<step>:kept`` and ``<step>:<reason>``: what entered
    (what the step before kept), what it kept, and what it rejected by reason."""
    steps = []
    for name in order:
        rejected = {k.split(":", 1)[1]: v for k, v in sorted(counters.items())
                    if k.startswith(f"{name}:") and not k.endswith(":kept") and v}
        kept = counters.get(f"{name}:kept", 0)
        steps.append(step(name, entering, kept, rejected))
        entering = kept
    return steps


def step(name: str, entering: int, kept: int, rejected: Mapping[str, int]) -> dict:
    return {"step": name, "in": int(entering), "kept": int(kept),
            "rejected": {k: int(v) for k, v in sorted(rejected.items()) if v}}


def ledger(name: str, steps: Sequence[dict]) -> dict:
    """The contract's part of a stage's stats: in, kept, rejected (summed), steps, ledger_ok."""
    if not steps:
        raise ValueError("a ledger has at least one step")
    rejected: dict[str, int] = {}
    for s in steps:
        for reason, n in s["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + n
    n_in, kept = steps[0]["in"], steps[-1]["kept"]
    chained = all(a["kept"] == b["in"] for a, b in zip(steps, steps[1:]))
    ok = chained and all(s["in"] == s["kept"] + sum(s["rejected"].values()) for s in steps)
    return {STAGE_KEY: name, "in": n_in, "kept": kept, "rejected": dict(sorted(rejected.items())),
            "steps": list(steps), "ledger_ok": ok and n_in == kept + sum(rejected.values())}


@dataclass(frozen=True)
class Ledger:
    stage: str
    n_in: int
    kept: int
    rejected: dict
    steps: list
    ok: bool


def read_ledger(stats: Mapping) -> Ledger:
    """A stage's stats as the contract's ledger; a file without the contract's keys is refused."""
    missing = [k for k in (STAGE_KEY, "in", "kept", "rejected", "steps") if k not in stats]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    rejected = {str(k): int(v) for k, v in dict(stats["rejected"]).items()}
    n_in, kept = int(stats["in"]), int(stats["kept"])
    recomputed = ledger(str(stats[STAGE_KEY]), list(stats["steps"])) if stats["steps"] else None
    ok = n_in == kept + sum(rejected.values()) and (recomputed is None or recomputed["ledger_ok"])
    return Ledger(str(stats[STAGE_KEY]), n_in, kept, rejected, list(stats["steps"]), ok)


def read_ledgers(paths: Mapping[str, str], read_json: Callable[[str], object],
                 exists: Callable[[str], bool]) -> dict[str, dict]:
    """Each finished stage's ledger by stage name (stages not run are absent), from the
    stage folders in ``paths`` (``layout``'s keys); a file that is not a ledger is a
    one-line UserError."""
    import json

    out = {}
    for s in STAGES:
        path = join(paths[s.name], s.ledger) if paths.get(s.name) else ""
        if not path or not exists(path):
            continue
        try:
            stats = read_json(path)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(stats, dict):
            raise UserError(f"{path}: not a stage ledger (expected a JSON object)")
        try:
            read_ledger(stats)
        except (ValueError, TypeError, AttributeError) as e:
            raise UserError(f"{path}: not an openwit ledger ({e})") from None
        out[s.name] = stats
    return out
