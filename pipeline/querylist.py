"""Query lists: one entry per line, UTF-8, case-sensitive (the format `openwit curate` reads).

``frequent_words`` is the simplest realistic list: the most frequent words of a language
by wordfreq's frequency data (which ships with the package, so nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.matching import load_entries


def frequent_words(n: int, lang: str = "en") -> list[str]:
    import wordfreq

    return load_entries(wordfreq.top_n_list(lang, n, wordlist="best"))


def write(entries: list[str], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{e}\n" for e in entries), encoding="utf-8")
    tmp.replace(path)
    return path
