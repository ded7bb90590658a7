"""Language id on real labelled text: Debian's human translations of package descriptions.

The texts: the one-line descriptions of Debian's packages (bookworm, main), as the Debian
Description Translation Project's translators wrote them, from the archive's
``i18n/Translation-<lang>`` files. Short, noun-phrase texts full of product names, as
alt texts are. apt fetches them with

    apt-get update -o Acquire::Languages=en,cs,da,de,es,fi,fr,hu,it,ja,ko,nl,pl,pt_BR,ru,sv,uk,zh_CN

into /var/lib/apt/lists (lz4; read here through apt-helper). A translation is dropped
where it is the English text again or uses no word the English original lacks (not
translated). Each language's texts are split in two halves by a hash of the text: the
``web`` backend's three constants were chosen on the ``tune`` half; the figures are for
the ``test`` half, at most --per-language texts per language, drawn with a fixed seed.

Baseline (same run): langdetect, seeded. lingua and pycld2 rows appear when installed.
Prints per backend: accuracy (each language weighted by its sample), English kept,
non-English called English, texts/s on one core without the cache, and per-language
accuracy; then the ratio of texts/s to the baseline.

    python -m benchmarks.langid [--lists /var/lib/apt/lists] [--per-language 500] [--half test]
      [--write-sample FILE --sample-per-language 40]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from pipeline.langid import LanguageId

WORDS = re.compile(r"\w+")
# the archive's language suffix -> the code the backends answer with
CODE = {"zh_CN": "zh", "pt_BR": "pt"}


def read_translations(path: Path) -> dict[str, str]:
    """Description-md5 -> the one-line description, from one Translation file."""
    if path.suffix == ".lz4":
        text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True,
                              capture_output=True).stdout.decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for record in text.split("\n\n"):
        md5 = short = None
        for line in record.splitlines():
            if line.startswith("Description-md5: "):
                md5 = line.split(": ", 1)[1].strip()
            elif line.startswith("Description-") and ": " in line:
                short = line.split(": ", 1)[1].strip()
        if md5 and short:
            out[md5] = short
    return out


def labelled_texts(lists: Path) -> dict[str, list[str]]:
    """Language code -> distinct translated one-line descriptions (English: the originals)."""
    files = {p.name.split("Translation-")[1].split(".")[0].replace("%5f", "_"): p
             for p in sorted(lists.glob("*_main_i18n_Translation-*")) if "bookworm_main" in p.name}
    if "en" not in files:
        raise SystemExit(f"no Translation-en in {lists}: run the apt-get update line in this module's docstring")
    english = read_translations(files.pop("en"))
    out = {"en": sorted(set(english.values()))}
    for suffix, path in sorted(files.items()):
        texts = set()
        for md5, text in read_translations(path).items():
            original = english.get(md5)
            if original is None or text == original:
                continue
            known = {w.lower() for w in WORDS.findall(original)}
            words = [w.lower() for w in WORDS.findall(text)]
            if words and not all(w in known for w in words):
                texts.add(text)
        out[CODE.get(suffix, suffix)] = sorted(texts)
    return out


def half(text: str) -> str:
    return "tune" if hashlib.sha1(text.encode("utf-8")).digest()[0] % 2 else "test"


def sample(texts: dict[str, list[str]], which: str, per_language: int, minimum: int = 100) -> list[tuple[str, str]]:
    rng = random.Random(0)
    out = []
    for lang, items in sorted(texts.items()):
        items = [t for t in items if half(t) == which]
        if len(items) >= minimum:
            out += [(lang, t) for t in rng.sample(items, min(per_language, len(items)))]
    return out


def _optional_backends() -> dict:
    extra = {}
    try:
        from lingua import LanguageDetectorBuilder

        detector = LanguageDetectorBuilder.from_all_languages().build()

        def lingua(text: str) -> str:
            got = detector.detect_language_of(text)
            return got.iso_code_639_1.name.lower() if got else "und"
        extra["lingua (all languages)"] = lingua
    except ImportError:
        pass
    try:
        import pycld2

        def cld2(text: str) -> str:
            try:
                code = pycld2.detect(text)[2][0][1]
            except pycld2.error:
                return "und"
            return "und" if code == "un" else code.split("-")[0]
        extra["pycld2"] = cld2
    except ImportError:
        pass
    return extra


def score(name: str, detect, texts: list[tuple[str, str]]) -> dict:
    detect(texts[0][1])  # models load outside the timing
    start = time.perf_counter()
    got = [detect(t) for _, t in texts]
    seconds = time.perf_counter() - start
    english = [g for g, (lang, _) in zip(got, texts) if lang == "en"]
    foreign = [g for g, (lang, _) in zip(got, texts) if lang != "en"]
    per: dict[str, list[bool]] = {}
    for g, (lang, _) in zip(got, texts):
        per.setdefault(lang, []).append(g == lang)
    return {"name": name, "accuracy": sum(g == lang for g, (lang, _) in zip(got, texts)) / len(texts),
            "english_kept": english.count("en") / max(1, len(english)),
            "foreign_as_english": foreign.count("en") / max(1, len(foreign)),
            "rate": len(texts) / seconds, "per": {k: sum(v) / len(v) for k, v in per.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", default="/var/lib/apt/lists", help="folder of apt's Translation-* files")
    ap.add_argument("--per-language", type=int, default=500)
    ap.add_argument("--half", choices=("test", "tune"), default="test")
    ap.add_argument("--write-sample", help="also write a sample of the test half (language<TAB>text) here")
    ap.add_argument("--sample-per-language", type=int, default=40)
    args = ap.parse_args()
    texts = labelled_texts(Path(args.lists))
    chosen = sample(texts, args.half, args.per_language)
    languages = sorted({lang for lang, _ in chosen})
    print(f"{len(chosen)} texts of the {args.half} half, {len(languages)} languages: "
          + ", ".join(f"{lang} {sum(lg == lang for lg, _ in chosen)}" for lang in languages))
    backends = {}
    for name in ("langdetect", "wordfreq", "fasttext", "web"):
        lid = LanguageId(name)

        def detect(text: str, _lid=lid) -> str:
            return _lid._detect(text)[0].split("-")[0]  # no cache; langdetect says zh-cn
        backends[name] = detect
    backends.update(_optional_backends())
    results = [score(name, fn, chosen) for name, fn in backends.items()]
    base = results[0]["rate"]
    print("\n| backend | accuracy | English kept | non-English called English | texts/s (1 core) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        tag = "1 (baseline)" if r is results[0] else f"{r['rate'] / base:,.0f}"
        print(f"| {r['name']} | {r['accuracy']:.1%} | {r['english_kept']:.1%} | {r['foreign_as_english']:.1%} "
              f"| {r['rate']:,.0f} | {tag} |")
    print("\n| backend | " + " | ".join(languages) + " |")
    print("|---|" + "---:|" * len(languages))
    for r in results:
        print(f"| {r['name']} | " + " | ".join(f"{100 * r['per'][lang]:.0f}" for lang in languages) + " |")
    if args.write_sample:
        rows = sample(texts, "test", args.sample_per_language)
        Path(args.write_sample).write_text("".join(f"{lang}\t{text}\n" for lang, text in rows), encoding="utf-8")
        print(f"\nwrote {len(rows)} texts to {args.write_sample}", file=sys.stderr)


if __name__ == "__main__":
    main()
