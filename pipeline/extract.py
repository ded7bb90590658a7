"""`openwit extract` (Beam): crawl files -> CANDIDATE rows (image url, text, provenance).

Reads Common Crawl WAT files, WARC files with HTML responses (what wget --warc-file,
Heritrix, StormCrawler or Browsertrix write), and url + caption lists (parquet, csv, tsv,
jsonl; csv/tsv/jsonl optionally gzip). Writes, per input file ``F`` (so outputs are
deterministic, a retried file rewrites the same bytes and a rerun skips finished files):

    OUTPUT/candidates/<F>.parquet   CANDIDATE rows, in file order: the alt text repaired
                                    (``textclean.normalize``) and its uid, fixed here for
                                    every later stage
    OUTPUT/rejects/<F>.parquet      REJECT rows: every dropped link or damaged record
    OUTPUT/files/<F>.json           the file's ledger; written last, it marks the file done
    OUTPUT/extract_stats.json       the job's ledger: links = candidates + sum(rejected)

Texts, as MetaCLIP reads them: an image's alt, title and data-image-title attributes
(--text-sources; WAT link records carry the same keys). Each distinct text of an image is
a candidate of its own, its source in the text_source column; the ledger counts a link
once per distinct text it has (once when it has none, or when the link itself is
rejected), so links = candidates + sum(rejected) still holds. With --one-text-per-image
(MetaCLIP 2's option) one usable text per image is drawn by a hash of (--seed, url).

Files are the unit of parallelism: a crawl has tens of thousands of them, far more than
workers, so per-file reading keeps every worker busy without splitting gzip streams.
A damaged file costs only its damaged records.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator
from urllib.parse import urljoin, urlsplit

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

import schemas
from schemas import columns as C
from pipeline import options, outputs, progress, robots, textclean
from schemas import fileio
from pipeline.warc import Record, ReadError, read_records

SUMMARY = "extract (image url, text) candidates from WAT/WARC files or url lists (Beam)"
STAGE = schemas.run.EXTRACT
FORMATS = ("wat", "warc", "parquet", "csv", "tsv", "jsonl")
NOT_HTTP_SCHEMES = ("data:", "javascript:", "mailto:", "about:", "blob:", "file:", "ftp:", "tel:")
MAX_BODY_BYTES = 32 << 20
BATCH_ROWS = 50_000
STATS_FILE = schemas.run.stage(STAGE).ledger
TEXT_SOURCES = ("alt", "title", "data-image-title")  # HTML attributes (and WAT link keys) read as texts


@dataclass(frozen=True)
class ExtractConfig:
    max_alt_chars: int = 4096
    max_url_chars: int = 4096
    url_col: str = C.URL
    caption_col: str = C.CAPTION
    fmt: str = "auto"
    text_sources: tuple[str, ...] = TEXT_SOURCES
    one_text: bool = False  # MetaCLIP 2: one text per image, drawn by a hash of (seed, url)
    seed: int = 0


@dataclass
class Page:
    """An HTML page's image links, ready for the link verdicts."""

    url: str
    base: str | None
    opted_out: bool
    images: list[tuple[object, dict]]  # (src, {attribute: value}) as found; types are checked later


