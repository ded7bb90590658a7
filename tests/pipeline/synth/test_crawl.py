"""The synthetic crawl's files: real Common Crawl WAT layout, ground truth that is true,
determinism per seed."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin

import ftfy
import pyarrow.compute as pc
import pytest
from fastwarc.warc import ArchiveIterator as FastArchiveIterator
from fastwarc.warc import WarcRecordType
from langdetect import DetectorFactory, detect
from warcio.archiveiterator import ArchiveIterator

import schemas
from schemas import columns as C
from pipeline.synth import crawl
from pipeline.synth.world import COLOURS, SHAPES, heldout_combos, parse_token


def truth(folder: Path):
    return schemas.read_table(folder / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)


def wat_files(folder: Path) -> list[Path]:
    return [folder / line for line in (folder / crawl.WAT_PATHS).read_text().split()]


def html_metadata(envelope: dict) -> dict | None:
    response = envelope["Envelope"]["Payload-Metadata"].get("HTTP-Response-Metadata", {})
    return response.get("HTML-Metadata")


def test_layout_and_manifest(small_crawl):
    folder, manifest = small_crawl
    files = wat_files(folder)
    assert len(files) == manifest["files"] == 2
    assert all(f.name.startswith("CC-MAIN-") and f.name.endswith(".warc.wat.gz") for f in files)
    table = truth(folder)
    kinds = Counter(table[C.KIND].to_pylist())
    assert sum(kinds.values()) == manifest["counts"]["links"] == table.num_rows
    for kind, n in kinds.items():
        assert manifest["counts"][kind] == n
    assert set(kinds) <= set(crawl.ALL_KINDS)
    # the small crawl is big enough to hold every kind and every fault
    assert set(crawl.KIND_MIX) <= set(kinds)
    faults = set(table.filter(pc.equal(table[C.KIND], "faulty"))[C.FAULT].to_pylist())
    assert faults == set(crawl.SERVER_FAULTS)


def test_wat_files_parse_with_warcio_like_common_crawl(small_crawl):
    folder, _ = small_crawl
    table = truth(folder)
    by_offset: dict[tuple[str, int], list[dict]] = {}
    for row in table.to_pylist():
        by_offset.setdefault((row[C.SOURCE_FILE], row[C.SOURCE_OFFSET]), []).append(row)
    seen = 0
    for path in wat_files(folder):
        with open(path, "rb") as fh:
            it = ArchiveIterator(fh)
            records = []
            for record in it:
                records.append(record.rec_type)
                if record.rec_type != "metadata":
                    continue
                assert record.rec_headers.get_header("Content-Type") == "application/json"
                assert record.rec_headers.get_header("WARC-Refers-To").startswith("<urn:uuid:")
                envelope = json.loads(record.content_stream().read())
                headers = envelope["Envelope"]["WARC-Header-Metadata"]
                assert headers["WARC-Target-URI"] == record.rec_headers.get_header("WARC-Target-URI")
                assert envelope["Container"]["Filename"].endswith(".warc.gz")
                html = html_metadata(envelope)
                if html is None:
                    continue
                rows = by_offset.get((path.name, it.get_record_offset()), [])
                imgs = [link for link in html["Links"] if link["path"] == "IMG@/src"]
                assert [i["url"] for i in imgs] == [r[C.SRC] for r in rows]  # not-a-column
                assert [i.get("alt") for i in imgs] == [r[C.TEXT] for r in rows]
                page_url = headers["WARC-Target-URI"]
                for link, row in zip(imgs, rows):
                    assert row[C.PAGE_URL] == page_url
                    if row[C.URL].startswith("http"):
                        anchor = html["Head"].get("Base") or page_url
                        assert urljoin(anchor, link["url"].strip()) == row[C.URL]  # not-a-column
                seen += len(rows)
        assert records[0] == "warcinfo"
        assert set(records[1:]) == {"metadata"}
    assert seen == table.num_rows


def test_every_record_is_its_own_gzip_member(small_crawl):
    folder, _ = small_crawl
    path = wat_files(folder)[0]
    data = path.read_bytes()
    pos, members = 0, 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        record = d.decompress(data[pos:])
        assert record.startswith(b"WARC/1.0\r\n") and record.endswith(b"\r\n\r\n")
        pos = len(data) - len(d.unused_data)
        members += 1
    with open(path, "rb") as fh:
        assert members == sum(1 for _ in ArchiveIterator(fh))


def test_fastwarc_reads_the_same_records(small_crawl):
    folder, _ = small_crawl
    table = truth(folder)
    for path in wat_files(folder):
        offsets = []
        with open(path, "rb") as fh:
            for record in FastArchiveIterator(fh, record_types=WarcRecordType.metadata):
                envelope = json.loads(record.reader.read())
                if html_metadata(envelope):
                    offsets.append(record.stream_pos)
        with open(path, "rb") as fh:
            it = ArchiveIterator(fh)
            expected = [it.get_record_offset() for r in it
                        if r.rec_type == "metadata" and html_metadata(json.loads(r.content_stream().read()))]
        assert offsets == expected
        rows = table.filter(pc.equal(table[C.SOURCE_FILE], path.name))
        assert set(rows[C.SOURCE_OFFSET].to_pylist()) <= set(offsets)


def test_generation_is_deterministic_per_seed_whatever_the_workers(tmp_path, small_crawl):
    _, manifest = small_crawl
    cfg = crawl.CrawlConfig(pages=90, seed=11, pages_per_file=30, hosts=tuple(manifest["hosts"]))

    def digest(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    crawl.generate(cfg, tmp_path / "a", workers=1)
    crawl.generate(cfg, tmp_path / "b", workers=3)
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    # WAT + truth per file, 2 lists, eval images, the benchmark's 4 sets (18 files)
    assert a == b and len(a) == 3 * 2 + 2 + cfg.eval_size + 18
    other = crawl.CrawlConfig(pages=90, seed=12, pages_per_file=30, hosts=tuple(manifest["hosts"]))
    crawl.generate(other, tmp_path / "c", workers=2)
    c = digest(tmp_path / "c")
    assert all(a[k] != c[k] for k in a if k.startswith(crawl.WAT_DIR + "/"))


def test_heldout_combinations_appear_only_as_evaluation_items(small_crawl):
    folder, manifest = small_crawl
    heldout = {(SHAPES[s], COLOURS[c]) for s, c in heldout_combos(manifest["seed"])}
    assert sorted(map(list, heldout)) == manifest["heldout_combinations"]
    for row in truth(folder).to_pylist():
        if row[C.SHAPE] is None:
            continue
        is_heldout = (row[C.SHAPE], row[C.COLOUR]) in heldout
        assert is_heldout == (row[C.KIND] == "eval_item") == row[C.HELDOUT], row
        if row[C.HELDOUT]:
            assert 0 <= row[C.EVAL_INDEX] < manifest["eval_size"]


def test_duplicates_point_at_earlier_clean_images(small_crawl):
    folder, _ = small_crawl
    rows = truth(folder).to_pylist()
    clean_urls = {r[C.URL] for r in rows if r[C.KIND] in ("clean", crawl.HUGE_ALT)}
    dups = [r for r in rows if r[C.KIND] in ("duplicate", "near_duplicate")]
    assert dups
    for r in dups:
        assert r[C.DUPLICATE_OF] in clean_urls and r[C.DUPLICATE_OF] != r[C.URL]
        original = parse_token(r[C.DUPLICATE_OF].rsplit("/", 1)[1].split(".")[0])
        mine = parse_token(r[C.IMAGE_TOKEN])
        if r[C.KIND] == "duplicate":
            assert mine == original
        else:
            assert mine.original() == original and mine.variant_name != "none"


def test_noise_is_what_it_claims(small_crawl):
    folder, _ = small_crawl
    rows = truth(folder).to_pylist()
    DetectorFactory.seed = 0
    foreign = [r for r in rows if r[C.KIND] == "non_english"]
    agree = sum(detect(r[C.TEXT]) == r[C.LANG] for r in foreign)
    assert agree >= 0.8 * len(foreign)
    for r in rows:
        kind, text = r[C.KIND], r[C.TEXT]
        if kind == "mojibake":
            assert text != r[C.CLEAN_CAPTION] and ftfy.fix_encoding(text) == r[C.CLEAN_CAPTION]
        elif kind == "huge_alt":
            assert len(text) == crawl.HUGE_ALT_CHARS
        elif kind == "long_alt":
            assert 1000 <= len(text) < 8000 and text.startswith(r[C.CLEAN_CAPTION])
        elif kind == "no_alt":
            assert text is None or not text.strip()
        elif kind == "data_url":
            assert r[C.URL].startswith("data:") and r[C.SHAPE] is None
        elif kind in ("clean", "duplicate", "near_duplicate", "eval_item"):
            assert text == r[C.CLEAN_CAPTION] and r[C.SHAPE] in text.lower()
        elif kind == "mismatched":  # the alt names another shape and colour than the image
            assert text != r[C.CLEAN_CAPTION] and r[C.SHAPE] in r[C.CLEAN_CAPTION].lower()
            assert r[C.SHAPE] not in text.lower().split() and r[C.COLOUR] not in text.lower().split()
    forms = Counter(("base" if r[C.SRC] != r[C.URL] else "absolute") for r in rows)
    assert forms["base"] > 0  # relative, root-relative and protocol-relative srcs are present


@pytest.mark.slow
def test_many_files_add_up_in_the_manifest(tmp_path):
    cfg = crawl.CrawlConfig(pages=3000, seed=1, pages_per_file=500)
    manifest = crawl.generate(cfg, tmp_path, workers=2)
    assert manifest["files"] == 6
    assert manifest["counts"]["pages"] == 3000
    assert manifest["counts"]["candidates"] > 3000 * 9
