"""Language id: the wordfreq backend against langdetect on a labelled sample.

Baseline (same run): langdetect, seeded, on the same texts. The sample is the synthetic
crawl's captions whose language the ground truth knows (English, and German, French,
Spanish, Italian), repaired as curate repairs them. Prints accuracy against the labels,
agreement between the backends, and throughput without the cache (distinct texts only).

    python -m benchmarks.langid [--crawl DIR] [--sample 3000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import schemas
from schemas import columns as C
from pipeline import textclean
from pipeline.langid import LanguageId
from pipeline.synth import crawl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crawl", default=None)
    ap.add_argument("--sample", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.crawl or tmp)
        if not args.crawl:
            crawl.generate(crawl.CrawlConfig(pages=3000, pages_per_file=1000), folder)
        truth = schemas.read_table(folder / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH).to_pylist()
    labelled = {}
    for r in truth:
        if r[C.KIND] in ("clean", "non_english", "mojibake") and r[C.LANG]:
            labelled.setdefault(textclean.normalize(r[C.TEXT]), r[C.LANG])
    texts = random.Random(0).sample(sorted(labelled), min(args.sample, len(labelled)))
    results = {}
    for backend in ("langdetect", "wordfreq"):
        lid = LanguageId(backend)
        start = time.perf_counter()
        results[backend] = [lid.detect(t)[0] for t in texts]
        results[backend + "_s"] = time.perf_counter() - start
    labels = [labelled[t] for t in texts]
    foreign = sum(lab != "en" for lab in labels)
    print(f"{len(texts)} distinct labelled texts ({foreign} not English)")
    base_rate = len(texts) / results["langdetect_s"]
    for backend in ("langdetect", "wordfreq"):
        got = results[backend]
        acc = sum(g == lab for g, lab in zip(got, labels)) / len(texts)
        en_kept = sum(g == "en" for g, lab in zip(got, labels) if lab == "en") / max(1, len(texts) - foreign)
        rate = len(texts) / results[backend + "_s"]
        tag = "(baseline)" if backend == "langdetect" else f"x{rate / base_rate:.1f}"
        print(f"{backend:<11} accuracy {acc:6.1%}  English kept {en_kept:6.1%}  {rate:9,.0f} texts/s {tag}")
    agree = sum(a == b for a, b in zip(results["langdetect"], results["wordfreq"])) / len(texts)
    right = [i for i, lab in enumerate(labels) if results["langdetect"][i] == lab]
    agree_right = sum(results["wordfreq"][i] == labels[i] for i in right) / max(1, len(right))
    print(f"agreement: {agree:.1%} overall; {agree_right:.1%} where langdetect is right")


if __name__ == "__main__":
    main()
