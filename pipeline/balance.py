"""Per-query balancing (MetaCLIP's rule) with deterministic draws (pure functions).

A query matched by ``c`` texts keeps each of them with ``p = t / max(c, t)``: tail
queries (``c <= t``) keep everything, head queries about ``t`` texts. A text matching the
set M of queries is kept with ``1 - prod(1 - p_q for q in M)``, i.e. if any of its queries
would keep it. The draw is a hash of (seed, uid) under its own purpose
(``schemas.ids.BALANCE``), so every runner and rerun agrees, and no other decision (the
shard order) shares its randomness.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Iterable, Sequence

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


def expected_size(counts: Iterable[int], t: float) -> float:
    return float(sum(min(c, t) for c in counts))

