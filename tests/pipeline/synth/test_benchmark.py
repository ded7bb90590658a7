"""The synthetic benchmark: CLIP_benchmark layout, held-out combinations only in the test
splits, labels that match the rendered specs, captions that name the combination."""

from __future__ import annotations

import tarfile

from pipeline.synth import benchmark, world


def _members(tar_path):
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def test_sets_hold_the_heldout_combinations_with_matching_labels(tmp_path):
    seed, n = 3, 24
    counts = benchmark.write(seed, n, tmp_path, probe_size=16)
    assert counts["zeroshot_shape"] == {"test": n, "train": 16}
    held = world.heldout_combos(seed)
    shape = _members(tmp_path / "zeroshot_shape" / "test" / "00000.tar")
    colour = _members(tmp_path / "zeroshot_colour" / "test" / "00000.tar")
    combo = _members(tmp_path / "zeroshot_combination" / "test" / "00000.tar")
    names = benchmark.combination_names()
    assert (tmp_path / "zeroshot_combination" / "classnames.txt").read_text().splitlines() == names
    assert len(names) == 64 and names[0] == "red circle"
    for k in range(n):
        spec = world.eval_spec(seed, k)
        key = f"s{k:07d}"
        assert (spec.shape, spec.colour) in held
        assert int(shape[f"{key}.cls"]) == spec.shape and int(colour[f"{key}.cls"]) == spec.colour
        assert names[int(combo[f"{key}.cls"])] == f"{spec.colour_name} {spec.shape_name}"
        assert shape[f"{key}.png"] == combo[f"{key}.png"]  # one image, several tasks
    train = _members(tmp_path / "zeroshot_shape" / "train" / "00000.tar")
    for k in range(16):
        spec = benchmark.seen_spec(seed, k)
        assert (spec.shape, spec.colour) not in held and int(train[f"s{k:07d}.cls"]) == spec.shape
    assert (tmp_path / "zeroshot_shape" / "test" / "nshards.txt").read_text() == "1\n"
    templates = (tmp_path / "zeroshot_colour" / "zeroshot_classification_templates.txt").read_text().splitlines()
    assert templates and all("{c}" in t for t in templates)


def test_retrieval_captions_name_the_combination(tmp_path):
    benchmark.write(5, 10, tmp_path, probe_size=0)
    rows = _members(tmp_path / "retrieval" / "test" / "00000.tar")
    for k in range(10):
        spec = world.eval_spec(5, k)
        caps = rows[f"s{k:07d}.txt"].decode().splitlines()
        assert len(caps) == benchmark.CAPTIONS == len(set(caps))
        assert all(spec.shape_name in c.lower() and spec.colour_name in c.lower() for c in caps)


def test_rewriting_is_deterministic_and_replaces_the_set(tmp_path):
    benchmark.write(1, 8, tmp_path / "a")
    (tmp_path / "a" / "retrieval" / "test" / "stale.tar").write_bytes(b"x")
    benchmark.write(1, 8, tmp_path / "a")
    benchmark.write(1, 8, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert not any(p.name == "stale.tar" for p in files)
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
