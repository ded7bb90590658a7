"""`openwit extract`: pure link/record functions, the ledger against the synthetic crawl's
ground truth, damaged input, url lists, and the Beam job."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

import schemas
from schemas import columns as C
from pipeline import extract, textclean
from schemas import fileio
from pipeline.extract import ExtractConfig, RecordProblem, html_page, process_file, resolve, text_problem, wat_page
from pipeline.robots import opted_out
from pipeline.synth import crawl
from pipeline.synth.crawl import _gzip_member, warc_record
from pipeline.warc import Record

CFG = ExtractConfig()
IN_MEMORY = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def warc_crawl(tmp_path_factory, small_crawl):
    out = tmp_path_factory.mktemp("warc-crawl")
    cfg = crawl.CrawlConfig(pages=150, seed=3, pages_per_file=75, hosts=tuple(small_crawl[1]["hosts"]), warc=True)
    return out, crawl.generate(cfg, out, workers=2)


# -- pure functions --------------------------------------------------------------------------

@pytest.mark.parametrize("anchor, src, want", [
    ("http://h/a/page.html", "img/x.jpg", "http://h/a/img/x.jpg"),
    ("http://h/a/page.html", "/x.jpg", "http://h/x.jpg"),
    ("http://h/a/page.html", "//cdn/x.jpg", "http://cdn/x.jpg"),
    ("https://h/", "  \n http://o/x.jpg \t", "http://o/x.jpg"),
    (None, "https://o/x.jpg?a=1#f", "https://o/x.jpg?a=1#f"),
])
def test_resolve_accepts(anchor, src, want):
    assert resolve(anchor, src, 4096) == (want, None, "")


@pytest.mark.parametrize("anchor, src, reason", [
    ("http://h/", "data:image/gif;base64,R0lG", "not_http"),
    ("http://h/", "JavaScript:void(0)", "not_http"),
    ("http://h/", "ftp://h/x.jpg", "not_http"),
    ("http://h/", "", "invalid_url"),
    ("http://h/", None, "invalid_url"),
    ("http://h/", "http://[::1/x.jpg", "invalid_url"),
    ("http://h/", "http://h:99999/x.jpg", "invalid_url"),
    (None, "http:///x.jpg", "invalid_url"),
    ("http://h/", "http://h/a b.jpg", "invalid_url"),
    (None, "example.com/x.jpg", "invalid_url"),
    ("http://h/", "http://h/" + "a" * 5000, "invalid_url"),
])
def test_resolve_rejects(anchor, src, reason):
    url, got, _ = resolve(anchor, src, 4096)
    assert url is None and got == reason


def test_text_problem_and_robots():
    assert text_problem("a red star", 100) is None
    assert text_problem(None, 100)[0] == text_problem("  \n", 100)[0] == "empty_alt"
    assert text_problem("x" * 101, 100)[0] == "alt_too_long"
    assert text_problem("bad \ufffd byte", 100)[0] == "undecodable_text"
    assert text_problem("lone \ud800", 100)[0] == "undecodable_text"
    assert opted_out(["index, NoAI"]) and opted_out(["noimageai"]) and opted_out(["none"])
    assert not opted_out(["index, follow", "noarchive"])
    assert opted_out(["noimageai, googlebot: noindex"]) and opted_out(["index, follow, openwit: noimageai"])
    assert not opted_out(["googlebot: noindex"])


def _wat(envelope: object, uri: str = "http://h/p.html") -> Record:
    body = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    return Record(0, {"warc-type": "metadata", "warc-target-uri": uri}, body)


def test_wat_page_reads_links_base_and_robots():
    env = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://h/a/p.html"},
           "Payload-Metadata": {"HTTP-Response-Metadata": {"Headers": {"X-Robots-Tag": "noai"},
           "HTML-Metadata": {"Head": {"Base": "/static/"}, "Links": [
               {"path": "A@/href", "url": "/x"}, {"path": "IMG@/src", "url": "i.jpg", "alt": "a cat"},  # not-a-column
               {"path": "IMG@/src", "url": "j.jpg"}]}}}}}  # not-a-column
    page = wat_page(_wat(env))
    assert page.url == "http://h/a/p.html" and page.base == "http://h/static/" and page.opted_out
    assert page.images == [("i.jpg", {"alt": "a cat"}), ("j.jpg", {})]
    assert wat_page(_wat({"Envelope": {"WARC-Header-Metadata": {}, "Payload-Metadata": {}}})) is None
    for body, reason in ((b"{not json", "bad_json"), (b'{"a": "\xff"}', "undecodable_text"),
                         ({"Container": {}}, "missing_field"), ([1, 2], "missing_field")):
        with pytest.raises(RecordProblem) as e:
            wat_page(_wat(body))
        assert e.value.reason == reason


def _response(http: bytes, uri: str = "http://h/a/p.html") -> Record:
    return Record(0, {"warc-type": "response", "warc-target-uri": uri,
                      "content-type": "application/http; msgtype=response"}, http)


def test_html_page_decodes_chunked_gzip_and_charsets():
    html = '<html><head><base href="/b/"><meta name="Robots" content="NOINDEX"></head><body>' \
           '<img src="x.jpg" alt="caf\u00e9 &amp; cr\u00e8me"><img src="y.jpg"><img alt="no src"></body></html>'
    entity = gzip.compress(html.encode("latin-1"))
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(entity), entity)
    http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=ISO-8859-1\r\n"
            b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    page = html_page(_response(http))
    assert page.base == "http://h/b/" and page.opted_out
    assert page.images == [("x.jpg", {"alt": "caf\u00e9 & cr\u00e8me"}), ("y.jpg", {}), (None, {"alt": "no src"})]
    assert html_page(_response(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n<img src=a alt=b>")) is None
    assert html_page(_response(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n\x89PNG")) is None
    with pytest.raises(RecordProblem, match="status line"):
        html_page(_response(b"garbage\r\n\r\n"))


# -- the ledger on the synthetic crawl -------------------------------------------------------

EXPECTED_REASON = {"no_alt": "empty_alt", "data_url": "not_http", "page_opted_out": "page_opted_out",
                   crawl.HUGE_ALT: "alt_too_long"}


def _read(path: str, schema: pa.Schema) -> list[dict]:
    return schemas.read_table(path, schema).to_pylist()


def test_every_link_is_kept_or_rejected_as_the_ground_truth_says(small_crawl, tmp_path):
    folder, manifest = small_crawl
    truth = schemas.read_table(folder / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH).to_pylist()
    reports = [extract.process_file(str(folder / p), str(tmp_path), CFG)
               for p in (folder / crawl.WAT_PATHS).read_text().split()]
    total = extract.merge_reports(reports)
    assert total["links"] == len(truth) == total["candidates"] + sum(total["rejected"].values())
    assert not total["errors"]
    cands = {(r[C.SOURCE_FILE], r[C.SOURCE_OFFSET], r[C.URL], r[C.TEXT]): r
             for f in (tmp_path / "candidates").iterdir() for r in _read(f, schemas.CANDIDATE)}
    rejects = [r for f in (tmp_path / "rejects").iterdir() for r in _read(f, schemas.REJECT)]
    assert len(cands) == total["candidates"] and len(rejects) == sum(total["rejected"].values())
    want_rejected = {}
    for row in truth:
        reason = EXPECTED_REASON.get(row[C.KIND])
        if row[C.KIND] == "long_alt" and len(row[C.TEXT]) > CFG.max_alt_chars:
            reason = "alt_too_long"
        text = textclean.normalize(row[C.TEXT]) if row[C.TEXT] is not None else None
        key = (row[C.SOURCE_FILE], row[C.SOURCE_OFFSET], row[C.URL], text)
        if reason is None:
            cand = cands[key]  # the repaired text, and the uid fixed on it
            assert cand[C.UID] == schemas.uid(row[C.URL], text)
            assert cand[C.PAGE_URL] == row[C.PAGE_URL] and cand[C.SOURCE_FORMAT] == "wat"
        else:
            assert key not in cands
            want_rejected[reason] = want_rejected.get(reason, 0) + 1
    assert want_rejected == total["rejected"]
    assert {r[C.REASON] for r in rejects} == set(want_rejected)
    assert all(r[C.STAGE] == "extract" and r[C.SOURCE_OFFSET] > 0 for r in rejects)


def test_warc_html_and_wat_give_the_same_candidates(warc_crawl, tmp_path):
    folder, _ = warc_crawl
    uids = {}
    for kind in ("wat", "warc"):
        out = tmp_path / kind
        for p in (folder / f"{kind}.paths").read_text().split():
            extract.process_file(str(folder / p), str(out), CFG)
        rows = [r for f in (out / "candidates").iterdir() for r in _read(f, schemas.CANDIDATE)]
        uids[kind] = sorted(r[C.UID] for r in rows)
        assert {r[C.SOURCE_FORMAT] for r in rows} == {kind}
    assert uids["wat"] == uids["warc"] and len(uids["wat"]) > 1000


def test_damaged_wat_costs_only_the_damaged_records(small_crawl, tmp_path):
    folder, _ = small_crawl
    good = (folder / (folder / crawl.WAT_PATHS).read_text().split()[0]).read_bytes()
    records = list(extract.read_records(io.BytesIO(good)))
    members = []
    pos = 0
    for r, nxt in zip(records, [*records[1:], None]):
        end = nxt.offset if nxt else len(good)
        members.append(good[pos:end])
        pos = end
    page_uri = ("WARC-Target-URI", "http://127.0.0.1:1/p.html")
    junk_json = _gzip_member(warc_record([("WARC-Type", "metadata"), page_uri], b"{this is not json"))
    no_keys = _gzip_member(warc_record([("WARC-Type", "metadata"), page_uri], b'{"Envelope": 5}'))
    not_utf8 = _gzip_member(warc_record([("WARC-Type", "metadata"), page_uri], b'{"a": "\xff\xfe"}'))
    bad_links = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://127.0.0.1:1/p.html"},
                 "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": [
                     {"path": "IMG@/src", "url": "http://[bad/x.jpg", "alt": "a red star"},  # not-a-column
                     {"path": "IMG@/src", "url": "/ok.jpg", "alt": "x" * (1 << 20)},  # not-a-column
                     {"path": "IMG@/src", "url": "/ok2.jpg", "alt": "bad \udc80 surrogate"},  # not-a-column
                     {"path": "IMG@/src", "url": 42, "alt": "a blue circle"},  # not-a-column
                     {"path": "IMG@/src", "url": "/fine.jpg", "alt": "a blue circle"}]}}}}}  # not-a-column
    links = _gzip_member(warc_record([("WARC-Type", "metadata"), page_uri], json.dumps(bad_links).encode()))
    truncated = members[5][: len(members[5]) // 2]
    damaged = b"".join([*members[:5], truncated, junk_json, b"\x00binary junk\xff" * 50, no_keys,
                        not_utf8, links, *members[6:]])
    path = tmp_path / "damaged.warc.wat.gz"
    path.write_bytes(damaged)
    report = extract.process_file(str(path), str(tmp_path / "out"), CFG)
    assert report["errors"] == {"bad_gzip": 2, "bad_json": 1, "missing_field": 1, "undecodable_text": 1}
    clean = extract.process_file(str(folder / (folder / crawl.WAT_PATHS).read_text().split()[0]),
                                 str(tmp_path / "clean"), CFG)
    lost = [r for r in records[5:6]]
    lost_links = len(extract.wat_page(lost[0]).images) if extract.wat_page(lost[0]) else 0
    assert report["links"] == clean["links"] - lost_links + 5
    assert report["candidates"] == report["links"] - sum(report["rejected"].values())
    assert report["rejected"]["invalid_url"] == clean["rejected"].get("invalid_url", 0) + 2
    assert report["rejected"]["alt_too_long"] == clean["rejected"]["alt_too_long"] + 1
    assert report["rejected"]["undecodable_text"] == 1


# -- url lists -------------------------------------------------------------------------------

def test_url_lists_in_every_format(tmp_path):
    rows = [("http://h/a.jpg", "a red star"), ("not a url", "x"), ("http://h/b.jpg", ""),
            ("https://h/c.jpg", "caf\u00e9 \u2013 ok")]
    with open(tmp_path / "l.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", C.URL, C.CAPTION])
        w.writerows([(i, u, c) for i, (u, c) in enumerate(rows)])
        fh.write("99\n")  # a short row
    with gzip.open(tmp_path / "l.tsv.gz", "wt", newline="") as fh:
        fh.write(f"{C.URL}\t{C.CAPTION}\n" + "".join(f"{u}\t{c}\n" for u, c in rows))
    with open(tmp_path / "l.jsonl", "w") as fh:
        fh.writelines(json.dumps({C.URL: u, C.CAPTION: c}) + "\n" for u, c in rows)
        fh.write("{broken\n" + json.dumps({C.URL: "http://h/d.jpg"}) + "\n")
    pq.write_table(pa.table({C.URL: [u for u, _ in rows], C.CAPTION: [c for _, c in rows]}), tmp_path / "l.parquet")
    pq.write_table(pa.table({"link": ["http://h/a.jpg"]}), tmp_path / "nocol.parquet")
    for name, errors in (("l.csv", {"bad_row": 1}), ("l.tsv.gz", {}), ("l.jsonl", {"bad_json": 1, "bad_row": 1}),
                         ("l.parquet", {})):
        report = extract.process_file(str(tmp_path / name), str(tmp_path / "out"), CFG)
        assert report["links"] == 4 and report["candidates"] == 2, name
        assert report["rejected"] == {"empty_alt": 1, "invalid_url": 1}, name
        assert report["errors"] == errors, name
        cands = _read(extract.output_paths(str(tmp_path / "out"), name)["candidates"], schemas.CANDIDATE)
        assert [c[C.TEXT] for c in cands] == ["a red star", "caf\u00e9 \u2013 ok"]
        assert {c[C.SOURCE_FORMAT] for c in cands} == {"list"}
    report = extract.process_file(str(tmp_path / "nocol.parquet"), str(tmp_path / "out"), CFG)
    assert report["errors"] == {"bad_row": 1} and report["links"] == 0


# -- Beam ------------------------------------------------------------------------------------

def test_extract_candidates_transform(small_crawl, tmp_path):
    folder, _ = small_crawl
    files = [str(folder / p) for p in (folder / crawl.WAT_PATHS).read_text().split()]
    expected = [extract.process_file(f, str(tmp_path / "direct"), CFG)[key] for f in files for key in ("links",)]
    with BeamTestPipeline(argv=IN_MEMORY) as p:
        links = (p | beam.Create([(f, os.path.basename(f)) for f in files])
                 | extract.ExtractCandidates(str(tmp_path / "beam"), CFG)
                 | beam.Map(lambda r: r["links"]))
        assert_that(links, equal_to(expected))


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_run_is_deterministic_across_runners_and_reruns(small_crawl, tmp_path):
    folder, _ = small_crawl
    paths = str(folder / crawl.WAT_PATHS)
    a = extract.run(["--input", paths, "--output", str(tmp_path / "a"), *IN_MEMORY])
    b = extract.run(["--input", paths, "--output", str(tmp_path / "b"), "--runner=FnApiRunner",
                     "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert a["candidates"] == b["candidates"] > 0 and a["files"] == 2
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    before = _digests(tmp_path / "a")
    extract.run(["--input", paths, "--output", str(tmp_path / "a"), *IN_MEMORY])  # rerun: skips, same bytes
    assert _digests(tmp_path / "a") == before


@pytest.mark.parametrize("head, header, opted", [
    ('<meta name="openwit" content="noimageai">', "", True),
    ('<meta name="googlebot" content="noindex">', "", False),
    ('<meta name="robots" content="none">', "", True),
    ("", "X-Robots-Tag: noimageai, googlebot: noindex\r\n", True),
    ("", "X-Robots-Tag: index, follow, openwit: noimageai\r\n", True),
    ("", "X-Robots-Tag: googlebot: noindex\r\n", False),
])
def test_page_opt_outs_use_the_download_stage_grammar(head, header, opted):
    html = f"<html><head>{head}</head><body><img src=a.jpg alt=b></body></html>".encode()
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n" + header.encode() + b"\r\n" + html
    assert html_page(_response(http)).opted_out is opted
    env = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://h/p.html"},
           "Payload-Metadata": {"HTTP-Response-Metadata": {
               "Headers": dict([header.strip().split(": ", 1)]) if header else {},
               "HTML-Metadata": {"Head": {"Metas": [{"name": n, "content": c} for n, c in
                                                    re.findall(r'name="(\w+)" content="(\w+)"', head)]},
                                 "Links": []}}}}}
    assert wat_page(_wat(env)).opted_out is opted


def test_two_inputs_with_one_name_are_refused_in_one_line(tmp_path):
    for name in ("a/1.wat.gz", "b/1.wat.gz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert fileio.named_inputs([str(tmp_path / "a" / "1.wat.gz")]) == [(str(tmp_path / "a" / "1.wat.gz"), "1.wat.gz")]
    with pytest.raises(schemas.UserError, match="are both named 1.wat.gz"):
        fileio.named_inputs([str(tmp_path / "a" / "1.wat.gz"), str(tmp_path / "b" / "1.wat.gz")])


# -- text sources: alt, title, data-image-title ----------------------------------------------

def _wat_file(path: Path, links: list[dict]) -> Path:
    """A one-record WAT file (gzip member, as Common Crawl writes them) with these links."""
    env = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://h/p.html"},
           "Payload-Metadata": {"HTTP-Response-Metadata": {"Headers": {}, "HTML-Metadata": {
               "Head": {}, "Links": links}}}}}
    record = warc_record([("WARC-Type", "metadata"), ("WARC-Target-URI", "http://h/p.html"),
                          ("Content-Type", "application/json")], json.dumps(env).encode())
    path.write_bytes(_gzip_member(record))
    return path


LINKS = [  # not-a-column: WAT link keys
    {"path": "IMG@/src", "url": "http://h/1.jpg", "alt": "a red star", "title": "Red star icon"},  # not-a-column
    {"path": "IMG@/src", "url": "http://h/2.jpg", "title": "a blue circle", "data-image-title": "a blue circle"},  # not-a-column
    {"path": "IMG@/src", "url": "http://h/3.jpg", "alt": "  ", "data-image-title": "green square photo"},  # not-a-column
    {"path": "IMG@/src", "url": "http://h/4.jpg"},  # not-a-column
    {"path": "IMG@/src", "url": "data:image/png;base64,xx", "alt": "inline", "title": "inline too"},  # not-a-column
    {"path": "IMG@/src", "url": "http://h/5.jpg", "alt": "x" * 50, "title": "a short title"},  # not-a-column
]


def test_alt_title_and_data_image_title_are_read_and_recorded(tmp_path):
    wat = _wat_file(tmp_path / "a.wat.gz", LINKS)
    cfg = ExtractConfig(max_alt_chars=40)
    report = process_file(str(wat), str(tmp_path / "out"), cfg)
    rows = _read(str(tmp_path / "out" / "candidates"), schemas.CANDIDATE)
    got = sorted((r[C.URL], r[C.TEXT_SOURCE], r[C.TEXT]) for r in rows)
    assert got == [("http://h/1.jpg", "alt", "a red star"), ("http://h/1.jpg", "title", "Red star icon"),
                   ("http://h/2.jpg", "title", "a blue circle"),  # the same text twice: once
                   ("http://h/3.jpg", "data-image-title", "green square photo"),  # a blank alt is no text
                   ("http://h/5.jpg", "title", "a short title")]
    assert all(r[C.UID] == schemas.uid(r[C.URL], r[C.TEXT]) for r in rows)
    # the ledger: a link once per distinct text, once when rejected as a link
    assert report["images"] == 6 and report["candidates"] == 5
    assert report["rejected"] == {"empty_alt": 1, "not_http": 1, "alt_too_long": 1}
    assert report["links"] == report["candidates"] + sum(report["rejected"].values()) == 8
    only_alt = process_file(str(wat), str(tmp_path / "alt"), dataclasses.replace(cfg, text_sources=("alt",)))
    assert only_alt["candidates"] == 1 and only_alt["rejected"]["empty_alt"] == 3  # was the only reading before


def test_one_text_per_image_is_a_seeded_draw_among_usable_texts(tmp_path):
    links = [{"path": "IMG@/src", "url": f"http://h/{i}.jpg", "alt": f"alt text {i}",  # not-a-column
              "title": f"title text {i}", "data-image-title": f"data title {i}"} for i in range(300)]
    links.append({"path": "IMG@/src", "url": "http://h/long.jpg", "alt": "y" * 50, "title": "the usable one"})  # not-a-column
    wat = _wat_file(tmp_path / "b.wat.gz", links)
    picks = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"out{seed}-{len(picks)}"
        cfg = ExtractConfig(max_alt_chars=40, one_text=True, seed=seed)
        report = process_file(str(wat), str(out), cfg)
        assert report["links"] == report["images"] == report["candidates"] == 301  # one text per image
        rows = _read(str(out / "candidates"), schemas.CANDIDATE)
        picks.setdefault(seed, []).append({r[C.URL]: r[C.TEXT_SOURCE] for r in rows})
    a, b = picks[0]
    assert a == b  # the same seed draws the same texts
    assert a != picks[1][0]  # another seed draws others
    assert a["http://h/long.jpg"] == "title"  # only among the usable texts
    shares = Counter(a.values())
    assert all(70 <= shares[k] <= 130 for k in ("alt", "title", "data-image-title")), shares


def test_html_images_give_their_titles_too():
    html = ('<html><body><img src="a.jpg" title="a yellow star" data-image-title="Yellow star">'
            '<img src="b.jpg" alt="plain alt"></body></html>')
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + html.encode()
    page = html_page(_response(http))
    assert page.images == [("a.jpg", {"title": "a yellow star", "data-image-title": "Yellow star"}),
                           ("b.jpg", {"alt": "plain alt"})]


def test_text_source_flags(tmp_path):
    wat = _wat_file(tmp_path / "c.wat.gz", LINKS)
    for bad in ("alt,caption", "", "alt,alt"):
        with pytest.raises(schemas.UserError, match="--text-sources"):
            extract.run(["--input", str(wat), "--output", str(tmp_path / "x"), "--text-sources", bad])
    stats = extract.run(["--input", str(wat), "--output", str(tmp_path / "o"), "--text-sources", "title",
                         "--runner=FnApiRunner"])
    assert stats["candidates"] == 3 and stats["images"] == 6
    # a rerun with other settings does not reuse the finished file
    stats = extract.run(["--input", str(wat), "--output", str(tmp_path / "o"), "--runner=FnApiRunner"])
    assert stats["candidates"] == 6
