"""Query matching with MetaCLIP's semantics, in one Aho-Corasick pass per text.

The rule: a text matches an entry when `` entry `` occurs in the spaced text, where
spacing surrounds the text with spaces, turns tabs and line breaks into spaces, and puts
spaces around , . ; : ? ! and ` so punctuation never glues a word to its neighbour. So
matches fall on token boundaries ("red" matches "a red, round star" but not "bored"),
entries may span several words ("red star"), and case matters unless asked otherwise.

``naive_matches`` is the reference (one substring test per entry); ``QueryMatcher`` gives
the identical set with an automaton built once over all entries.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import ahocorasick

PUNCT_TO_WRAP = (",", ".", ";", ":", "?", "!", "`")
CHARS_TO_SPACE = ("\t", "\n", "\r")
_TRANSLATE = {**{ord(c): f" {c} " for c in PUNCT_TO_WRAP}, **{ord(c): " " for c in CHARS_TO_SPACE}}


def spaced(text: str) -> str:
    """The text as the matcher sees it (MetaCLIP's spacing rule)."""
    return f" {text.translate(_TRANSLATE)} "


def spaced_entry(entry: str) -> str:
    return f" {entry} "


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
