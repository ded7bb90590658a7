"""`openwit shard` on the FnApiRunner: exact shard sizes, the sample order, tar layout,
byte-reproducible reruns (after a crash too), the manifest, and reading the shards the way
open_clip's training loader does across 2 ranks x 2 workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap

import pytest

import schemas
from schemas import columns as C
from pipeline import dedupe, shard
from tests.pipeline import downloaded

PER_SHARD = 12


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")  # not-a-column
    downloaded.build(root)
    dedupe.run(["--input", str(root / "download"), "--output", str(root / "dedupe"),
                "--eval-images", str(root / "eval")])
    out = root / "shards"
    stats = shard.run(_argv(root, out))
    return root, out, stats


def _argv(root, out, *extra):
    return ["--keep", str(root / "dedupe"), "--images", str(root / "download"), "--curated", str(root / "curate"),
            "--output", str(out), "--samples-per-shard", str(PER_SHARD), "--seed", "3", *extra]


def _files(folder) -> dict[str, bytes]:
    """Every output file but the two that name the command line (README.md, shard_stats.json)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (shard.CARD_FILE, shard.STATS_FILE)}


def test_exact_sizes_order_and_layout(made):
    root, out, stats = made
    keep = schemas.read_table(root / "dedupe" / "keep", schemas.KEEP)[C.UID].to_pylist()
    assert stats["ledger_ok"] and stats["kept"] == len(keep) and stats["in"] == len(keep)
    sizes = json.loads((out / shard.SIZES_FILE).read_text())
    n = len(keep)
    assert list(sizes) == [f"{i:05d}.tar" for i in range(-(-n // PER_SHARD))]
    assert list(sizes.values()) == [PER_SHARD] * (n // PER_SHARD) + ([n % PER_SHARD] if n % PER_SHARD else [])
    order = sorted(keep, key=lambda u: (shard.order_key(3, u), u))
    seen = []
    for name in sizes:
        with tarfile.open(out / name) as tar:
            members = tar.getmembers()
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.mode == 0o644 for m in members)
        keys = [m.name.split(".", 1)[0] for m in members]
        exts = [m.name.split(".", 1)[1] for m in members]
        assert all("." not in k for k in keys)
        for i in range(0, len(members), 3):  # adjacent per key, extensions sorted
            assert len(set(keys[i:i + 3])) == 1 and exts[i:i + 3] == ["jpg", "json", "txt"]
        seen += keys[::3]
    assert seen == order


def test_manifest_rows_point_at_their_bytes(made):
    root, out, _ = made
    index = schemas.read_table(out / shard.INDEX_DIR, schemas.SHARD_INDEX).to_pylist()
    curated = {r[C.UID]: r for r in schemas.read_table(root / "curate" / "curated", schemas.CURATED).to_pylist()}
    for row in index:
        with open(out / f"{row[C.SHARD]}.tar", "rb") as fh:
            fh.seek(row[C.TAR_OFFSET])
            blob = fh.read(row[C.TAR_BYTES])
        import io

        with tarfile.open(fileobj=io.BytesIO(blob + b"\0" * 1024)) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        assert set(members) == {f"{row[C.KEY]}.jpg", f"{row[C.KEY]}.json", f"{row[C.KEY]}.txt"}
        assert members[f"{row[C.KEY]}.txt"].decode() == row[C.TEXT] == curated[row[C.UID]][C.TEXT]
        doc = json.loads(members[f"{row[C.KEY]}.json"])
        assert doc[C.UID] == row[C.UID] and doc[C.URL] == row[C.URL] and doc[C.MATCHED_QUERIES] == ["picture"]
        assert int(doc[C.PHASH], 16) == row[C.PHASH]
        assert row[C.PAGE_URL] == curated[row[C.UID]][C.PAGE_URL]
    assert [r[C.SHARD_POSITION] for r in index if r[C.SHARD] == "00000"] == list(range(PER_SHARD))


def test_card_and_stats(made):
    _, out, stats = made
    card = (out / shard.CARD_FILE).read_text()
    assert f"{stats['kept']:,} samples" in card and "openwit shard --keep" in card and f"schema version {schemas.SCHEMA_VERSION}" in card
    per = json.loads((out / "00000_stats.json").read_text())
    assert per["samples"] == PER_SHARD and per["bytes"] == (out / "00000.tar").stat().st_size


def test_rerun_after_a_crash_is_byte_identical(made, tmp_path):
    root, out, _ = made
    again = tmp_path / "again"
    shard.run(_argv(root, again, "--direct_num_workers=1", "--range-rows=5"))
    assert _files(again) == _files(out)
    # a crashed run: a truncated shard, a leftover temp file, a stale extra shard, no sizes.json
    (again / "00001.tar").write_bytes((again / "00001.tar").read_bytes()[:1000])
    (again / ".00002.tar.tmp-123").write_bytes(b"partial")
    (again / "00099.tar").write_bytes(b"old")
    (again / shard.SIZES_FILE).unlink()
    shard.run(_argv(root, again))
    assert not (again / "00099.tar").exists()
    leftovers = {k for k in _files(again) if k.startswith(".")}
    assert _files(again).keys() - leftovers == _files(out).keys()
    assert {k: v for k, v in _files(again).items() if k not in leftovers} == _files(out)


def test_missing_curated_row_is_a_reject(made, tmp_path):
    root, out, _ = made
    import pyarrow.compute as pc

    cur = schemas.read_table(root / "curate" / "curated", schemas.CURATED)
    gone = min(schemas.read_table(root / "dedupe" / "keep", schemas.KEEP)[C.UID].to_pylist())
    partial = tmp_path / "curate" / "curated"
    schemas.write_table(cur.filter(pc.not_equal(cur[C.UID], gone)), partial / "part.parquet", schemas.CURATED)
    stats = shard.run(["--keep", str(root / "dedupe"), "--images", str(root / "download"),
                       "--curated", str(tmp_path / "curate"), "--output", str(tmp_path / "out")])
    assert stats["ledger_ok"] and stats["rejected"] == {"missing_sample": 1} and stats["kept"] == stats["in"] - 1
    rejects = schemas.read_table(tmp_path / "out" / "rejects", schemas.REJECT).to_pylist()
    assert [(r[C.UID], r[C.REASON]) for r in rejects] == [(gone, "missing_sample")]


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(schemas.UserError) as e:
        shard.run(["--keep", str(tmp_path / "nope"), "--images", str(tmp_path), "--curated", str(tmp_path),
                   "--output", str(tmp_path / "o")])
    assert "nope" in str(e.value) and "\n" not in str(e.value)


READER = textwrap.dedent("""
    import json, sys
    import torch
    import webdataset as wds
    from open_clip_train.data import filter_no_caption_or_no_image, get_dataset_size

    urls = sys.argv[1]
    total, shards = get_dataset_size(urls)
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_node,
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.select(filter_no_caption_or_no_image),
        wds.decode("pilrgb"),
        wds.rename(image="jpg;png;jpeg;webp", text="txt", key="__key__"),
        wds.to_tuple("key", "image", "text"),
    )
    loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)
    keys = [key for key, image, text in loader if image.size[0] > 0 and text]
    print(json.dumps({"total": total, "shards": shards, "keys": keys}))
""")


@pytest.mark.slow
def test_open_clip_style_loader_sees_every_sample_once_over_2_ranks_x_2_workers(made, tmp_path):
    root, out, stats = made
    assert stats["shards"] >= 4  # every (rank, worker) gets a shard
    script = tmp_path / "reader.py"
    script.write_text(READER)
    urls = str(out / ("{00000..%05d}.tar" % (stats["shards"] - 1)))
    procs = [subprocess.Popen([sys.executable, str(script), urls], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"}) for rank in range(2)]
    results = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    keys = [k for r in results for k in r["keys"]]
    index = schemas.read_table(out / shard.INDEX_DIR, schemas.SHARD_INDEX)
    assert sorted(keys) == sorted(index[C.KEY].to_pylist())  # every sample exactly once
    assert all(r["keys"] for r in results)  # both ranks read
    assert results[0]["total"] == stats["kept"] and results[0]["shards"] == stats["shards"]


@pytest.mark.parametrize("seed", [0, 7])
def test_shard_order_says_nothing_about_how_common_a_query_is(seed):
    """A pool with a heavy head: half the candidates on one query kept with p = 0.02, half on
    tail queries (p = 1), balanced and ordered with the same seed, as curate and shard
    default to. The share of chance-kept samples in each decile of the shard order stays
    within binomial bounds of its overall share."""
    from pipeline import balance

    n = 100_000
    t = 0.02 * n  # the head query's count is n: p = t / n
    kept = []
    for i in range(2 * n):
        uid = schemas.uid(f"http://h{i % 97}.example/{i}.jpg", f"caption {i}")
        p = balance.keep_probability([n] if i % 2 else [1], t)
        if balance.keeps(seed, uid, p):
            kept.append((shard.order_key(seed, uid), p < 1))
    kept.sort()
    chance = sum(c for _, c in kept)
    share = chance / len(kept)
    assert 1800 < chance < 2200  # about 2% of the head
    decile = len(kept) // 10
    sd = (decile * share * (1 - share)) ** 0.5
    counts = [sum(c for _, c in kept[d * decile:(d + 1) * decile]) for d in range(10)]
    assert all(abs(c - decile * share) < 4.5 * sd for c in counts), (counts, decile * share, sd)
    chi2 = sum((c - decile * share) ** 2 / (decile * share * (1 - share)) for c in counts)
    assert chi2 < 27.9, counts  # chi-square, 9 degrees of freedom, p = 0.001


READER_OPEN_CLIP = textwrap.dedent("""
    import json, logging, sys
    import open_clip
    from open_clip_train.data import get_wds_dataset
    from open_clip_train.params import parse_args

    urls, samples = sys.argv[1], int(sys.argv[2])
    errors = []

    class Errors(logging.Handler):
        def emit(self, record):
            errors.append(record.getMessage())

    logging.getLogger().addHandler(Errors(level=logging.WARNING))
    # open_clip_train's own flags and its own loader, unpatched, as its main() calls it
    args = parse_args(["--train-data", urls, "--dataset-type", "webdataset", "--train-num-samples", str(samples),
                       "--batch-size", "4", "--workers", "2", "--seed", "0", "--model", "ViT-B-32"])
    args.world_size, args.rank, args.distributed = 1, 0, False
    preprocess = open_clip.image_transform(64, is_train=True)
    data = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=open_clip.get_tokenizer("ViT-B-32"))
    data.set_epoch(0)
    seen, shapes = 0, set()
    for images, texts in data.dataloader:
        seen += images.shape[0]
        shapes.add((tuple(images.shape[1:]), tuple(texts.shape[1:])))
    print(json.dumps({"seen": seen, "batches": data.dataloader.num_batches, "shapes": sorted(map(str, shapes)),
                      "errors": errors}))
""")


@pytest.mark.slow
def test_open_clip_train_reads_the_shards_as_they_are(made, tmp_path):
    """open_clip's trainer (open_clip_train.data.get_wds_dataset, with the arguments its own
    parser makes) reads `openwit shard` output in openwit's environment, unpatched: every
    batch decodes, with no webdataset error on the way."""
    root, out, stats = made
    script = tmp_path / "open_clip_reader.py"
    script.write_text(READER_OPEN_CLIP)
    urls = str(out / ("{00000..%05d}.tar" % (stats["shards"] - 1)))
    total = stats["kept"]
    proc = subprocess.run([sys.executable, str(script), urls, str(total)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == [], result["errors"][:3]
    assert result["seen"] == result["batches"] * 4 and result["seen"] >= total - 4 * 2  # an epoch, as it counts one
    assert result["shapes"] == [str(((3, 64, 64), (77,)))]


# -- balancing after download and dedupe (--balance last | online) ---------------------------

def _with_queries(root, tmp_path):
    """The fixture's curate output with varied matches: most samples match one head query
    'picture' (plus 'red' for some), the rest one tail query of their own each."""
    import pyarrow as pa

    cur = schemas.read_table(root / "curate" / "curated", schemas.CURATED).to_pylist()
    for n, row in enumerate(cur):
        row[C.MATCHED_QUERIES] = ["picture"] + (["red"] if n % 5 == 0 else []) if n % 4 else [f"tail{n}"]
    folder = tmp_path / "curate" / "curated"
    schemas.write_table(pa.Table.from_pylist(cur, schema=schemas.CURATED), folder / "part.parquet", schemas.CURATED)
    return tmp_path / "curate", {r[C.UID]: r[C.MATCHED_QUERIES] for r in cur}


def _balance_argv(root, curated, out, *extra):
    return ["--keep", str(root / "dedupe"), "--images", str(root / "download"), "--curated", str(curated),
            "--output", str(out), "--samples-per-shard", str(PER_SHARD), *extra]


def test_balance_last_recounts_what_survived_and_draws_by_uid(made, tmp_path):
    from pipeline import balance

    root, _, _ = made
    curated, queries = _with_queries(root, tmp_path)
    keep = schemas.read_table(root / "dedupe" / "keep", schemas.KEEP)[C.UID].to_pylist()
    counts = {}
    for u in keep:  # the counts over dedupe's survivors, not over the curated rows
        for q in queries[u]:
            counts[q] = counts.get(q, 0) + 1
    assert counts["picture"] > 10
    stats = shard.run(_balance_argv(root, curated, tmp_path / "last", "--balance", "last", "--t", "6"))
    assert stats["ledger_ok"] and stats["balance"] == "last" and stats["t"] == 6
    assert [s["step"] for s in stats["steps"]] == ["join", "balance"]
    expected = {u for u in keep if schemas.ids.uniform(schemas.ids.REBALANCE, 0, u)
                < balance.keep_probability([counts[q] for q in queries[u]], 6)}
    index = schemas.read_table(tmp_path / "last" / shard.INDEX_DIR, schemas.SHARD_INDEX)
    assert set(index[C.UID].to_pylist()) == expected and 0 < len(expected) < len(keep)
    assert index[C.KEEP_PROB].null_count == index.num_rows  # drawn here: nothing left for the trainer to draw
    rejects = schemas.read_table(tmp_path / "last" / "rejects", schemas.REJECT).to_pylist()
    assert {r[C.UID] for r in rejects} == set(keep) - expected
    assert {r[C.REASON] for r in rejects} == {"balanced_out"} and stats["rejected"] == {"balanced_out": len(rejects)}
    qc = {r[C.QUERY]: r for r in schemas.read_table(tmp_path / "last" / shard.QUERY_COUNTS_DIR,
                                                      schemas.QUERY_COUNTS).to_pylist()}
    assert {q: r[C.MATCH_COUNT] for q, r in qc.items()} == counts
    assert qc["picture"][C.KEEP_PROB] == 6 / counts["picture"] and all(r[C.LANG] == "en" for r in qc.values())
    assert qc["picture"][C.KEPT_COUNT] == sum("picture" in queries[u] for u in expected)
    assert "balanced last" in (tmp_path / "last" / shard.CARD_FILE).read_text()
    # the same bytes with one worker and small ranges, and the tail untouched
    again = shard.run(_balance_argv(root, curated, tmp_path / "again", "--balance", "last", "--t", "6",
                                    "--direct_num_workers=1", "--range-rows=5"))
    assert again["kept"] == stats["kept"] and _files(tmp_path / "again") == _files(tmp_path / "last")
    assert all(u in expected for u in keep if queries[u][0].startswith("tail"))


def test_balance_online_keeps_every_sample_with_its_probability(made, tmp_path):
    from pipeline import balance

    root, _, _ = made
    curated, queries = _with_queries(root, tmp_path)
    keep = schemas.read_table(root / "dedupe" / "keep", schemas.KEEP)[C.UID].to_pylist()
    stats = shard.run(_balance_argv(root, curated, tmp_path / "online", "--balance", "online", "--target-size", "20"))
    assert stats["ledger_ok"] and stats["kept"] == len(keep) and stats["rejected"] == {}
    index = schemas.read_table(tmp_path / "online" / shard.INDEX_DIR, schemas.SHARD_INDEX).to_pylist()
    counts = {}
    for u in keep:
        for q in queries[u]:
            counts[q] = counts.get(q, 0) + 1
    t = stats["t"]
    assert abs(balance.expected_size(counts.values(), t) - 20) < 1e-6
    for row in index:
        assert row[C.KEEP_PROB] == pytest.approx(balance.keep_probability([counts[q] for q in queries[row[C.UID]]], t))
    assert stats["expected_samples_per_epoch"] == pytest.approx(sum(r[C.KEEP_PROB] for r in index), abs=0.1)
    assert "trainer draws" in shard.summary({**stats, "output": "x"})


@pytest.mark.parametrize("extra, words", [
    (["--t", "5"], "--balance last"),
    (["--balance", "last", "--t", "0"], "positive"),
    (["--balance", "last", "--t", "5", "--target-size", "9"], "give one"),
    (["--balance", "sometimes"], "invalid choice"),
])
def test_balance_flags_are_checked(made, tmp_path, extra, words, capsys):
    root, _, _ = made
    argv = _argv(root, tmp_path / "o", *extra)
    try:
        shard.run(argv)
    except schemas.UserError as e:
        message = str(e)
    except SystemExit as e:
        assert e.code == 2
        message = capsys.readouterr().err
    else:
        raise AssertionError("accepted")
    assert words in message


def test_per_language_t_balances_each_language_at_englishs_tail_share(made, tmp_path):
    import pyarrow as pa

    from pipeline import balance

    root, _, _ = made
    cur = schemas.read_table(root / "curate" / "curated", schemas.CURATED).to_pylist()
    for n, row in enumerate(cur):  # a third Chinese with a head entry of its own, the rest English
        lang = "zh" if n % 3 == 0 else "en"
        row[C.LANG] = lang
        row[C.MATCHED_QUERIES] = (["图片"] if lang == "zh" else ["picture"]) if n % 4 else [f"tail{n % 7}"]
    folder = tmp_path / "curate" / "curated"
    schemas.write_table(pa.Table.from_pylist(cur, schema=schemas.CURATED), folder / "part.parquet", schemas.CURATED)
    by_uid = {r[C.UID]: r for r in cur}
    keep = schemas.read_table(root / "dedupe" / "keep", schemas.KEEP)[C.UID].to_pylist()
    counts: dict = {}
    for u in keep:
        for q in by_uid[u][C.MATCHED_QUERIES]:
            counts[by_uid[u][C.LANG], q] = counts.get((by_uid[u][C.LANG], q), 0) + 1
    want = balance.language_budgets(counts, 6)
    assert want["en"] == 6 and want["zh"] != 6
    stats = shard.run(_balance_argv(root, tmp_path / "curate", tmp_path / "o", "--balance", "online", "--t", "6",
                                    "--per-language-t"))
    assert stats["ledger_ok"] and stats["t"] == 6 and stats["t_by_language"] == want
    for row in schemas.read_table(tmp_path / "o" / shard.INDEX_DIR, schemas.SHARD_INDEX).to_pylist():
        lang = by_uid[row[C.UID]][C.LANG]
        assert row[C.KEEP_PROB] == pytest.approx(balance.keep_probability(
            [counts[lang, q] for q in by_uid[row[C.UID]][C.MATCHED_QUERIES]], want[lang]))
    assert "by English's tail share (" in shard.summary({**stats, "output": "x"})
    sections = stats["by_language"]  # a section per language, adding up to the whole
    assert sorted(sections) == ["en", "zh"] and sections["zh"]["t"] == want["zh"]
    assert sum(sec["in"] for sec in sections.values()) == stats["kept"]
    assert sum(sec["expected_samples_per_epoch"] for sec in sections.values()) == pytest.approx(
        stats["expected_samples_per_epoch"], abs=0.2)
    assert "  zh " in shard.summary({**stats, "output": "x"})
