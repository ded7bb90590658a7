"""Exact Hamming-radius search over 64-bit perceptual hashes, by multi-index hashing.

Two hashes within distance ``r`` differ in at most ``r`` bits, so if the 64 bits are cut
into ``r + 1`` blocks, at least one block is identical in both (pigeonhole). Every hash is
therefore bucketed once per block by that block's value, and only hashes sharing a bucket
are compared (XOR + popcount). Nothing within ``r`` is missed: the search is exact.

Hot buckets. Random hashes fill a bucket with ``n / 2**(64 / (r+1))`` values, and real
hashes far more (flat images, logos). Comparing a bucket pairwise is quadratic, so a
bucket is compared pairwise only when it holds at most ``cap`` values: at most
``cap * (cap - 1) / 2`` popcounts. A larger bucket is split again by the same pigeonhole
argument on the bits its members do not yet share: two members within ``r`` differ only
in those bits, by at most ``r``, so cutting them into ``r + 1`` sub-blocks puts the pair
together in at least one sub-bucket. The split repeats until buckets are small, or until
at most ``r`` bits are left unshared, when every pair in the bucket is within ``r`` and no
comparison is needed (the bucket is a clique). Each level costs one sort of the bucket's
members per sub-block; no level compares more than ``cap`` values pairwise.

The search is vectorised: all buckets of one level that share the same set of fixed bits
are processed by one sort, and pairwise comparison runs as ``cap`` passes of
``values[d:] ^ values[:-d]`` over the sorted array.

Besides pairs among training hashes (``edges``), the search reports training hashes within
``r`` of an evaluation hash (``overlaps``, with the evaluation item's id); pairs of
evaluation hashes are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BITS = 64
FULL = (1 << BITS) - 1
DEFAULT_CAP = 32
_EMPTY_U64 = np.zeros(0, dtype=np.uint64)
_EMPTY_I64 = np.zeros(0, dtype=np.int64)


def split_bits(mask: int, parts: int) -> list[int]:
    """Cut the set bits of ``mask`` into ``parts`` runs of near-equal size, low bits first."""
    positions = [b for b in range(BITS) if mask >> b & 1]
    parts = max(1, min(parts, len(positions)))
    out, start = [], 0
    for i in range(parts):
        size = len(positions) // parts + (1 if i < len(positions) % parts else 0)
        m = 0
        for b in positions[start:start + size]:
            m |= 1 << b
        out.append(m)
        start += size
    return out


def block_masks(r: int) -> list[int]:
    """The ``r + 1`` top-level blocks of the 64 bits."""
    if not 0 <= r < BITS:
        raise ValueError(f"radius must be in 0..{BITS - 1}, got {r}")
    return split_bits(FULL, r + 1)


@dataclass
class Found:
    """What a search found. ``edges``: pairs of training hashes within r (a < b; a pair may
    repeat). ``overlaps``: (training hash, evaluation id) within r (may repeat)."""

    a: list[np.ndarray] = field(default_factory=list)
    b: list[np.ndarray] = field(default_factory=list)
    over_v: list[np.ndarray] = field(default_factory=list)
    over_e: list[np.ndarray] = field(default_factory=list)
    compared: int = 0  # popcounts computed, for the work bound

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (a, b) pairs, a < b, sorted."""
        if not self.a:
            return _EMPTY_U64, _EMPTY_U64
        a, b = np.concatenate(self.a), np.concatenate(self.b)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        order = np.lexsort((hi, lo))
        lo, hi = lo[order], hi[order]
        keep = np.ones(len(lo), dtype=bool)
        keep[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
        return lo[keep], hi[keep]

    def overlaps(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (training hash, evaluation id) pairs, sorted."""
        if not self.over_v:
            return _EMPTY_U64, _EMPTY_I64
        v, e = np.concatenate(self.over_v), np.concatenate(self.over_e)
        order = np.lexsort((e, v))
        v, e = v[order], e[order]
        keep = np.ones(len(v), dtype=bool)
        keep[1:] = (v[1:] != v[:-1]) | (e[1:] != e[:-1])
        return v[keep], e[keep]

    def extend(self, other: "Found") -> None:
        self.a += other.a
        self.b += other.b
        self.over_v += other.over_v
        self.over_e += other.over_e
        self.compared += other.compared


def _emit(found: Found, left: np.ndarray, right: np.ndarray, vals: np.ndarray, eid: np.ndarray) -> None:
    """Record the pairs (left[k], right[k]) of positions: train-train as edges, train-eval as overlaps."""
    le, re_ = eid[left] >= 0, eid[right] >= 0
    tt = ~le & ~re_
    if tt.any():
        found.a.append(vals[left[tt]])
        found.b.append(vals[right[tt]])
    te = ~le & re_
    if te.any():
        found.over_v.append(vals[left[te]])
        found.over_e.append(eid[right[te]])
    et = le & ~re_
    if et.any():
        found.over_v.append(vals[right[et]])
        found.over_e.append(eid[left[et]])


def search_shared(vals: np.ndarray, eid: np.ndarray, shared: int, r: int, cap: int = DEFAULT_CAP) -> Found:
    """Pairs within ``r`` among hashes that agree on the bits of ``shared``.

    ``vals``: uint64 hashes; ``eid``: int64, -1 for a training hash, else the evaluation
    item's id (>= 0). Training hashes should be distinct (equal ones are one node).
    """
    found = Found()
    if len(vals) < 2:
        return found
    smask = np.uint64(shared)
    key = vals & smask
    key, vals, eid = _sorted_by(key, shared, vals, eid)
    start = np.ones(len(vals), dtype=bool)
    start[1:] = key[1:] != key[:-1]
    gid = np.cumsum(start) - 1
    sizes = np.bincount(gid)
    trains = np.bincount(gid, weights=(eid < 0)).astype(np.int64)
    live = (sizes >= 2) & (trains >= 1)  # a group without a training hash has nothing to find
    nfree = (FULL & ~shared).bit_count()
    clique = nfree <= r
    small = live & ((sizes <= cap) | clique)
    big = live & ~small

    sel = small[gid]
    if sel.any():
        v, e, g = vals[sel], eid[sel], gid[sel]
        if clique:
            _clique(found, v, e, g)
        else:
            size = sizes[g]
            d = 1
            while d < len(v):
                # only groups longer than d have pairs d apart; drop whole shorter groups
                # (they stay contiguous) once they are most of what is left
                longer = size > d
                if not longer.any():
                    break
                if 2 * int(longer.sum()) < len(v):
                    v, e, g, size = v[longer], e[longer], g[longer], size[longer]
                same = g[d:] == g[:-d]
                hit = same & (np.bitwise_count(v[d:] ^ v[:-d]) <= r)
                found.compared += int(same.sum())
                if hit.any():
                    left = np.flatnonzero(hit)
                    _emit(found, left, left + d, v, e)
                d += 1

    sel = big[gid]
    if sel.any():
        _split(found, vals[sel], eid[sel], gid[sel], shared, r, cap)
    return found


def _runs(mask: int) -> list[tuple[int, int]]:
    """(low bit, width) of each run of set bits in ``mask``, low first."""
    runs, b = [], 0
    while mask >> b:
        if mask >> b & 1:
            w = 0
            while mask >> (b + w) & 1:
                w += 1
            runs.append((b, w))
            b += w
        else:
            b += 1
    return runs


def _compact(v: np.ndarray, mask: int) -> np.ndarray:
    """The bits of ``mask`` gathered into the low bits (a vectorised PEXT)."""
    out = np.zeros(len(v), dtype=np.uint64)
    offset = 0
    for low, width in _runs(mask):
        out |= ((v >> np.uint64(low)) & np.uint64((1 << width) - 1)) << np.uint64(offset)
        offset += width
    return out


def _sorted_by(key: np.ndarray, shared: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``key`` (the hashes masked by ``shared``) and ``arrays`` in key order. Keys of up to
    48 significant bits are sorted by stable 16-bit radix passes, low digit first (several
    times faster than a comparison sort of 64-bit values)."""
    bits = shared.bit_count()
    if bits > 48:
        order = np.argsort(key)
    else:
        compact = _compact(key, shared)
        order = None
        for shift in range(0, bits, 16):
            digit = ((compact >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.uint16)
            step = np.argsort(digit if order is None else digit[order], kind="stable")
            order = step if order is None else order[step]
    return key[order], *(a[order] for a in arrays)


def _split(found: Found, v: np.ndarray, e: np.ndarray, g: np.ndarray, shared: int, r: int, cap: int) -> None:
    """Groups larger than ``cap`` (sorted, contiguous, ids ``g``): split each again by the
    pigeonhole argument on the bits that vary inside it.

    Groups whose members vary in every unshared bit (the rule for spread-out hashes) are
    split together, vectorised. A group whose members agree on more bits than ``shared``
    is split on its own varying bits only; if that split would not at least halve the
    pairs left to compare (a dense cluster), the group is compared pairwise instead.
    """
    free = FULL & ~shared
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    varying = np.bitwise_or.reduceat(v ^ np.repeat(v[starts], np.diff(np.r_[starts, len(v)])), starts)
    regular = varying == np.uint64(free)
    member = np.repeat(regular, np.diff(np.r_[starts, len(v)]))
    if member.any():
        rv, re_ = v[member], e[member]
        for sub in split_bits(free, r + 1):
            found.extend(search_shared(rv, re_, shared | sub, r, cap))
    ends = np.r_[starts[1:], len(v)]
    for k in np.flatnonzero(~regular):
        _split_one(found, v[starts[k]:ends[k]], e[starts[k]:ends[k]], int(varying[k]), r, cap)


def _split_one(found: Found, v: np.ndarray, e: np.ndarray, varying: int, r: int, cap: int) -> None:
    n = len(v)
    if varying.bit_count() <= r:
        _clique(found, v, e, np.zeros(n, dtype=np.int64))
        return
    subs = split_bits(varying, r + 1)
    left = 0
    for sub in subs:
        _, counts = np.unique(v & np.uint64(sub), return_counts=True)
        left += int((counts * (counts - 1) // 2).sum())
    if 2 * left >= n * (n - 1) // 2:
        _pairwise(found, v, e, r)
        return
    fixed = FULL & ~varying
    for sub in subs:
        found.extend(search_shared(v, e, fixed | sub, r, cap))


def _pairwise(found: Found, v: np.ndarray, e: np.ndarray, r: int, chunk: int = 1024) -> None:
    """Every pair of one group, compared in chunks (bounded memory)."""
    n = len(v)
    for s in range(0, n, chunk):
        d = np.bitwise_count(v[s:s + chunk, None] ^ v[None, :])
        i, j = np.nonzero(d <= r)
        keep = s + i < j
        found.compared += len(d[0]) * len(d) // 2 if s == 0 else len(d[0]) * len(d)
        _emit(found, s + i[keep], j[keep], v, e)


def _clique(found: Found, v: np.ndarray, e: np.ndarray, g: np.ndarray) -> None:
    """Groups in which every pair is within r: a chain through each group's training hashes
    (enough for connected components) and every (training hash, evaluation id) of a group."""
    train = e < 0
    tv, tg = v[train], g[train]
    if len(tv) >= 2:
        link = tg[1:] == tg[:-1]
        found.a.append(tv[:-1][link])
        found.b.append(tv[1:][link])
    ev, eg = e[~train], g[~train]
    if len(ev) and len(tv):
        # join on group id: groups are sorted, so use searchsorted ranges
        lo = np.searchsorted(eg, tg, side="left")
        hi = np.searchsorted(eg, tg, side="right")
        counts = hi - lo
        has = counts > 0
        if has.any():
            rep = np.repeat(np.arange(len(tv))[has], counts[has])
            starts = np.repeat(lo[has], counts[has])
            offs = np.arange(len(rep)) - np.repeat(np.cumsum(counts[has]) - counts[has], counts[has])
            found.over_v.append(tv[rep])
            found.over_e.append(ev[starts + offs])


def prepare(train: np.ndarray, eval_vals: np.ndarray | None = None,
            eval_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One array of hashes and ids: distinct training hashes (id -1) then evaluation hashes."""
    t = np.sort(np.asarray(train, dtype=np.uint64))
    t = t[np.r_[True, t[1:] != t[:-1]]] if len(t) else t
    if eval_vals is None or len(eval_vals) == 0:
        return t, np.full(len(t), -1, dtype=np.int64)
    ev = np.asarray(eval_vals, dtype=np.uint64)
    ei = np.asarray(eval_ids if eval_ids is not None else np.arange(len(ev)), dtype=np.int64)
    if (ei < 0).any():
        raise ValueError("evaluation ids must be >= 0")
    return np.concatenate([t, ev]), np.concatenate([np.full(len(t), -1, dtype=np.int64), ei])


def search(train: np.ndarray, r: int, eval_vals: np.ndarray | None = None,
           eval_ids: np.ndarray | None = None, cap: int = DEFAULT_CAP) -> Found:
    """Every pair of distinct training hashes within ``r``, and every (training hash,
    evaluation id) within ``r``: one process, all blocks."""
    vals, eid = prepare(train, eval_vals, eval_ids)
    found = Found()
    for mask in block_masks(r):
        found.extend(search_shared(vals, eid, mask, r, cap))
    return found


def brute_force(train: np.ndarray, r: int, eval_vals: np.ndarray | None = None,
                eval_ids: np.ndarray | None = None, chunk: int = 2048) -> Found:
    """The quadratic reference: every pair compared (for tests and recall checks)."""
    t = np.unique(np.asarray(train, dtype=np.uint64))
    found = Found()
    for s in range(0, len(t), chunk):
        block = t[s:s + chunk]
        d = np.bitwise_count(block[:, None] ^ t[None, :])
        i, j = np.nonzero(d <= r)
        keep = (s + i) < j
        found.a.append(block[i[keep]])
        found.b.append(t[j[keep]])
        if eval_vals is not None and len(eval_vals):
            ev = np.asarray(eval_vals, dtype=np.uint64)
            ei = np.asarray(eval_ids if eval_ids is not None else np.arange(len(ev)), dtype=np.int64)
            d = np.bitwise_count(block[:, None] ^ ev[None, :])
            i, j = np.nonzero(d <= r)
            found.over_v.append(block[i])
            found.over_e.append(ei[j])
    return found


def components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the graph with edges (a[k], b[k]): (node, root) for every
    node on an edge, the root being the component's smallest hash."""
    if len(a) == 0:
        return _EMPTY_U64, _EMPTY_U64
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    n = len(nodes)
    ia, ib = inverse[:len(a)], inverse[len(a):]
    graph = coo_matrix((np.ones(len(ia), dtype=np.int8), (ia, ib)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # nodes are sorted, so the first node of each label is its smallest hash
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    return nodes, nodes[first[labels]]