class RecordProblem(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# -- pure functions: links -------------------------------------------------------------------

def resolve(anchor: str | None, src: object, max_chars: int) -> tuple[str | None, str | None, str]:
    """(url, None, "") for an http(s) link, or (None, reason, detail)."""
    if not isinstance(src, str):
        return None, "invalid_url", f"src is {type(src).__name__}"
    src = src.strip(" \t\n\r\f")
    if not src:
        return None, "invalid_url", "empty src"
    if src[:11].lower().startswith(NOT_HTTP_SCHEMES):
        return None, "not_http", src[:40]
    if len(src) > max_chars:
        return None, "invalid_url", f"url of {len(src)} characters"
    try:
        # Absolute http(s) links (most of them) need no join: it would return them as they are.
        url = urljoin(anchor, src) if anchor and not src.startswith(("http://", "https://")) else src
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        return None, "invalid_url", str(e)[:80]
    if parts.scheme not in ("http", "https"):
        return None, ("invalid_url" if not parts.scheme else "not_http"), url[:80]
    if not parts.hostname or any(c in url for c in " \t\n\r\x00"):
        return None, "invalid_url", url[:80]
    if len(url) > max_chars:
        return None, "invalid_url", f"url of {len(url)} characters"
    return url, None, ""


def text_problem(alt: object, max_chars: int) -> tuple[str, str] | None:
    """(reason, detail) when the alt text cannot be a caption, else None."""
    if not isinstance(alt, str) or not alt.strip():
        return "empty_alt", ""
    if len(alt) > max_chars:
        return "alt_too_long", f"{len(alt)} characters"
    if "\ufffd" in alt:
        return "undecodable_text", "replacement character in text"
    try:
        alt.encode("utf-8")
    except UnicodeEncodeError:
        return "undecodable_text", "lone surrogate in text"
    return None


# -- pure functions: records -----------------------------------------------------------------

def wat_page(record: Record) -> Page | None:
    """The page a WAT metadata record describes, None if it is not an HTML response."""
    if record.type != "metadata":
        return None
    try:
        doc = json.loads(record.body)
    except UnicodeDecodeError:
        raise RecordProblem("undecodable_text", "record is not UTF-8") from None
    except ValueError as e:
        raise RecordProblem("bad_json", str(e)[:80]) from None
    try:
        envelope = doc["Envelope"]
        warc_headers = envelope["WARC-Header-Metadata"]
        payload = envelope.get("Payload-Metadata") or {}
    except (KeyError, TypeError):
        raise RecordProblem("missing_field", "no Envelope.WARC-Header-Metadata") from None
    response = payload.get("HTTP-Response-Metadata") if isinstance(payload, dict) else None
    html = response.get("HTML-Metadata") if isinstance(response, dict) else None
    if not isinstance(html, dict):
        return None
    page_url = warc_headers.get("WARC-Target-URI") if isinstance(warc_headers, dict) else None
    page_url = page_url or record.headers.get("warc-target-uri")
    if not isinstance(page_url, str) or not page_url:
        raise RecordProblem("missing_field", "no WARC-Target-URI")
    head = html.get("Head") if isinstance(html.get("Head"), dict) else {}
    metas = head.get("Metas") if isinstance(head.get("Metas"), list) else []
    meta_pairs = [(str(m.get("name", "")), str(m.get("content", ""))) for m in metas if isinstance(m, dict)]
    headers = response.get("Headers") if isinstance(response.get("Headers"), dict) else {}
    tags = [str(v) for k, v in headers.items() if str(k).lower() == "x-robots-tag"]
    links = html.get("Links") if isinstance(html.get("Links"), list) else []
    images = [(link.get("url"), {k: link.get(k) for k in TEXT_SOURCES if k in link})  # not-a-column
              for link in links if isinstance(link, dict) and link.get("path") == "IMG@/src"]
    base = head.get("Base")
    anchor = urljoin(page_url, base) if isinstance(base, str) and base.strip() else None
    return Page(page_url, anchor, robots.opted_out(tags, meta_pairs), images)


def _http_parts(body: bytes) -> tuple[int, dict[str, str], bytes]:
    end = body.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = body.find(b"\n\n"), 2
    if end < 0:
        raise RecordProblem("bad_record", "HTTP response without header end")
    lines = body[:end].decode("latin-1").splitlines()
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise RecordProblem("bad_record", f"bad HTTP status line {lines[0][:40]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return status, headers, body[end + sep:]


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            break
        try:
            size = int(data[pos:eol].split(b";")[0], 16)
        except ValueError:
            raise RecordProblem("bad_record", "bad chunked encoding") from None
        if size == 0:
            break
        out += data[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2
    return bytes(out)


def _decode_entity(headers: dict[str, str], data: bytes) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        data = _dechunk(data)
    encoding = headers.get("content-encoding", "").lower().strip()
    try:
        if encoding in ("gzip", "x-gzip"):
            d = zlib.decompressobj(31)
            data = d.decompress(data, MAX_BODY_BYTES)
        elif encoding == "deflate":
            d = zlib.decompressobj()
            data = d.decompress(data, MAX_BODY_BYTES)
        elif encoding not in ("", "identity"):
            raise RecordProblem("undecodable_text", f"content-encoding {encoding}")
    except zlib.error as e:
        raise RecordProblem("undecodable_text", f"bad {encoding} body ({e})") from None
    return data


def _charset(headers: dict[str, str], data: bytes) -> str:
    for source in (headers.get("content-type", ""), data[:2048].decode("ascii", "replace")):
        low = source.lower()
        i = low.find("charset=")
        if i >= 0:
            name = low[i + 8:].strip(" \"'").split()[0].split(";")[0].strip("\"'>/")
            if name:
                return name
    return "utf-8"


def html_page(record: Record) -> Page | None:
    """The page of a WARC response record holding HTML, None for anything else."""
    if record.type != "response" or "application/http" not in record.headers.get("content-type", ""):
        return None
    page_url = record.headers.get("warc-target-uri")
    if not page_url:
        raise RecordProblem("missing_field", "no WARC-Target-URI")
    status, headers, entity = _http_parts(record.body)
    if status != 200 or "html" not in headers.get("content-type", "text/html").lower():
        return None
    data = _decode_entity(headers, entity)
    charset = _charset(headers, data)
    try:
        text = data.decode(charset, "replace")
    except LookupError:
        text = data.decode("utf-8", "replace")
    from selectolax.lexbor import LexborHTMLParser  # heavy: imported where used

    tree = LexborHTMLParser(text)
    base_node = tree.css_first("base[href]")
    meta_pairs = [(m.attributes.get("name") or "", m.attributes.get("content") or "") for m in tree.css("meta")]
    tags = [headers["x-robots-tag"]] if "x-robots-tag" in headers else []
    images = []
    for img in tree.css("img"):
        attrs = img.attributes
        images.append((attrs.get("src"), {k: attrs[k] for k in TEXT_SOURCES if attrs.get(k) is not None}))  # not-a-column
    base = base_node.attributes.get("href") if base_node else None
    anchor = urljoin(page_url, base) if base else None
    return Page(page_url, anchor, robots.opted_out(tags, meta_pairs), images)


# -- one file --------------------------------------------------------------------------------

@dataclass
class FileReport:
    """The ledger of one input file."""

    path: str
    format: str
    size: int = 0
    records: int = 0
    pages: int = 0
    images: int = 0  # image links (url-list rows) seen
    links: int = 0   # ledger units: a link once per distinct text (once when rejected as a link)
    candidates: int = 0
    rejected: Counter = field(default_factory=Counter)  # links dropped, by reason
    errors: Counter = field(default_factory=Counter)    # records or rows unreadable, by reason
    problem: str = ""  # the first of them, said in words

    def as_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "bytes": self.size,
                "records": self.records, "pages": self.pages, "images": self.images, "links": self.links,
                "candidates": self.candidates, "rejected": dict(sorted(self.rejected.items())),
                "errors": dict(sorted(self.errors.items())), "problem": self.problem}

    def error(self, reason: str, detail: str) -> None:
        self.errors[reason] += 1
        if not self.problem:
            self.problem = f"{reason}: {detail}" if detail else reason


def detect_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    name = path.lower().removesuffix(".gz")
    for suffix, f in ((".wat", "wat"), (".warc", "warc"), (".arc", "warc"), (".parquet", "parquet"),
                      (".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if name.endswith(suffix):
            return f
    raise schemas.UserError(f"{path}: cannot tell the format from the name; pass --format {'|'.join(FORMATS)}")


Event = tuple[str, dict]  # ("candidate" | "reject", row)


def _reject(reason: str, detail: str, source: str, offset: int, url: str | None = None) -> Event:
    return "reject", {C.STAGE: STAGE, C.REASON: reason, C.DETAIL: detail or None, C.UID: None,
                      C.URL: url, C.DUPLICATE_OF: None, C.SOURCE_FILE: source, C.SOURCE_OFFSET: offset}


def image_texts(found: dict, sources: tuple[str, ...],
                max_chars: int) -> list[tuple[str, str | None, tuple[str, str] | None]]:
    """(source, repaired text, problem) of an image's texts in ``sources`` order: present and
    not blank, each distinct text once (the first source that has it). A text with a
    problem (too long, undecodable) is not repaired: its problem is what is kept."""
    out, seen = [], set()
    for name in sources:
        value = found.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        problem = text_problem(value, max_chars)
        text = textclean.normalize(value) if problem is None else None
        key = text if text is not None else repr(value)
        if key not in seen:
            seen.add(key)
            out.append((name, text, problem))
    return out


def draw_one(seed: int, url: str, n: int) -> int:
    """Which of an image's ``n`` usable texts --one-text-per-image keeps: fixed by (seed, url)."""
    digest = hashlib.blake2b(f"{seed}\0{url}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def _link_events(report: FileReport, cfg: ExtractConfig, source: str, offset: int, fmt: str,
                 page_url: str | None, anchor: str | None, opted_out: bool,
                 images: Iterable[tuple[object, dict]]) -> Iterator[Event]:
    for src, found in images:
        report.images += 1
        url, reason, detail = resolve(anchor, src, cfg.max_url_chars)
        if opted_out:
            reason, detail = "page_opted_out", ""
        judged = image_texts(found, cfg.text_sources, cfg.max_alt_chars) if not reason else []
        if not reason and not judged:
            reason, detail = text_problem(None, cfg.max_alt_chars)
        if reason:  # the link itself: one ledger unit
            report.links += 1
            report.rejected[reason] += 1
            yield _reject(reason, detail, source, offset, url)
            continue
        if cfg.one_text:
            usable_texts = [item for item in judged if item[2] is None]
            judged = [usable_texts[draw_one(cfg.seed, url, len(usable_texts))]] if usable_texts else judged[:1]
        for name, text, problem in judged:  # text: the repaired text; its uid is fixed here, once
            report.links += 1
            if problem:
                report.rejected[problem[0]] += 1
                yield _reject(*problem, source, offset, url)
                continue
            report.candidates += 1
            yield "candidate", {C.UID: schemas.uid(url, text), C.URL: url, C.TEXT: text, C.PAGE_URL: page_url,
                                C.SOURCE_FILE: source, C.SOURCE_OFFSET: offset, C.SOURCE_FORMAT: fmt,
                                C.TEXT_SOURCE: name}


def _crawl_events(fh: BinaryIO, report: FileReport, cfg: ExtractConfig, source: str) -> Iterator[Event]:
    to_page = wat_page if report.format == "wat" else html_page
    for item in read_records(fh):
        if isinstance(item, ReadError):
            report.error(item.reason, item.detail)
            yield _reject(item.reason, item.detail, source, item.offset)
            continue
        report.records += 1
        try:
            page = to_page(item)
        except RecordProblem as e:
            report.error(e.reason, e.detail)
            yield _reject(e.reason, e.detail, source, item.offset)
            continue
        if page is None:
            continue
        report.pages += 1
        yield from _link_events(report, cfg, source, item.offset, report.format, page.url,
                                page.base or page.url, page.opted_out, page.images)


def _list_rows(fh: BinaryIO, fmt: str, cfg: ExtractConfig) -> Iterator[tuple[int, object, object] | RecordProblem]:
    """(row index, url, caption) per row of a url list, or a RecordProblem for a bad row."""
    if fmt == "parquet":
        pf = pq.ParquetFile(fh)
        missing = [c for c in (cfg.url_col, cfg.caption_col) if c not in pf.schema_arrow.names]
        if missing:
            raise RecordProblem("bad_row", f"no column {missing[0]!r} (columns: {', '.join(pf.schema_arrow.names)})")
        index = 0
        for batch in pf.iter_batches(columns=[cfg.url_col, cfg.caption_col], batch_size=BATCH_ROWS):
            for url, caption in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                yield index, url, caption
                index += 1
        return
    head = fh.read(2)
    stream: BinaryIO = io.BufferedReader(gzip.GzipFile(fileobj=_Prefixed(head, fh))) if head == b"\x1f\x8b" \
        else io.BufferedReader(_Prefixed(head, fh))
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    if fmt == "jsonl":
        for index, line in enumerate(text):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                yield RecordProblem("bad_json", f"row {index}: {str(e)[:60]}")
                continue
            if not isinstance(obj, dict) or cfg.url_col not in obj or cfg.caption_col not in obj:
                yield RecordProblem("bad_row", f"row {index}: needs {cfg.url_col!r} and {cfg.caption_col!r}")
                continue
            yield index, obj[cfg.url_col], obj[cfg.caption_col]
        return
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(text, delimiter="\t" if fmt == "tsv" else ",")
    header = next(reader, None)
    if header is None:
        return
    try:
        iu, ic = header.index(cfg.url_col), header.index(cfg.caption_col)
    except ValueError:
        raise RecordProblem("bad_row", f"header lacks {cfg.url_col!r} or {cfg.caption_col!r}: {header[:6]}") from None
    for index, row in enumerate(reader):
        if len(row) <= max(iu, ic):
            yield RecordProblem("bad_row", f"row {index}: {len(row)} field(s)")
            continue
        yield index, row[iu], row[ic]


class _Prefixed(io.RawIOBase):
    """A stream that first returns some already-read bytes (format sniffing)."""

    def __init__(self, head: bytes, fh: BinaryIO):
        self.head, self.fh = head, fh

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.fh.read(len(b))
        b[:len(data)] = data
        return len(data)


def _list_events(fh: BinaryIO, report: FileReport, cfg: ExtractConfig, source: str) -> Iterator[Event]:
    rows = _list_rows(fh, report.format, cfg)
    list_cfg = dataclasses.replace(cfg, text_sources=(cfg.caption_col,), one_text=False)  # one caption per row
    while True:
        try:
            item = next(rows)
        except StopIteration:
            return
        except RecordProblem as e:  # the whole file (a missing column)
            report.error(e.reason, e.detail)
            yield _reject(e.reason, e.detail, source, 0)
            return
        except (OSError, EOFError, zlib.error, pa.ArrowException, csv.Error) as e:
            report.error("bad_gzip" if isinstance(e, (OSError, EOFError, zlib.error)) else "bad_row", str(e)[:60])
            yield _reject("bad_row", f"unreadable from here on ({str(e)[:60]})", source, report.records)
            return
        if isinstance(item, RecordProblem):
            report.records += 1
            report.error(item.reason, item.detail)
            yield _reject(item.reason, item.detail, source, report.records - 1)
            continue
        index, url, caption = item
        report.records += 1
        if isinstance(caption, str):
            caption = caption.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        yield from _link_events(report, list_cfg, source, index, "list", None, None, False,
                                [(url, {cfg.caption_col: caption})])


def extract_file(path: str, cfg: ExtractConfig, fh: BinaryIO | None = None,
                 name: str | None = None) -> tuple[FileReport, Iterator[Event]]:
    """The file's report (filled as the events are consumed) and its event stream; rows
    name their input by ``name`` (default: the file's name)."""
    fmt = detect_format(path, cfg.fmt)
    report = FileReport(path=path, format=fmt)
    source = name or fileio.basename(path)

    def events() -> Iterator[Event]:
        stream = fh or fileio.open_read(path)
        try:
            if fmt in ("wat", "warc"):
                yield from _crawl_events(stream, report, cfg, source)
            else:
                yield from _list_events(stream, report, cfg, source)
        finally:
            if fh is None:
                stream.close()

    return report, events()


# -- writing ---------------------------------------------------------------------------------

def output_paths(output: str, name: str) -> dict[str, str]:
    """Where the outputs of the input named ``name`` (its path relative to its input root) go."""
    name = fileio.stem(name)
    return {"candidates": fileio.join(output, "candidates", f"{name}.parquet"),
            "rejects": fileio.join(output, "rejects", f"{name}.parquet"),
            "report": fileio.join(output, "files", f"{name}.json")}


def process_file(path: str, output: str, cfg: ExtractConfig, name: str | None = None) -> dict:
    """Extract one file to its outputs (skipped if already done); returns its report.

    ``name`` is the input's path relative to the folder it was named from: outputs and the
    rows' source_file use it, so a crawl read from a bucket and the same crawl read from a
    local copy give the same outputs."""
    name = name or fileio.basename(path)
    dest = output_paths(output, name)
    if fileio.exists(dest["report"]):
        done = fileio.read_json(dest["report"])
        if (fileio.exists(dest["candidates"]) and done.get("format") == detect_format(path, cfg.fmt)
                and done.get("bytes") == fileio.size(path) and done.get("settings") == settings(cfg)):
            return done  # the same file read with the same settings
    report, events = extract_file(path, cfg, name=name)
    report.size = fileio.size(path)
    cands = outputs.TableWriter(dest["candidates"], schemas.CANDIDATE)
    rejects = outputs.TableWriter(dest["rejects"], schemas.REJECT)
    try:
        for kind, row in events:
            (cands if kind == "candidate" else rejects).add(row)
    except BaseException:
        cands.abort()
        rejects.abort()
        raise
    cands.close()
    rejects.close()
    result = {**report.as_dict(), "settings": settings(cfg)}
    fileio.write_json(dest["report"], result)
    return result


def settings(cfg: ExtractConfig) -> dict:
    """What a finished file's outputs depend on besides its bytes (JSON-shaped)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# -- Beam ------------------------------------------------------------------------------------

class ExtractFileFn(beam.DoFn):
    """One input file in, its report out (its rows go to its own Parquet files)."""

    def __init__(self, output: str, cfg: ExtractConfig):
        self.output, self.cfg = output, cfg

    def process(self, item: tuple[str, str]) -> Iterator[dict]:
        path, name = item
        report = process_file(path, self.output, self.cfg, name)
        progress.tick("files", report["records"])
        Metrics.counter(STAGE, "files").inc()
        for key in ("records", "links", "candidates"):
            Metrics.counter(STAGE, key).inc(report[key])
        for reason, n in {**report["rejected"], **report["errors"]}.items():
            Metrics.counter(STAGE, reason).inc(n)
        yield report


UNUSABLE_SHOWN = 5  # unusable input files named in the ledger (with the count of all)


def usable(report: dict) -> bool:
    """Whether a file gave anything to judge: a page (crawl formats) or a row with a url and
    a caption (url lists). A page without images is usable; a file of garbage is not."""
    return report["pages"] > 0 or report["links"] > 0


def why_unusable(report: dict) -> str:
    if report.get("problem"):
        return report["problem"]
    if not report["bytes"]:
        return "empty file"
    return "no pages (no HTML or metadata records of web pages)" if report["format"] in ("wat", "warc") else "no rows"


def merge_reports(reports: Iterable[dict]) -> dict:
    reports = list(reports)
    total = {"job": STAGE, "files": 0, "records": 0, "pages": 0, "images": 0, "links": 0, "candidates": 0,
             "rejected": Counter(), "errors": Counter()}
    for r in reports:
        total["files"] += 1
        for key in ("records", "pages", "images", "links", "candidates"):
            total[key] += r.get(key, 0)
        total["rejected"].update(r["rejected"])
        total["errors"].update(r["errors"])
    total["errors"] = dict(sorted(total["errors"].items()))
    total["usable_files"] = sum(1 for r in reports if usable(r))
    total["unusable"] = sorted((r["path"], why_unusable(r)) for r in reports if not usable(r))[:UNUSABLE_SHOWN]
    total.update(schemas.run.ledger(STAGE, [schemas.run.step("links", total["links"], total["candidates"],
                                                             total["rejected"])]))
    return total


class ExtractCandidates(beam.PTransform):
    """(path, name) of input files -> per-file reports; CANDIDATE and REJECT Parquet written
    per file."""

    def __init__(self, output: str, cfg: ExtractConfig):
        super().__init__()
        self.output, self.cfg = output, cfg

    def expand(self, paths):
        return (paths
                | "SpreadFiles" >> beam.Reshuffle()
                | "ExtractFile" >> beam.ParDo(ExtractFileFn(self.output, self.cfg)))


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", default=None,
                        help="files: a glob, a comma-separated list, or a *.paths(.gz) file of paths "
                             "(relative paths are relative to the list); repeatable. Any Beam "
                             "FileSystems URL (gs://, s3://, ...)")
    parser.add_argument("--output", default=None, help="output folder (local or a Beam FileSystems URL)")
    parser.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                        help="input format (default: from the file name)")
    parser.add_argument("--url-col", default=C.URL, help="url column of url lists (default: %(default)s)")
    parser.add_argument("--caption-col", default=C.CAPTION, help="caption column of url lists (default: %(default)s)")
    parser.add_argument("--max-alt-chars", type=int, default=ExtractConfig.max_alt_chars,
                        help="longer alt texts are rejected as alt_too_long (default: %(default)s)")
    parser.add_argument("--max-url-chars", type=int, default=ExtractConfig.max_url_chars,
                        help="longer urls are rejected as invalid_url (default: %(default)s)")
    parser.add_argument("--text-sources", default=",".join(TEXT_SOURCES),
                        help="image attributes (WAT link keys) read as texts, in order of preference; each "
                             "distinct text is a candidate (default: %(default)s). Url lists use --caption-col")
    parser.add_argument("--one-text-per-image", action="store_true",
                        help="keep one usable text per image, drawn by a hash of (--seed, url), as MetaCLIP 2 "
                             "offers (default: every distinct text)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --one-text-per-image's draw (default: %(default)s)")



def build(pipeline: beam.Pipeline, files: list[tuple[str, str]], output: str, cfg: ExtractConfig) -> None:
    stats_path = fileio.join(output, STATS_FILE)
    (pipeline
     | "Files" >> beam.Create(files)
     | "Extract" >> ExtractCandidates(output, cfg)
     | "Ledger" >> beam.combiners.ToList()
     | "WriteLedger" >> beam.Map(lambda reports: fileio.write_json(stats_path, merge_reports(reports))))


def run(argv: list[str] | None = None) -> dict:
    """Run the extract job; returns the job's ledger (also written to extract_stats.json)."""
    args, beam_options = options.parse(
        "openwit extract", __doc__.split("\n\n")[0], add_args, list(argv or []))
    if not args.input:
        raise schemas.UserError("--input is required (a glob, a list of files, or a *.paths file)")
    if not args.output:
        raise schemas.UserError("--output is required")
    sources = tuple(x.strip() for x in args.text_sources.split(",") if x.strip())
    unknown = [x for x in sources if x not in TEXT_SOURCES]
    if unknown or not sources or len(set(sources)) != len(sources):
        raise schemas.UserError(f"--text-sources {args.text_sources}: give one or more of {', '.join(TEXT_SOURCES)}, "
                                f"each once{f' ({unknown[0]!r} is not one)' if unknown else ''}")
    cfg = ExtractConfig(max_alt_chars=args.max_alt_chars, max_url_chars=args.max_url_chars,
                        url_col=args.url_col, caption_col=args.caption_col, fmt=args.format,
                        text_sources=sources, one_text=args.one_text_per_image, seed=args.seed)
    for flag in ("max_alt_chars", "max_url_chars"):
        if getattr(args, flag) <= 0:
            raise schemas.UserError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be positive")
    files = fileio.named_inputs(args.input)
    for f, _ in files:
        detect_format(f, cfg.fmt)  # fail now, in one line, not in a worker
    fileio.makedirs(args.output)
    start = time.perf_counter()
    with (options.quiet_local_workers(beam_options), options.progress_of(beam_options, STAGE, {"files": len(files)}),
          beam.Pipeline(options=beam_options) as p):
        build(p, files, args.output, cfg)
    stats = fileio.read_json(fileio.join(args.output, STATS_FILE))
    if stats["files"] and not stats["usable_files"]:
        shown = "; ".join(f"{fileio.basename(path)}: {why}" for path, why in stats["unusable"])
        more = f" (and {stats['files'] - len(stats['unusable']):,} more)" if stats["files"] > len(stats["unusable"]) else ""
        raise schemas.UserError(f"no usable input: none of the {stats['files']:,} file(s) gave a page or a row: "
                                f"{shown}{more}; ledger in {fileio.join(args.output, STATS_FILE)}")
    stats["seconds"] = round(time.perf_counter() - start, 2)
    stats["output"] = args.output
    return stats


def summary(stats: dict, output: str) -> str:
    lines = [f"extract: {stats['files']} file(s), {stats['records']:,} records, {stats['pages']:,} pages, "
             f"{stats['images']:,} image links ({stats['links']:,} link texts) -> {stats['candidates']:,} "
             f"candidates in {output}"]
    for reason, n in stats["rejected"].items():
        lines.append(f"  rejected {reason:<18} {n:>10,}  {schemas.describe(reason)}")
    for reason, n in stats["errors"].items():
        lines.append(f"  damaged  {reason:<18} {n:>10,}  {schemas.describe(reason)}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    stats = run(argv)
    print(summary(stats, stats["output"]))
    print(f"  {stats['seconds']:.1f}s; ledger in {fileio.join(stats['output'], STATS_FILE)}")
    return 0
