"""Helpers shared by the benchmarks: a realistic 500,000-entry query list, timing, RSS."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from pipeline import querylist
from pipeline.matching import load_entries


def big_query_list(path: Path, captions: list[str], size: int = 500_000) -> Path:
    """English words by frequency (wordfreq's large list), bigrams seen in the captions,
    then bigrams of frequent words, up to ``size`` entries: realistic in size and in how
    often short entries (stop words, colours, shapes) match."""
    import wordfreq

    words = wordfreq.top_n_list("en", 400_000, wordlist="large")
    seen = Counter()
    for text in captions:
        toks = text.split()
        seen.update(f"{a} {b}" for a, b in zip(toks, toks[1:]) if a.isalpha() and b.isalpha())
    bigrams = [b for b, _ in seen.most_common(50_000)]
    top = words[:2000]
    filler = (f"{a} {b}" for a in top for b in top if a != b)
    entries = load_entries([*words, *bigrams])
    for b in filler:
        if len(entries) >= size:
            break
        entries.append(b)
    entries = load_entries(entries)[:size]
    return querylist.write(entries, path)


def peak_rss_mb() -> tuple[float, float]:
    """(this process, its largest finished child) peak resident set size in MiB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return me, kids


def debug_train_run(data: Path, work: Path, steps: int, launcher: str | None = None,
                    sets: tuple[str, ...] = ()) -> dict:
    """`openwit train --recipe debug` for ``steps`` steps on ``data``, as shipped or started
    from ``launcher`` (Python source that patches the trainer, then calls its rank_main), with
    ``sets`` as further ``--set KEY=VALUE``: wall time, samples/s and data-wait fraction
    (train_stats.json), the final weights' bytes."""
    out = work / "run"
    args = ["--recipe", "debug", "--data", str(data), "--output", str(out), "--set", f"steps={steps}",
            "--set", "log_every=50", *(a for kv in sets for a in ("--set", kv))]
    cmd = [sys.executable, "-m", "trainer.main", *args]
    if launcher is not None:
        script = work / "launcher.py"
        script.write_text(launcher)
        cmd = [sys.executable, str(script), *args]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"openwit train failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    stats = json.loads((out / "train_stats.json").read_text())
    return {"wall_s": wall, "samples_per_s": stats["samples_per_s"], "data_wait": stats["data_wait_fraction"],
            "final_loss": stats["final_loss"],
            "weights": (out / "final_weights.pt").read_bytes()}
