"""Language identification with langdetect: seeded (deterministic) and cached by text."""

from __future__ import annotations

from collections import OrderedDict

UNDETERMINED = "und"


class LanguageId:
    def __init__(self, cache_size: int = 200_000):
        from langdetect import DetectorFactory

        DetectorFactory.seed = 0  # langdetect samples features at random: fix it
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._cache_size = cache_size
        self.hits = self.misses = 0

    def detect(self, text: str) -> tuple[str, float]:
        """(language code, probability); ('und', 0.0) when the text has no letters to judge."""
        got = self._cache.get(text)
        if got is not None:
            self.hits += 1
            self._cache.move_to_end(text)
            return got
        self.misses += 1
        from langdetect import detect_langs
        from langdetect.lang_detect_exception import LangDetectException

        try:
            best = detect_langs(text)[0]
            got = (best.lang, round(float(best.prob), 4))
        except LangDetectException:
            got = (UNDETERMINED, 0.0)
        self._cache[text] = got
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return got
