"""pipeline/warc.py: records and offsets as Common Crawl's readers see them, and damage
reported with its offset while reading goes on."""

from __future__ import annotations

import gzip
import io
import random

from warcio.archiveiterator import ArchiveIterator

from pipeline.synth.crawl import _gzip_member, warc_record
from pipeline.warc import Record, ReadError, read_records

RECORDS = [warc_record([("WARC-Type", "metadata"), ("WARC-Target-URI", f"http://x/{i}")],
                       b'{"n": %d}' % i * (i + 1)) for i in range(40)]
MEMBERS = [_gzip_member(r) for r in RECORDS]
GOOD = b"".join(MEMBERS)
OFFSETS = [sum(len(m) for m in MEMBERS[:i]) for i in range(len(MEMBERS))]


def split(data: bytes, **kw) -> tuple[list[Record], list[ReadError]]:
    out = list(read_records(io.BytesIO(data), **kw))
    return [o for o in out if isinstance(o, Record)], [o for o in out if isinstance(o, ReadError)]


def test_offsets_and_bodies_match_warcio():
    records, errors = split(GOOD)
    assert not errors
    it = ArchiveIterator(io.BytesIO(GOOD))
    assert [r.offset for r in records] == [it.get_record_offset() for _ in it] == OFFSETS
    assert [r.body for r in records] == [b'{"n": %d}' % i * (i + 1) for i in range(40)]
    assert records[3].headers["warc-target-uri"] == "http://x/3" and records[3].type == "metadata"


def test_plain_and_whole_file_gzip():
    plain, errors = split(b"".join(RECORDS))
    assert not errors and [r.body for r in plain] == [r.body for r in split(GOOD)[0]]
    whole, errors = split(gzip.compress(b"".join(RECORDS), mtime=0))
    assert not errors and len(whole) == 40


def test_truncated_member_in_the_middle_loses_only_that_record():
    bad = b"".join(MEMBERS[:10]) + MEMBERS[10][: len(MEMBERS[10]) // 2] + b"".join(MEMBERS[11:])
    records, errors = split(bad)
    assert len(records) == 39
    assert [(e.offset, e.reason) for e in errors] == [(OFFSETS[10], "bad_gzip")]
    assert records[10].body == split(GOOD)[0][11].body


def test_truncated_end_corrupt_bytes_and_junk():
    records, errors = split(GOOD[:-15])
    assert len(records) == 39 and errors[0].reason == "bad_gzip" and "truncated" in errors[0].detail
    corrupt = bytearray(MEMBERS[20])
    corrupt[12:24] = b"\x00" * 12
    records, errors = split(b"".join(MEMBERS[:20]) + bytes(corrupt) + b"".join(MEMBERS[21:]))
    assert len(records) == 39 and [e.offset for e in errors] == [OFFSETS[20]]
    records, errors = split(b"".join(MEMBERS[:5]) + b"junk" * 30 + b"".join(MEMBERS[5:]))
    assert len(records) == 40 and len(errors) == 1 and errors[0].offset == OFFSETS[5]


def test_binary_junk_and_empty_input():
    records, errors = split(random.Random(0).randbytes(50_000))
    assert not records and len(errors) == 1 and errors[0].reason == "bad_record"
    assert split(b"") == ([], [])


def test_oversized_records_are_skipped_not_held():
    records, errors = split(GOOD, max_record_bytes=150)
    assert all(len(r.body) <= 150 for r in records)
    assert len(records) + len(errors) == 40
    assert all(e.reason == "bad_record" and "skipped" in e.detail for e in errors)
    plain_records, plain_errors = split(b"".join(RECORDS), max_record_bytes=150)
    assert len(plain_records) == len(records) and len(plain_errors) == len(errors)


def test_bad_headers():
    no_length = b"WARC/1.0\r\nWARC-Type: metadata\r\n\r\nbody\r\n\r\n"
    records, errors = split(no_length + RECORDS[1])
    assert len(records) == 1 and errors[0].reason == "bad_record" and "Content-Length" in errors[0].detail
    records, errors = split(RECORDS[39][:-30])
    assert not records and "of" in errors[0].detail
