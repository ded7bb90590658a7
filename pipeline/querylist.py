"""Query lists: one entry per line, UTF-8, case-sensitive (the format `openwit curate` reads).

``frequent_words`` is the simplest realistic list: the most frequent words of a language
by wordfreq's frequency data (which ships with the package, so nothing is downloaded).
"""

from __future__ import annotations

from pipeline.matching import load_entries
from schemas import fileio


def frequent_words(n: int, lang: str = "en") -> list[str]:
    import wordfreq

    return load_entries(wordfreq.top_n_list(lang, n, wordlist="best"))


def write(entries: list[str], path: str) -> str:
    fileio.write_text(str(path), "".join(f"{e}\n" for e in entries))
    return str(path)
