"""The image world: tokens, held-out combinations, deterministic rendering, variants."""

from __future__ import annotations

import io
import random
from dataclasses import replace

import imagehash
import pytest
from PIL import Image

from pipeline.synth import world as W


def random_spec(rng: random.Random) -> W.ImageSpec:
    return W.ImageSpec(
        rng.randrange(len(W.SHAPES)), rng.randrange(len(W.COLOURS)), rng.randrange(len(W.SIZES)),
        rng.randrange(len(W.PLACEMENTS)), rng.randrange(len(W.BACKGROUNDS)), rng.getrandbits(32),
        rng.randrange(len(W.VARIANTS)), rng.randrange(256), rng.randrange(len(W.FAULTS)),
        rng.randrange(len(W.FORMATS)),
    )


def test_world_is_at_least_8_by_8():
    assert len(W.SHAPES) >= 8 and len(W.COLOURS) >= 8
    assert len(W.SIZES) >= 3 and len(W.PLACEMENTS) >= 5 and len(W.BACKGROUNDS) >= 4


def test_token_round_trip_and_rejects_forgeries():
    rng = random.Random(1)
    for _ in range(2000):
        spec = random_spec(rng)
        token = spec.token()
        assert len(token) == W.TOKEN_LENGTH and token.isalnum() and token == token.lower()
        assert W.parse_token(token) == spec
    token = random_spec(rng).token()
    forged = token[:-1] + ("a" if token[-1] != "a" else "b")
    for bad in (forged, token[:-1], token + "a", "0" * 16, "!" * 16):
        with pytest.raises(W.BadToken):
            W.parse_token(bad)


def test_heldout_is_one_colour_per_shape_and_one_shape_per_colour():
    for seed in range(5):
        combos = W.heldout_combos(seed)
        assert len(combos) == len(W.SHAPES)
        assert {s for s, _ in combos} == set(range(len(W.SHAPES)))
        assert {c for _, c in combos} == set(range(len(W.COLOURS)))
    for i in range(40):
        spec = W.eval_spec(3, i)
        assert (spec.shape, spec.colour) in W.heldout_combos(3)
    assert W.eval_spec(3, 5) == W.eval_spec(3, 5) != W.eval_spec(3, 6)


@pytest.mark.parametrize("fmt", W.FORMATS)
def test_encoding_is_deterministic_and_decodes(fmt):
    spec = replace(random_spec(random.Random(2)), variant=0, fault=0, fmt=W.FORMATS.index(fmt))
    body = W.encode(spec)
    assert body == W.encode(spec)
    if fmt == "svg":
        assert body.startswith(b"<svg") and b"polygon" in body
        return
    with Image.open(io.BytesIO(body)) as im:
        assert im.format == {"jpg": "JPEG", "png": "PNG", "gif": "GIF"}[fmt]
        assert min(im.size) >= 64


def test_distinct_jitter_gives_distinct_pictures():
    rng = random.Random(3)
    bodies = {W.encode(replace(random_spec(rng), variant=0, fault=0, fmt=0)) for _ in range(50)}
    assert len(bodies) == 50


def _phash(body: bytes) -> imagehash.ImageHash:
    return imagehash.phash(Image.open(io.BytesIO(body)).convert("RGB"))


def test_variants_are_near_duplicates_with_other_bytes():
    rng = random.Random(4)
    crops = []
    for _ in range(40):
        original = replace(random_spec(rng), variant=0, variant_param=0, fault=0, fmt=0)
        a = W.encode(original)
        for variant in range(1, len(W.VARIANTS)):
            b = W.encode(replace(original, variant=variant, variant_param=rng.randrange(256)))
            assert a != b
            dist = _phash(a) - _phash(b)
            if W.VARIANTS[variant] == "crop":
                crops.append(dist)  # crops shift the picture: the hard near-duplicates
            else:
                assert dist <= 12, (W.VARIANTS[variant], dist)
    assert sorted(crops)[len(crops) // 2] <= 8


def test_unrelated_pictures_are_perceptually_apart():
    rng = random.Random(6)
    hashes = [_phash(W.encode(replace(random_spec(rng), variant=0, fault=0, fmt=0))) for _ in range(200)]
    dists = sorted(a - b for i, a in enumerate(hashes) for b in hashes[i + 1:])
    assert dists[0] >= 2 and dists[len(dists) // 1000] >= 10


def test_tiny_image_is_8_pixels():
    with Image.open(io.BytesIO(W.tiny_image(random_spec(random.Random(5))))) as im:
        assert im.size == (W.TINY_SIDE, W.TINY_SIDE)
