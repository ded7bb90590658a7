"""Query matching with MetaCLIP's semantics, in one Aho-Corasick pass per text.

The rule: a text matches an entry when `` entry `` occurs in the spaced text, where
spacing surrounds the text with spaces, turns tabs and line breaks into spaces, and puts
spaces around , . ; : ? ! and ` so punctuation never glues a word to its neighbour. So
matches fall on token boundaries ("red" matches "a red, round star" but not "bored"),
entries may span several words ("red star"), and case matters unless asked otherwise.

``naive_matches`` is the reference (one substring test per entry); ``QueryMatcher`` gives
the identical set with an automaton built once over all entries.

Worldwide lists (MetaCLIP 2) hold entries in scripts written without spaces between
words, where padding an entry with spaces would make it match almost nowhere. There an
entry is padded only at an edge whose character is neither of such a script nor
punctuation (``script_entry``): "猫" matches inside "一只黑猫在睡觉", "cat" still only on word
boundaries. The scripts are MetaCLIP 2's (CJK ideographs, Thai, Lao, Myanmar, Khmer,
Tibetan) plus Japanese kana and the CJK symbol and full-width blocks, which MetaCLIP 2's
rule pads (so a katakana entry such as "カメラ" would only match between spaces there). ``WorldMatcher`` matches a text against every language's
list in one pass and tags each matched entry with its language.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import string

import ahocorasick

# Unicode ranges of scripts written without spaces between words (and their punctuation)
NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x2FF0, 0x30FF),  # ideographic description, CJK symbols and punctuation, hiragana, katakana
    (0x31F0, 0x31FF),  # katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFF65),  # full-width forms and half-width CJK punctuation
    (0xFF66, 0xFF9F),  # half-width katakana
    (0x20000, 0x3134F),  # CJK extensions B to G
)
# punctuation is not padded either (MetaCLIP 2): "c++" matches in "c++17", "(film)" in "casablanca(film)"
UNPADDED_PUNCTUATION = frozenset(string.punctuation) | frozenset("，。、；：？！“”‘’（）【】《》〈〉「」『』～—")
TAG = "\x1f"  # between a language code and an entry in WorldMatcher's tagged matches

PUNCT_TO_WRAP = (",", ".", ";", ":", "?", "!", "`")
CHARS_TO_SPACE = ("\t", "\n", "\r")
_TRANSLATE = {**{ord(c): f" {c} " for c in PUNCT_TO_WRAP}, **{ord(c): " " for c in CHARS_TO_SPACE}}


def spaced(text: str) -> str:
    """The text as the matcher sees it (MetaCLIP's spacing rule)."""
    return f" {text.translate(_TRANSLATE)} "


def spaced_entry(entry: str) -> str:
    return f" {entry} "


def unspaced_script(char: str) -> bool:
    """Whether ``char`` belongs to a script written without spaces between words."""
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in NO_SPACE_RANGES)


def _padded(char: str) -> bool:
    return not (unspaced_script(char) or char in UNPADDED_PUNCTUATION)


def script_entry(entry: str) -> str:
    """An entry as the worldwide rule matches it: a space at each edge whose character is
    neither in a script written without spaces nor punctuation."""
    return f"{' ' if _padded(entry[0]) else ''}{entry}{' ' if _padded(entry[-1]) else ''}"


def naive_matches(text: str, entries: Sequence[str], lowercase: bool = False) -> set[int]:
    """Reference: the ids of the entries whose spaced form occurs in the spaced text."""
    s = spaced(text.lower() if lowercase else text)
    return {i for i, e in enumerate(entries) if spaced_entry(e.lower() if lowercase else e) in s}


def load_entries(lines: Iterable[str]) -> list[str]:
    """Query entries from lines: stripped, blank lines and duplicates dropped, order kept."""
    seen: set[str] = set()
    out = []
    for line in lines:
        entry = line.strip("\r\n").strip()
        if entry and entry not in seen:
            seen.add(entry)
            out.append(entry)
    return out


class QueryMatcher:
    """All entries in one automaton; ``match`` returns the sorted ids of matched entries."""

    def __init__(self, entries: Sequence[str], lowercase: bool = False):
        self.entries = list(entries)
        self.lowercase = lowercase
        self._automaton = ahocorasick.Automaton()
        for i, entry in enumerate(self.entries):
            key = spaced_entry(entry.lower() if lowercase else entry)
            existing = self._automaton.get(key, None)
            # Two entries collide only when lowercasing: then the value is a tuple of both ids.
            if existing is None:
                value: int | tuple[int, ...] = i
            else:
                value = (*existing, i) if isinstance(existing, tuple) else (existing, i)
            self._automaton.add_word(key, value)
        self._automaton.make_automaton()

    def match(self, text: str) -> list[int]:
        s = spaced(text.lower() if self.lowercase else text)
        found: set[int] = set()
        for _, ids in self._automaton.iter(s):
            if ids.__class__ is int:
                found.add(ids)
            else:
                found.update(ids)
        return sorted(found)

    def match_entries(self, text: str) -> list[str]:
        return [self.entries[i] for i in self.match(text)]


def naive_world_matches(text: str, lists: dict[str, Sequence[str]], lowercase: bool = False) -> set[str]:
    """Reference: the tagged entries (``lang + TAG + entry``) of every list whose worldwide
    form occurs in the spaced text."""
    s = spaced(text.lower() if lowercase else text)
    return {f"{lang}{TAG}{e}" for lang, entries in lists.items() for e in entries
            if script_entry(e.lower() if lowercase else e) in s}


class WorldMatcher:
    """Every language's list in one automaton, entries padded by the worldwide rule;
    ``match_entries`` returns the sorted tagged entries (``lang + TAG + entry``) found."""

    def __init__(self, lists: dict[str, Sequence[str]], lowercase: bool = False):
        self.lowercase = lowercase
        self.languages = sorted(lists)
        keys: dict[str, list[str]] = {}
        for lang in self.languages:
            for entry in lists[lang]:
                keys.setdefault(script_entry(entry.lower() if lowercase else entry), []).append(f"{lang}{TAG}{entry}")
        self._automaton = ahocorasick.Automaton()
        for key, tagged in keys.items():
            self._automaton.add_word(key, tuple(tagged))
        self._automaton.make_automaton()

    def match_entries(self, text: str) -> list[str]:
        s = spaced(text.lower() if self.lowercase else text)
        found: set[str] = set()
        for _, tagged in self._automaton.iter(s):
            found.update(tagged)
        return sorted(found)


def own_language(tagged: Sequence[str], lang: str | None) -> list[str]:
    """The entries of ``lang``'s list among tagged matches, untagged."""
    prefix = f"{lang}{TAG}"
    return [t[len(prefix):] for t in tagged if t.startswith(prefix)]
