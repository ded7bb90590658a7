"""Per-query balancing (MetaCLIP's rule) with deterministic draws (pure functions).

A query matched by ``c`` texts keeps each of them with ``p = t / max(c, t)``: tail
queries (``c <= t``) keep everything, head queries about ``t`` texts. A text matching the
set M of queries is kept with ``1 - prod(1 - p_q for q in M)``, i.e. if any of its queries
would keep it. The draw is a hash of (seed, uid) under its own purpose
(``schemas.ids.BALANCE``), so every runner and rerun agrees, and no other decision (the
shard order) shares its randomness.
"""

from __future__ import annotations

import math
from itertools import accumulate
from typing import Iterable, Sequence

import numpy as np

from schemas import ids

DEFAULT_T = 20_000


def query_probability(count: int, t: float) -> float:
    return 1.0 if count <= t else t / count


def keep_probability(counts: Sequence[int], t: float) -> float:
    """Probability of keeping a text whose matched queries have these global counts."""
    p_drop = 1.0
    for c in counts:
        p_drop *= 1.0 - query_probability(c, t)
    return 1.0 - p_drop


def draw(seed: int, uid: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, uid), drawn for balancing only."""
    return ids.uniform(ids.BALANCE, seed, uid)


def keeps(seed: int, uid: str, p: float) -> bool:
    """Whether the balancing draw keeps a sample whose keep probability is ``p``."""
    return draw(seed, uid) < p


def solve_t(counts: Iterable[int], target: int) -> float:
    """The t whose expected size sum(min(c, t)) equals ``target`` (MetaCLIP's estimate).

    The sum is piecewise linear and increasing in t, so the solution is exact from the
    sorted counts: no trial runs. A target at or above the total keeps everything.
    """
    cs = sorted(c for c in counts if c > 0)
    if not cs:
        return float(DEFAULT_T)
    if target >= sum(cs):
        return float(cs[-1])
    if target <= 0:
        raise ValueError("target size must be positive")
    prefix = [0, *accumulate(cs)]
    n = len(cs)
    # For t in [cs[k-1], cs[k]]: size(t) = prefix[k] + (n - k) * t.
    lo, hi = 0, n
    while lo < hi:  # smallest k with size(cs[k]) >= target
        k = (lo + hi) // 2
        if prefix[k] + (n - k) * cs[k] >= target:
            hi = k
        else:
            lo = k + 1
    k = lo
    return (target - prefix[k]) / (n - k)


def merge_counts(dicts: Iterable[dict]) -> dict:
    """Counts summed key by key (a CombineGlobally of per-worker query counts)."""
    total: dict = {}
    for d in dicts:
        for k, n in d.items():
            total[k] = total.get(k, 0) + n
    return total


def expected_size(counts: Iterable[int], t: float) -> float:
    return float(sum(min(c, t) for c in counts))



# -- worldwide: a t per language with the same tail share as English (MetaCLIP 2) -----------

class LanguageCounts:
    """Per language, its queries' match counts sorted ascending and their running share of
    the language's matches: what the worldwide budgets are computed from."""

    def __init__(self, counts: dict[tuple[str, str], int]):
        by_lang: dict[str, list[int]] = {}
        for (lang, _), n in counts.items():
            if n > 0:
                by_lang.setdefault(lang, []).append(n)
        self.sorted = {lang: np.sort(np.asarray(cs, np.float64)) for lang, cs in sorted(by_lang.items())}
        self.shares = {lang: np.cumsum(cs) / cs.sum() for lang, cs in self.sorted.items()}

    def tail_share(self, lang: str, t: float) -> float:
        """The share of ``lang``'s matches that fall on its tail entries (count below t)."""
        cs = self.sorted[lang]
        k = int(np.searchsorted(cs, t, side="left"))  # entries with count < t
        return float(self.shares[lang][k - 1]) if k else 0.0

    def t_for_share(self, lang: str, share: float) -> float:
        """MetaCLIP 2's rule: the count at which the running share of the language's
        matches, over its counts sorted ascending, comes closest to ``share`` (the first on
        a tie)."""
        shares = self.shares[lang]
        k = int(np.searchsorted(shares, share, side="left"))
        near = [i for i in (k - 1, k) if 0 <= i < len(shares)]
        best = min(near, key=lambda i: (abs(shares[i] - share), i))
        return float(self.sorted[lang][best])

    def budgets(self, t_en: float, english: str = "en") -> dict[str, float]:
        """A t for every language: English's is ``t_en``; every other language's keeps the
        tail share English has at ``t_en``. Without English matches, all get ``t_en``."""
        if english not in self.sorted or not math.isfinite(t_en):
            return {lang: float(t_en) for lang in self.sorted}
        share = self.tail_share(english, t_en)
        return {lang: float(t_en) if lang == english else self.t_for_share(lang, share) for lang in self.sorted}

    def size(self, budgets: dict[str, float]) -> float:
        """The expected kept matches-per-query sum, sum over languages of sum(min(c, t_lang))."""
        return float(sum(np.minimum(cs, budgets[lang]).sum() for lang, cs in self.sorted.items()))


def language_budgets(counts: dict[tuple[str, str], int], t_en: float, english: str = "en") -> dict[str, float]:
    return LanguageCounts(counts).budgets(t_en, english)


def solve_world_t(counts: dict[tuple[str, str], int], target: int, english: str = "en") -> float:
    """English's t for which the expected size over every language, each at its own t,
    comes closest to ``target`` from below (by bisection: the size grows with t_en)."""
    lc = LanguageCounts(counts)
    top = float(max((cs[-1] for cs in lc.sorted.values()), default=DEFAULT_T))
    if lc.size(lc.budgets(top, english)) <= target:
        return top
    lo, hi = 0.0, top
    while hi - lo > 1e-9 * hi:
        mid = (lo + hi) / 2
        if lc.size(lc.budgets(mid, english)) <= target:
            lo = mid
        else:
            hi = mid
    return lo


class Budgets(dict):
    """{language: t} with English's (or the single) t as ``main``; a language with no
    counted match gets ``main``. ``share``: English's tail share the other languages'
    t keep (None where no per-language rule applied)."""

    def __init__(self, by_lang: dict[str, float], main: float, share: float | None = None):
        super().__init__(by_lang)
        self.main, self.share = main, share

    def __missing__(self, lang: str) -> float:
        return self.main

    def __reduce__(self):
        return (Budgets, (dict(self), self.main, self.share))

    def record(self) -> dict:
        """balance_t.json: the t (null: not balanced), each language's, English's tail share."""
        return {"t": self.main if math.isfinite(self.main) else None,
                "by_language": {lang: t for lang, t in sorted(self.items()) if math.isfinite(t)} or None,
                "english_tail_share": self.share}


def budgets(counts: dict[tuple[str, str], int], t: float | None, target: int | None, worldwide: bool) -> Budgets:
    """The t of every language: one t for all (--t, or solved for --target-size), or in
    worldwide mode English's t and every other language's by MetaCLIP 2's tail-share rule."""
    if not worldwide:
        value = solve_t(list(counts.values()), target) if target else float(t or DEFAULT_T)
        return Budgets({}, value)
    t_en = solve_world_t(counts, target) if target else float(t or DEFAULT_T)
    lc = LanguageCounts(counts)
    share = lc.tail_share("en", t_en) if "en" in lc.sorted and math.isfinite(t_en) else None
    return Budgets(lc.budgets(t_en), t_en, share)
