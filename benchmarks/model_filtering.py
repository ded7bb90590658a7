"""Model-based filtering on the synthetic web: how well `openwit score` finds the mismatched
pairs (captions that describe another picture), with a CLIP-score model and with a data
filtering network (DFN), and what filtering does to the debug recipe's zero-shot table.

    python -m benchmarks.model_filtering --run openwit-demo [--keep-top 0.9] [--trusted 3000]

It takes a finished `openwit demo` folder (its crawl's ground truth, download, dedupe, curate
and training run) and runs only `openwit` commands, printed as they run, so every figure can
be reproduced by hand:

1. CLIP score: the demo's own model (trained on the whole pool, noise included, as the
   CLIP models DataComp scores with were) is exported and scores every deduplicated sample.
2. DFN loop: a trusted set, --trusted samples of the pool verified by a person (simulated:
   the ground truth says their caption is the picture's own), is sharded and trained on with
   the debug recipe (--dfn-steps steps); that model, exported, scores the pool.
3. Precision and recall of low_clip_score against the mismatched pairs, for each scorer, at
   several --keep-top fractions (from one scoring pass: the scores are in scores/), and
   the ROC AUC of the score.
4. The effect on training: the DFN-filtered keep set (--keep-top) is sharded as the demo
   shards (balance last, t = 300) and the debug recipe is trained on it for as many steps
   as the demo's run took; both final models are evaluated on the held-out combinations.

Outputs go under RUN/filtering/; a step whose output exists is not run again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

import schemas
from schemas import columns as C
from pipeline.synth import benchmark, crawl

FRACTIONS = (0.97, 0.95, 0.9, 0.7, 0.5, 0.3)


def openwit(*args: str) -> float:
    print("$ openwit " + shlex.join(args), flush=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", *args], check=True)
    return time.perf_counter() - t


def kinds_by_uid(run: Path) -> dict[str, str]:
    """Each curated uid's ground-truth kind (joined on the link: file, offset, url)."""
    truth = schemas.read_table(run / "crawl" / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)
    by_link = {(r[C.SOURCE_FILE], r[C.SOURCE_OFFSET], r[C.URL]): r[C.KIND]
               for r in truth.select([C.SOURCE_FILE, C.SOURCE_OFFSET, C.URL, C.KIND]).to_pylist()}
    curated = schemas.read_table(run / "curate" / "curated", schemas.CURATED)
    return {r[C.UID]: by_link.get((fileio_name(r[C.SOURCE_FILE]), r[C.SOURCE_OFFSET], r[C.URL]), "?")
            for r in curated.select([C.UID, C.SOURCE_FILE, C.SOURCE_OFFSET, C.URL]).to_pylist()}


def fileio_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def precision_recall(scores: dict[str, float], bad: set[str], fraction: float) -> dict:
    ranked = sorted(scores, key=lambda u: (scores[u], int(u[:8], 16)), reverse=True)
    keep = int(fraction * len(ranked) + 0.5)
    dropped = set(ranked[keep:])
    hit = len(dropped & bad)
    return {"keep_top": fraction, "rejected": len(dropped), "mismatched_rejected": hit,
            "precision": hit / len(dropped) if dropped else None, "recall": hit / len(bad) if bad else None}


def auc(scores: dict[str, float], bad: set[str]) -> float:
    """P(a mismatched pair scores lower than a matched one), ties counted half."""
    import bisect

    good = sorted(v for u, v in scores.items() if u not in bad)
    total = 0.0
    for u in bad:
        v = scores[u]
        lo, hi = bisect.bisect_left(good, v), bisect.bisect_right(good, v)
        total += (len(good) - hi) + 0.5 * (hi - lo)
    return total / (len(bad) * len(good))


def read_scores(folder: Path) -> dict[str, float]:
    t = schemas.read_table(folder / "scores", schemas.SCORES)
    return dict(zip(t.column(C.UID).to_pylist(), t.column(C.CLIP_SCORE).to_pylist()))


def trusted_keep(run: Path, out: Path, kinds: dict[str, str], n: int) -> int:
    """``n`` pool samples whose caption a person verified (the ground truth: not mismatched),
    chosen by a hash of the uid, as a KEEP folder."""
    keep = schemas.read_table(run / "dedupe" / "keep", schemas.KEEP)
    rows = [r for r in keep.to_pylist() if kinds.get(r[C.UID]) not in ("mismatched", "?")]
    rows.sort(key=lambda r: hashlib.blake2b(r[C.UID].encode(), digest_size=8, person=b"trusted").digest())
    chosen = sorted(rows[:n], key=lambda r: r[C.UID])
    schemas.write_table(pa.Table.from_pylist(chosen, schema=schemas.KEEP), out / "keep" / "part-00000-of-00001.parquet",
                        schemas.KEEP)
    return len(chosen)


