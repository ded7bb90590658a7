"""Stable identifiers and seeded draws shared by every stage and every runner.

Every decision that draws from a sample's uid names its purpose: the purpose is BLAKE2b's
personalisation string, so two decisions never share randomness even under the same seed
(a sample kept by the balancing draw says nothing about its place in the shard order).
"""

from __future__ import annotations

import hashlib

# The closed set of purposes a seeded draw may serve.
BALANCE = "balance"  # curate: MetaCLIP's per-query keep draw
REBALANCE = "rebalance"  # shard: the keep draw of balancing again after download and dedupe
ONLINE_BALANCE = "online-balance"  # trainer: an epoch's keep draws (online balancing)
SHARD_ORDER = "shard-order"  # shard: a sample's place in the dataset order
PARTITION = "partition"  # which output file of a stage a row lands in
AUGMENT = "augment"  # trainer: the crop and greyscale draws of a sample in an epoch
SPLIT = "split"  # a held-out split of samples (evaluation, probes)
PERMUTE = "permute"  # trainer: the round keys of an epoch's sample permutation
PURPOSES = frozenset({BALANCE, REBALANCE, ONLINE_BALANCE, SHARD_ORDER, PARTITION, AUGMENT, SPLIT, PERMUTE})


def uid(url: str, text: str) -> str:
    """The stable id of an (url, text) pair: 32 hex chars of BLAKE2b-128.

    The url is length-prefixed so that no (url, text) split of the same bytes collides.
    Identical on every runner, worker count and rerun (no salt, no process state).
    """
    u = url.encode("utf-8", "surrogatepass")
    t = text.encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(digest_size=16)
    h.update(len(u).to_bytes(8, "big"))
    h.update(u)
    h.update(t)
    return h.hexdigest()


def hash64(purpose: str, *parts: object) -> int:
    """A 64-bit number fixed by (purpose, parts): BLAKE2b-64 personalised with the purpose,
    over the parts joined by a unit separator (ints and strings, e.g. seed, epoch, uid)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown draw purpose {purpose!r} (one of {sorted(PURPOSES)})")
    data = "\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=purpose.encode()).digest(), "big")


def uniform(purpose: str, *parts: object) -> float:
    """A uniform number in [0, 1) fixed by (purpose, parts)."""
    return hash64(purpose, *parts) / 2.0**64
