"""Unigram and bigram counting for `openwit queries build`: the Beam job against a plain
`collections.Counter` pass over the same text, in the same run.

The corpus is generated: sentences of 4-30 words drawn from wordfreq's English frequencies
(Zipf-distributed, as real text is), written as plain text (one document a line), at
least ``--mb`` MB. Both sides count every unigram and bigram with the same tokeniser
(pipeline/ngrams.py); their counts must be identical.

- baseline: one Python process reads the file and updates two Counters (the same
  `ngrams.count_plain` the tests use as the reference), one core;
- openwit: the counting half of the Beam job (64 MB byte ranges read and counted in
  parallel, a shuffle of one dict per count shard, the merge), on the FnApiRunner with
  ``--workers`` processes; each merged shard is written to a TSV file, then read back and
  compared.

MB/s per core = corpus MB / seconds / cores used. The ratio is baseline per-core rate over
openwit's per-core rate (above 1: Beam costs more per core).

    python -m benchmarks.query_counting [--mb 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import ngrams


def write_corpus(path: Path, mb: float, seed: int = 0) -> int:
    import numpy as np
    import wordfreq

    words = wordfreq.top_n_list("en", 100_000)
    freqs = np.array([wordfreq.word_frequency(w, "en") for w in words])
    freqs /= freqs.sum()
    rng = np.random.default_rng(seed)
    punct = [",", ".", "", "", "", "", ""]
    target = int(mb * 1e6)
    size = 0
    py = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        while size < target:
            ids = rng.choice(len(words), size=200_000, p=freqs)
            pos = 0
            lines = []
            while pos < len(ids):
                n = py.randint(4, 30)
                toks = [words[i] + py.choice(punct) for i in ids[pos:pos + n]]
                lines.append(" ".join(toks))
                pos += n
            chunk = "\n".join(lines) + "\n"
            fh.write(chunk)
            size += len(chunk.encode())
    return size


def plain(path: Path) -> tuple[Counter, Counter, float]:
    start = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        uni, bi = ngrams.count_plain(line.rstrip("\n") for line in fh)
    return uni, bi, time.perf_counter() - start


def _write_shard(item, out: str) -> int:
    shard, counts = item
    with open(f"{out}/counts-{shard:05d}.tsv", "w", encoding="utf-8") as fh:
        for kind, side in zip((ngrams.UNI, ngrams.BI), counts):
            fh.writelines(f"{kind}\t{key}\t{n}\n" for key, n in side.items())
    return sum(len(side) for side in counts)


def beam_counts(path: Path, out: Path, workers: int) -> tuple[dict, dict, float]:
    opts = PipelineOptions(["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                            f"--direct_num_workers={workers}"])
    start = time.perf_counter()
    with beam.Pipeline(options=opts) as p:
        (p | beam.Create(ngrams.ranges([str(path)], lambda f: "text"))  # not-a-column
         | ngrams.CountNgrams()
         | "Write" >> beam.Map(_write_shard, out=str(out)))
    seconds = time.perf_counter() - start
    uni, bi = {}, {}
    for f in sorted(out.glob("counts-*.tsv")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                kind, key, n = line.rstrip("\n").split("\t")
                (uni if kind == ngrams.UNI else bi)[key] = int(n)
    return uni, bi, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200, help="corpus size in MB (default: 200)")
    ap.add_argument("--workers", type=int, default=2, help="Beam worker processes (default: 2)")
    ap.add_argument("--work", default=None, help="folder for the corpus and outputs (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        t = time.perf_counter()
        size = write_corpus(corpus, args.mb)
        print(f"corpus: {size / 1e6:.1f} MB in {time.perf_counter() - t:.0f}s; {os.cpu_count()} cores")
        uni, bi, base_s = plain(corpus)
        print(f"baseline Counter pass: {base_s:.1f}s, {size / 1e6 / base_s:.2f} MB/s on 1 core; "
              f"{len(uni):,} unigrams, {len(bi):,} bigrams, {sum(uni.values()):,} tokens")
        buni, bbi, beam_s = beam_counts(corpus, tmp, args.workers)
        same = buni == dict(uni) and bbi == dict(bi)
        per_core = size / 1e6 / beam_s / args.workers
        base_core = size / 1e6 / base_s
        print(f"openwit Beam count ({args.workers} workers): {beam_s:.1f}s, {size / 1e6 / beam_s:.2f} MB/s, "
              f"{per_core:.2f} MB/s per core; counts identical: {same}")
        print(f"ratio (baseline per core / openwit per core): {base_core / per_core:.2f}; "
              f"wall-clock speed-up over the baseline: {base_s / beam_s:.2f}x")
        if not same:
            raise SystemExit("the counts differ")


if __name__ == "__main__":
    main()