def eval_table(path: Path) -> dict:
    """The held-out table's headline figures from `openwit eval --output`'s records."""
    out = {}
    for r in json.loads(path.read_text()):
        name, m = Path(r["dataset"]).name, r.get("metrics") or {}
        if r["task"] == "zeroshot_classification":
            out[name.removeprefix("zeroshot_")] = m["acc1"]
        elif r["task"] == "linear_probe":
            out[f"{name.removeprefix('zeroshot_')} probe"] = m["lp_acc1"]
        elif r["task"] == "zeroshot_retrieval":
            out["text->image R@5"] = m["image_retrieval_recall@5"]
            out["image->text R@5"] = m["text_retrieval_recall@5"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished `openwit demo --output` folder")
    p.add_argument("--keep-top", type=float, default=0.9, help="the fraction kept for the training comparison")
    p.add_argument("--trusted", type=int, default=3000, help="verified samples the DFN is trained on")
    p.add_argument("--dfn-steps", type=int, default=300, help="training steps of the filter network")
    p.add_argument("--seeds", default="0", help="training seeds of the comparison, comma-separated (seed 0 unfiltered: "
                   "the demo's own run)")
    args = p.parse_args(argv)
    run = Path(args.run)
    work = run / "filtering"
    work.mkdir(exist_ok=True)
    suite = run / "crawl" / benchmark.BENCHMARK_DIR
    kinds = kinds_by_uid(run)
    seconds: dict[str, float] = {}

    # 1. CLIP score with the demo's model
    if not (work / "clip_model").exists():
        seconds["export demo model"] = openwit("export", "--run", str(run / "train"), "--output", str(work / "clip_model"))
    if not (work / "clip_scored" / "score_stats.json").exists():
        seconds["score (CLIP)"] = openwit("score", "--keep", str(run / "dedupe"), "--images", str(run / "download"),
                                          "--model", str(work / "clip_model"), "--output", str(work / "clip_scored"),
                                          "--keep-top", str(args.keep_top))
    # 2. the DFN loop
    trusted = work / "trusted"
    if not (trusted / "keep").exists():
        print(f"trusted set: {trusted_keep(run, trusted, kinds, args.trusted):,} verified samples")
    if not (work / "trusted_shards" / "sizes.json").exists():
        openwit("shard",  # not-a-column: the command
                "--keep", str(trusted), "--images", str(run / "download"), "--curated", str(run / "curate"),
                "--output", str(work / "trusted_shards"), "--samples-per-shard", "1000")
    if not (work / "dfn_train" / "train_stats.json").exists():
        seconds["train DFN"] = openwit("train", "--recipe", "debug", "--data", str(work / "trusted_shards"),
                                       "--output", str(work / "dfn_train"), "--set", f"steps={args.dfn_steps}",
                                       "--set", "log_every=100")
    if not (work / "dfn_model").exists():
        openwit("export", "--run", str(work / "dfn_train"), "--output", str(work / "dfn_model"))
    if not (work / "dfn_score" / "score_stats.json").exists():
        seconds["score (DFN)"] = openwit("score", "--keep", str(run / "dedupe"), "--images", str(run / "download"),
                                         "--model", str(work / "dfn_model"), "--output", str(work / "dfn_score"),
                                         "--keep-top", str(args.keep_top))
    # 3. precision and recall
    results: dict = {"seconds": seconds, "scorers": {}}
    for name in ("clip_scored", "dfn_score"):
        scores = read_scores(work / name)
        bad = {u for u in scores if kinds.get(u) == "mismatched"}
        results["scorers"][name] = {
            "samples": len(scores), "mismatched": len(bad), "auc": auc(scores, bad),
            "mean_score_matched": sum(v for u, v in scores.items() if u not in bad) / max(1, len(scores) - len(bad)),
            "mean_score_mismatched": sum(scores[u] for u in bad) / max(1, len(bad)),
            "at": [precision_recall(scores, bad, f) for f in FRACTIONS]}
    # 4. training on the filtered pool at the demo's step count
    demo_stats = json.loads((run / "train" / "train_stats.json").read_text())
    steps = demo_stats["steps_run"]
    if not (work / "filtered_shards" / "sizes.json").exists():
        openwit("shard",  # not-a-column: the command
                "--keep", str(work / "dfn_score"), "--images", str(run / "download"),
                "--curated", str(run / "curate"), "--output", str(work / "filtered_shards"),
                "--samples-per-shard", "2000", "--balance", "last", "--t", "300")
    runs = {}
    for seed in [int(x) for x in args.seeds.split(",")]:
        for name, shards in (("unfiltered", run / "shards"), ("filtered", work / "filtered_shards")):
            train = run / "train" if (name, seed) == ("unfiltered", 0) else work / f"{name}_train_s{seed}"
            if not (train / "train_stats.json").exists():
                seconds[f"train {name} seed {seed}"] = openwit(
                    "train", "--recipe", "debug", "--data", str(shards), "--output", str(train),
                    "--set", f"steps={steps}", "--set", f"seed={seed}", "--set", "log_every=200")
            out = work / f"eval_{name}_s{seed}.json"
            if not out.exists():
                openwit("eval", "--model", str(train), "--suite", str(suite), "--linear-probe", "--resize-mode",
                        "longest", "--output", str(out))
            runs.setdefault(name, {})[seed] = eval_table(out)
    results["eval"] = runs
    filtered_in = [json.loads((d / "shard_stats.json").read_text())["kept"]
                   for d in (run / "shards", work / "filtered_shards")]
    results["training"] = {"steps": steps, "unfiltered_samples": filtered_in[0], "filtered_samples": filtered_in[1],
                           "shards_mismatched": {n: _mismatched_in(d, kinds) for n, d in
                                                 (("unfiltered", run / "shards"), ("filtered", work / "filtered_shards"))}}
    (work / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    print(json.dumps(results, indent=1, sort_keys=True))
    return 0


def _mismatched_in(shards: Path, kinds: dict[str, str]) -> int:
    index = schemas.read_table(shards / "index", schemas.SHARD_INDEX).column(C.UID).to_pylist()
    return sum(kinds.get(u) == "mismatched" for u in index)


if __name__ == "__main__":
    sys.exit(main())
