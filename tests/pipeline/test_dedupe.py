"""`openwit dedupe` on the FnApiRunner: the planted duplicates, near duplicates and
evaluation copies go with the right reasons, the result equals a brute-force reference,
the ledger holds, reruns are identical, bad input gets one line."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

import schemas
from schemas import columns as C
from pipeline import dedupe, imagehashes, neardup
from tests.pipeline import downloaded

R, EVAL_R = 2, 4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedupe")
    planted = downloaded.build(root)
    out = root / "dedupe"
    stats = dedupe.run(["--input", str(root / "download"), "--output", str(out), "--radius", str(R),
                        "--eval-images", f"held-out={root / 'eval'}", "--eval-radius", str(EVAL_R), "--dhash"])
    return root, planted, out, stats


def _reference(root) -> tuple[set[str], dict[str, str]]:
    """Keep set and reasons computed the slow, obvious way from the same hashes."""
    down = schemas.read_table(root / "download" / "downloaded", schemas.DOWNLOADED).to_pylist()
    images = {}
    for tar_path in sorted((root / "download" / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if m.name.endswith(".jpg"):
                    images[(tar_path.stem, m.name.split(".")[0])] = tar.extractfile(m).read()
    items, reasons = [], {}
    for row in down:
        if row[C.STATUS] != "success":
            continue
        data = images.get((row[C.SHARD], row[C.KEY]))
        if data is None:
            reasons[row[C.UID]] = "missing_sample"
            continue
        try:
            ph, _ = imagehashes.hashes(data, (row[C.ORIGINAL_WIDTH], row[C.ORIGINAL_HEIGHT]))
        except ValueError:
            reasons[row[C.UID]] = "corrupt_sample"
            continue
        items.append((row[C.UID], imagehashes.sha256(data), ph, row[C.ORIGINAL_WIDTH] * row[C.ORIGINAL_HEIGHT]))
    by_sha = {}
    for it in sorted(items):
        if it[1] in by_sha:
            reasons[it[0]] = "exact_duplicate"
        else:
            by_sha[it[1]] = it
    evals = [imagehashes.hashes(p.read_bytes())[0] for p in sorted((root / "eval").glob("*.png"))]
    left = []
    for it in by_sha.values():
        if any((it[2] ^ e).bit_count() <= EVAL_R for e in evals):
            reasons[it[0]] = "eval_overlap"
        else:
            left.append(it)
    # union-find over all pairs within R
    parent = list(range(len(left)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(left)):
        for j in range(i + 1, len(left)):
            if (left[i][2] ^ left[j][2]).bit_count() <= R:
                parent[find(i)] = find(j)
    comps = {}
    for i, it in enumerate(left):
        comps.setdefault(find(i), []).append(it)
    kept = set()
    for members in comps.values():
        members.sort(key=lambda it: (-it[3], it[0]))
        kept.add(members[0][0])
        for it in members[1:]:
            reasons[it[0]] = "near_duplicate"
    return kept, reasons


def test_matches_the_brute_force_reference(built):
    root, planted, out, stats = built
    kept_ref, reasons_ref = _reference(root)
    keep = schemas.read_table(out / "keep", schemas.KEEP)
    rejects = schemas.read_table(out / "rejects", schemas.REJECT)
    assert set(keep[C.UID].to_pylist()) == kept_ref
    assert dict(zip(rejects[C.UID].to_pylist(), rejects[C.REASON].to_pylist())) == reasons_ref
    assert keep[C.UID].to_pylist() == sorted(keep[C.UID].to_pylist())
    assert keep[C.DHASH].null_count == 0


def test_planted_cases_end_with_their_reasons(built):
    root, planted, out, stats = built
    rejects = {r[C.UID]: r for r in schemas.read_table(out / "rejects", schemas.REJECT).to_pylist()}
    kept = set(schemas.read_table(out / "keep", schemas.KEEP)[C.UID].to_pylist())
    assert [rejects[u][C.REASON] for u in planted["corrupt"]] == ["corrupt_sample"]
    assert [rejects[u][C.REASON] for u in planted["missing"]] == ["missing_sample"]
    assert not set(planted["failed"]) & (kept | set(rejects))  # not downloaded: not this stage's input
    # every exact copy: either it or its twin went as exact_duplicate, pointing at a kept-or-later uid
    exact = [r for r in rejects.values() if r[C.REASON] == "exact_duplicate"]
    assert len(exact) == 5 and all(r[C.DUPLICATE_OF] < r[C.UID] for r in exact)
    # both evaluation copies found, and counted for their set
    assert all(rejects[u][C.REASON] == "eval_overlap" for u in planted["eval"])
    assert "held-out" in rejects[planted["eval"][0]][C.DETAIL]
    assert stats["eval_sets"] == [{"name": "held-out", "path_count": 3, "images": 3, "unreadable": 0,
                                   "training_images_removed": stats["rejected"]["eval_overlap"]}]
    # the re-encoded copies: each near_duplicate points at a kept image
    near = [r for r in rejects.values() if r[C.REASON] == "near_duplicate"]
    assert near and all(r[C.DUPLICATE_OF] in kept for r in near)
    assert sum(1 for u in planted["near"] if u in rejects) + sum(
        1 for r in near if r[C.DUPLICATE_OF] in planted["near"]) >= 4


def test_ledger_holds_per_step(built):
    _, _, out, stats = built
    assert stats["ledger_ok"]
    assert [s["step"] for s in stats["steps"]] == list(dedupe.STEPS)
    for s in stats["steps"]:
        assert s["in"] == s["kept"] + sum(s["rejected"].values())
    assert stats["in"] == 74  # 60 pictures, 5 copies, 5 re-encodes, 2 evaluation copies, corrupt, missing
    assert sum(stats["component_sizes"].get(k, 0) * k for k in stats["component_sizes"]) == \
        stats["steps"][-1]["in"]
    assert (out / dedupe.STATS_FILE).exists()


def test_rerun_gives_identical_files(built, tmp_path):
    root, _, out, _ = built
    again = tmp_path / "again"
    dedupe.run(["--input", str(root / "download"), "--output", str(again), "--radius", str(R),
                "--eval-images", f"held-out={root / 'eval'}", "--eval-radius", str(EVAL_R), "--dhash",
                "--direct_num_workers=1", "--partitions=3", "--batch=7"])
    for sub in ("keep", "rejects"):
        a = sorted((out / sub).glob("*.parquet"))
        b = sorted((again / sub).glob("*.parquet"))
        assert [p.name for p in a] == [p.name for p in b]
        for x, y in zip(a, b):
            assert pq.read_table(x).equals(pq.read_table(y))


@pytest.mark.parametrize("argv,needle", [
    (["--input", "/nonexistent/dl", "--output", "/tmp/x"], "/nonexistent/dl"),
    (["--output", "/tmp/x"], "--input"),
    (["--input", "IN", "--output", "/tmp/x", "--eval-images", "/nonexistent/eval"], "/nonexistent/eval"),
    (["--input", "IN", "--output", "/tmp/x", "--radius", "40"], "--radius"),
])
def test_bad_input_is_one_line(built, argv, needle):
    root = built[0]
    argv = [str(root / "download") if a == "IN" else a for a in argv]
    with pytest.raises(schemas.UserError) as e:
        dedupe.run(argv)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_border_bars_are_removed_before_hashing():
    from PIL import Image

    from pipeline.synth import world

    img = world.render_image(world.ImageSpec(shape=1, colour=2, size=1, placement=4, background=0, jitter=7))
    w, h = 160, 120
    img = img.resize((w, h))
    padded = Image.new("RGB", (160, 160), (255, 255, 255))
    padded.paste(img, (0, 20))
    buf = io.BytesIO()
    padded.save(buf, "PNG")
    plain = io.BytesIO()
    img.save(plain, "PNG")
    with_bars = imagehashes.hashes(buf.getvalue())[0]
    stripped = imagehashes.hashes(buf.getvalue(), (w, h))[0]
    original = imagehashes.hashes(plain.getvalue())[0]
    assert (stripped ^ original).bit_count() <= 2 < (with_bars ^ original).bit_count()
    assert neardup.FULL >= stripped >= 0 and np.uint64(stripped) == stripped
