"""Multi-index Hamming search: exact against brute force, bounded on hot buckets."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import neardup


def _planted(rng: np.random.Generator, n: int, k: int, max_flips: int) -> np.ndarray:
    base = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    src = base[rng.integers(0, n, size=k)]
    flips = np.zeros(k, dtype=np.uint64)
    for j in range(k):
        for b in rng.choice(64, size=rng.integers(0, max_flips + 1), replace=False):
            flips[j] |= np.uint64(1) << np.uint64(b)
    return np.concatenate([base, src ^ flips])


def _hot(rng: np.random.Generator, n: int, free_bits: int) -> np.ndarray:
    """n values sharing all but ``free_bits`` low bits: one very hot bucket in every block."""
    fixed = np.uint64(0xABCDEF0123456789) & ~np.uint64((1 << free_bits) - 1)
    return fixed | rng.integers(0, 1 << free_bits, size=n, dtype=np.uint64)


def _pairs(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(a.tolist(), b.tolist()))


@pytest.mark.parametrize("r", [0, 1, 2, 4, 6])
def test_search_finds_exactly_what_brute_force_finds(r):
    rng = np.random.default_rng(r)
    train = np.concatenate([_planted(rng, 4000, 800, r + 2), _hot(rng, 600, 12)])
    ev = np.concatenate([_planted(rng, 100, 0, 0), train[rng.integers(0, len(train), 60)] ^ np.uint64(5)])
    ids = np.arange(len(ev), dtype=np.int64) * 3
    found = neardup.search(train, r, ev, ids, cap=16)
    truth = neardup.brute_force(train, r, ev, ids)
    got, want = _pairs(*found.edges()), _pairs(*truth.edges())
    assert got <= want  # nothing beyond r
    # every true pair is found or implied (clique buckets are chained): same components
    assert [x.tolist() for x in neardup.components(*found.edges())] == \
           [x.tolist() for x in neardup.components(*truth.edges())]
    assert [x.tolist() for x in found.overlaps()] == [x.tolist() for x in truth.overlaps()]
    assert len(want) > 0 or r == 0


def test_every_pair_within_r_is_an_edge_outside_clique_buckets():
    rng = np.random.default_rng(1)
    train = _planted(rng, 20_000, 3000, 4)
    found, truth = neardup.search(train, 4), neardup.brute_force(train, 4)
    assert _pairs(*found.edges()) == _pairs(*truth.edges())


@pytest.mark.parametrize("free_bits,factor", [(40, 0.01), (20, 0.5)])
def test_hot_bucket_work_is_bounded(free_bits, factor):
    """8,000 hashes sharing 24 (or 44) bits: one hot bucket in most blocks. Spread out in
    their free bits, the split makes the work near-linear; packed densely, it stays within
    the pairwise comparison of each hot bucket (and the answer stays exact)."""
    rng = np.random.default_rng(free_bits)
    hot = np.unique(_hot(rng, 8000, free_bits))
    found = neardup.search(hot, 4, cap=32)
    n, blocks = len(hot), 5
    assert found.compared <= factor * blocks * n * (n - 1) / 2
    truth = neardup.brute_force(hot, 4)
    assert _pairs(*found.edges()) == _pairs(*truth.edges())


def test_dense_cluster_is_a_clique_without_comparisons():
    vals = np.arange(0, 16, dtype=np.uint64) | np.uint64(0xF0F0 << 32)  # 4 free bits, r = 4: all within r
    found = neardup.search(vals, 4, cap=4)
    nodes, roots = neardup.components(*found.edges())
    assert nodes.tolist() == sorted(vals.tolist()) and set(roots.tolist()) == {int(vals.min())}


def test_blocks_partition_the_64_bits():
    for r in range(0, 20):
        masks = neardup.block_masks(r)
        assert len(masks) == r + 1
        total = 0
        for m in masks:
            assert total & m == 0
            total |= m
        assert total == neardup.FULL
        sizes = [bin(m).count("1") for m in masks]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        neardup.block_masks(64)


def test_components_root_is_the_smallest_value():
    a = np.array([5, 9, 100], dtype=np.uint64)
    b = np.array([9, 2, 101], dtype=np.uint64)
    nodes, roots = neardup.components(a, b)
    assert dict(zip(nodes.tolist(), roots.tolist())) == {2: 2, 5: 2, 9: 2, 100: 100, 101: 100}
