"""Generate a synthetic crawl: Common Crawl-style WAT files plus a ground-truth Parquet.

Writes, under the output folder::

    wat/CC-MAIN-<date>-<nnnnn>.warc.wat.gz   one gzip member per WARC record, as Common Crawl
    wat.paths                                the WAT files, one relative path a line
    ground_truth/<nnnnn>.parquet             GROUND_TRUTH: what every image link really is
    manifest.json                            seed, hosts, held-out combinations, counts

Page ``p`` is a pure function of (seed, p), so files are generated in parallel, in any
order, and are byte-identical for the same seed whatever the worker count. Duplicates and
near-duplicates point at clean images of earlier pages, possibly in other files: a page's
clean images are recomputed from its plan, never looked up.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import random
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urljoin

import pyarrow as pa

import schemas
from schemas import columns as C
from pipeline.synth import benchmark, captions, world
from pipeline.synth.world import (
    BACKGROUNDS, COLOURS, FAULTS, FORMATS, PLACEMENTS, SHAPES, SIZES, VARIANTS, ImageSpec,
    eval_spec, heldout_combos, seed_int,
)

MANIFEST = "manifest.json"
WAT_PATHS = "wat.paths"
WAT_DIR = "wat"
WARC_DIR = "warc"
WARC_PATHS = "warc.paths"
GROUND_TRUTH_DIR = "ground_truth"
EVAL_IMAGES_DIR = "eval/heldout"
CRAWL_DATE = "20261128"
SOFTWARE = "openwit-synth/1"

# Link kinds (the ground truth's `kind` column) and their default share of image links.
KIND_MIX: dict[str, float] = {
    "clean": 0.49,
    "mismatched": 0.03,         # the alt describes another picture (another shape and colour)
    "duplicate": 0.06,          # the same bytes as an earlier clean image, another url
    "near_duplicate": 0.06,     # an earlier clean image cropped/resized/re-encoded/brightened
    "non_english": 0.06,
    "mojibake": 0.03,           # utf-8 text mis-decoded as cp1252 (ftfy repairs it)
    "boilerplate": 0.03,        # "image", "photo", "click here"
    "filename_alt": 0.02,       # "IMG_2034.jpg"
    "long_alt": 0.01,           # caption plus keyword stuffing, 1k-8k characters
    "no_alt": 0.04,             # no alt attribute, or an empty / blank one
    "data_url": 0.01,           # data:image/gif;base64,...
    "svg": 0.01,
    "gif": 0.01,
    "faulty": 0.10,             # the server misbehaves (see world.FAULTS)
    "opted_out": 0.03,          # X-Robots-Tag noai/noimageai, or robots.txt disallow
    "eval_item": 0.01,          # a held-out evaluation image (or a near copy): contamination
}
# Kinds that exist only by page or file, not drawn per link.
PAGE_OPTED_OUT = "page_opted_out"   # every image of a page with <meta name=robots content=noai>
HUGE_ALT = "huge_alt"               # an alt of HUGE_ALT_CHARS characters
HUGE_ALT_CHARS = 1 << 20
OPT_OUT_FAULTS = ("xrobots_noai", "xrobots_noimageai", "robots_disallow")
SERVER_FAULTS = tuple(f for f in FAULTS if f not in ("none", *OPT_OUT_FAULTS))
ALL_KINDS = (*KIND_MIX, PAGE_OPTED_OUT, HUGE_ALT)

SECTIONS = ("blog", "shop", "gallery", "news", "forum/thread", "wiki", "products/item")
IMAGE_DIRS = ("img", "images", "uploads/2025/06", "media/cache", "static/pics", "cdn/i",
              "assets/photos", "wp-content/uploads")
PRIVATE_DIR = "private"
DATA_URL = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


@dataclass(frozen=True)
class CrawlConfig:
    pages: int = 2000
    seed: int = 0
    pages_per_file: int = 1000
    hosts: tuple[str, ...] = ()  # each virtual host: "ip:port" (default_hosts) or a name (virtual_hosts)
    eval_size: int = 512
    huge_alts_per_file: int = 1
    warc: bool = False  # also write WARC files with the pages' HTML responses
    kind_mix: dict[str, float] = field(default_factory=lambda: dict(KIND_MIX))

    @property
    def files(self) -> int:
        return max(1, -(-self.pages // self.pages_per_file))


def virtual_hosts(count: int = 8, domain: str = "openwit-demo.test") -> tuple[str, ...]:
    """``count`` host names under ``domain`` (a reserved top-level domain: never on the
    internet), served on loopback ports chosen at serve time, so the urls and the uids
    derived from them are a function of the seed alone."""
    return tuple(f"img{i}.{domain}" for i in range(count))


def default_hosts(count: int = 8, base_port: int = 18400, ips: int = 4) -> tuple[str, ...]:
    """``count`` virtual hosts on loopback: up to ``ips`` addresses of 127.0.0.0/8 x ports."""
    ips = max(1, min(ips, count))
    return tuple(f"127.0.0.{1 + i % ips}:{base_port + i // ips}" for i in range(count))


# -- page plans ------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinkPlan:
    kind: str
    spec: ImageSpec
    host: str
    image_dir: str
    src_form: str  # absolute | root | relative | protocol | padded


@dataclass(frozen=True)
class PagePlan:
    page: int
    host: str
    page_url: str
    base: str | None
    opted_out: bool
    html: bool
    links: tuple[LinkPlan, ...]


def _fresh_spec(rng: random.Random, heldout: frozenset[tuple[int, int]]) -> ImageSpec:
    shape = rng.randrange(len(SHAPES))
    colour = rng.randrange(len(COLOURS))
    while (shape, colour) in heldout:
        colour = rng.randrange(len(COLOURS))
    return ImageSpec(shape, colour, rng.randrange(len(SIZES)), rng.randrange(len(PLACEMENTS)),
                     rng.randrange(len(BACKGROUNDS)), rng.getrandbits(32))


@lru_cache(maxsize=4096)
def plan_page(cfg_key: tuple, page: int) -> PagePlan:
    """The page's layout, link kinds and image specs: everything but texts and references."""
    seed, hosts, kinds, weights = cfg_key
    heldout = heldout_combos(seed)
    rng = random.Random(seed_int(seed, "page", page))
    host = rng.choice(hosts)
    page_url = f"http://{host}/{rng.choice(SECTIONS)}/page-{page}.html"
    base = f"http://{rng.choice(hosts)}/static/" if rng.random() < 0.08 else None
    opted_out = rng.random() < 0.01
    html = rng.random() >= 0.03
    links = []
    for _ in range(rng.randint(4, 18) if html else 0):
        kind = rng.choices(kinds, weights)[0]
        spec = _fresh_spec(rng, heldout)
        fault = "none"
        if kind == "faulty":
            fault = rng.choice(SERVER_FAULTS)
        elif kind == "opted_out":
            fault = rng.choice(OPT_OUT_FAULTS)
        fmt = {"svg": "svg", "gif": "gif"}.get(kind, "png" if fault == "bomb" else "jpg")
        spec = replace(spec, fault=FAULTS.index(fault), fmt=FORMATS.index(fmt))
        if opted_out:
            kind = PAGE_OPTED_OUT
        form = rng.choices(("absolute", "root", "relative", "protocol", "padded"),
                           (0.70, 0.12, 0.10, 0.06, 0.02))[0]
        if fault == "robots_disallow":
            form = "absolute"
        links.append(LinkPlan(kind, spec, rng.choice(hosts), rng.choice(IMAGE_DIRS), form))
    return PagePlan(page, host, page_url, base, opted_out, html, tuple(links))


def _image_url(page: PagePlan, link: LinkPlan, spec: ImageSpec) -> tuple[str, str]:
    """(src as written in the page, absolute url) for an image link."""
    name = f"{spec.token()}.{FORMATS[spec.fmt]}"
    if spec.fault == FAULTS.index("robots_disallow"):
        url = f"http://{link.host}/{PRIVATE_DIR}/{link.image_dir}/{name}"
        return url, url
    anchor = page.base or page.page_url
    anchor_host = anchor.split("/")[2]
    if link.src_form == "root":
        src = f"/{link.image_dir}/{name}"
    elif link.src_form == "relative":
        src = f"{link.image_dir}/{name}"
    elif link.src_form == "protocol":
        src = f"//{link.host}/{link.image_dir}/{name}"
    else:
        src = f"http://{link.host}/{link.image_dir}/{name}"
        if link.src_form == "padded":
            src = f"  {src}\n"
        return src, src.strip()
    url = urljoin(anchor, src)
    if link.src_form != "protocol":
        assert url.split("/")[2] == anchor_host
    return src, url


def clean_images(cfg_key: tuple, page: int) -> list[tuple[ImageSpec, str]]:
    """(spec, url) of the clean images of a page: what duplicates may copy."""
    plan = plan_page(cfg_key, page)
    return [(link.spec, _image_url(plan, link, link.spec)[1])
            for link in plan.links if link.kind == "clean"]


# -- concrete links --------------------------------------------------------------------------

def _gt_row(spec: ImageSpec | None) -> dict:
    row = dict.fromkeys(schemas.GROUND_TRUTH.names)
    row[C.HELDOUT] = False
    if spec is not None:
        row.update({
            C.IMAGE_TOKEN: spec.token(), C.SHAPE: spec.shape_name, C.COLOUR: spec.colour_name,
            C.SIZE: spec.size_name, C.PLACEMENT: spec.placement_name,
            C.BACKGROUND: spec.background_name, C.VARIANT: spec.variant_name,
            C.FAULT: spec.fault_name,
        })
    return row


def _near_variant(spec: ImageSpec, rng: random.Random) -> ImageSpec:
    return replace(spec.original(), variant=rng.randrange(1, len(VARIANTS)),
                   variant_param=rng.randrange(256))


def _other_picture(spec: ImageSpec, rng: random.Random, seed: int) -> ImageSpec:
    """A picture of another shape in another colour (not a held-out pair): what a
    mismatched link's alt describes instead of its own image."""
    heldout = heldout_combos(seed)
    while True:
        shape, colour = rng.randrange(len(SHAPES)), rng.randrange(len(COLOURS))
        if shape != spec.shape and colour != spec.colour and (shape, colour) not in heldout:
            return replace(spec, shape=shape, colour=colour, placement=rng.randrange(len(PLACEMENTS)),
                           background=rng.randrange(len(BACKGROUNDS)))


def page_links(cfg: CrawlConfig, cfg_key: tuple, page: int, huge: bool) -> tuple[PagePlan, list[dict]]:
    """The page plan and one ground-truth row per image link (WAT fields filled later)."""
    plan = plan_page(cfg_key, page)
    rng = random.Random(seed_int(cfg.seed, "links", page))
    rows = []
    for j, link in enumerate(plan.links):
        kind, spec = link.kind, link.spec
        duplicate_of = None
        if kind in ("duplicate", "near_duplicate"):
            source = None
            for _ in range(4):
                if page == 0:
                    break
                earlier = clean_images(cfg_key, rng.randrange(max(0, page - 5000), page))
                if earlier:
                    source = rng.choice(earlier)
                    break
            if source is None:
                kind = "clean"
            else:
                spec, duplicate_of = source
                if kind == "near_duplicate":
                    spec = _near_variant(spec, rng)
        eval_index = None
        if kind == "eval_item":
            eval_index = rng.randrange(cfg.eval_size)
            spec = eval_spec(cfg.seed, eval_index)
            if rng.random() < 0.5:
                spec = _near_variant(spec, rng)
        if kind == "data_url":
            src = url = DATA_URL
        else:
            src, url = _image_url(plan, link, spec)
            if url == duplicate_of:  # same bytes, but always under another url
                link = replace(link, image_dir=IMAGE_DIRS[(IMAGE_DIRS.index(link.image_dir) + 1) % len(IMAGE_DIRS)])
                src, url = _image_url(plan, link, spec)
        row = _gt_row(None if kind == "data_url" else spec)
        clean = captions.english(spec, rng)
        lang, alt = "en", clean
        if kind == "non_english":
            lang, alt = captions.foreign(spec, rng)
        elif kind == "mojibake":
            clean, alt = captions.mojibake(clean, rng)
        elif kind == "boilerplate":
            alt, lang = captions.boilerplate(rng), None
        elif kind == "filename_alt":
            alt, lang = captions.filename(rng), None
        elif kind == "long_alt":
            alt = captions.long_alt(clean, rng, rng.randrange(1000, 8000))
        elif kind == "no_alt":
            alt, lang = rng.choice((None, "", "   ")), None
        elif kind == "mismatched":
            alt = captions.english(_other_picture(spec, rng, cfg_key[0]), rng)
        if huge and kind == "clean":
            huge = False
            kind = HUGE_ALT
            alt = captions.huge_alt(clean, HUGE_ALT_CHARS)
        row.update({
            C.PAGE_URL: plan.page_url, C.LINK_INDEX: j, C.SRC: src, C.URL: url, C.TEXT: alt,
            C.KIND: kind, C.DUPLICATE_OF: duplicate_of, C.CLEAN_CAPTION: clean, C.LANG: lang,
            C.HELDOUT: kind == "eval_item", C.EVAL_INDEX: eval_index,
            C.HOST: url.split("/")[2] if url.startswith("http") else "",
        })
        rows.append(row)
    return plan, rows


# -- WAT records -----------------------------------------------------------------------------

def _uuid(*parts: object) -> str:
    return f"<urn:uuid:{uuid.UUID(int=seed_int(*parts) << 64 | seed_int(*parts, 'lo'))}>"


def _digest(*parts: object) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(repr(parts).encode()).digest()).decode()


def _date(page: int) -> str:
    s = page % 86400
    return f"{CRAWL_DATE[:4]}-{CRAWL_DATE[4:6]}-{CRAWL_DATE[6:]}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z"


def _gzip_member(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip header with mtime 0
    return c.compress(data) + c.flush()


def warc_record(headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body + b"\r\n\r\n"


def _warcinfo(wat_name: str, seed: int) -> bytes:
    body = (
        f"Software-Info: {SOFTWARE}\r\nExtractedDate: {CRAWL_DATE}\r\n"
        "ip: 127.0.0.1\r\nhostname: synth\r\nformat: WARC File Format 1.0\r\n"
        "conformsTo: http://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.0/\r\n"
    ).encode()
    return warc_record([
        ("WARC-Type", "warcinfo"), ("WARC-Date", _date(0)), ("WARC-Filename", wat_name),
        ("WARC-Record-ID", _uuid(seed, wat_name, "warcinfo")),
        ("Content-Type", "application/warc-fields"),
    ], body)


def _envelope(plan: PagePlan, rows: list[dict], warc_name: str, warc_offset: int,
              record_type: str, seed: int) -> dict:
    rid = _uuid(seed, plan.page, record_type)
    host = plan.host.split(":")[0]
    host = host if host[:1].isdigit() else "127.0.0.1"  # a named host is served on loopback
    warc_headers = {
        "WARC-Type": record_type, "WARC-Date": _date(plan.page), "WARC-Record-ID": rid,
        "Content-Length": "0", "Content-Type": f"application/http; msgtype={record_type}",
        "WARC-Warcinfo-ID": _uuid(seed, warc_name, "warcinfo"), "WARC-IP-Address": host,
        "WARC-Target-URI": plan.page_url,  # not-a-column
    }
    path = "/" + plan.page_url.split("/", 3)[3]
    if record_type == "request":
        payload = {
            "Actual-Content-Type": "application/http; msgtype=request",
            "HTTP-Request-Metadata": {
                "Request-Message": {"Method": "GET", "Path": path, "Version": "HTTP/1.1"},
                "Headers-Length": "250",
                "Headers": {"User-Agent": "CCBot/2.0 (https://commoncrawl.org/faq/)",
                            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                            "Host": plan.host, "Connection": "Keep-Alive", "Accept-Encoding": "gzip"},
                "Entity-Length": "0", "Entity-Digest": _digest("empty"),
                "Entity-Trailing-Slop-Length": "0",
            },
            "Trailing-Slop-Length": "4",
        }
    else:
        ctype = "text/html; charset=UTF-8" if plan.html else "application/pdf"
        response: dict = {
            "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
            "Headers-Length": "180",
            "Headers": {"Date": "Sat, 28 Nov 2026 00:00:00 GMT", "Server": "openwit-synth",
                        "Content-Type": ctype, "Content-Length": str(4000 + 120 * len(rows))},
            "Entity-Length": str(4000 + 120 * len(rows)), "Entity-Digest": _digest(seed, plan.page),
            "Entity-Trailing-Slop-Length": "0",
        }
        if plan.html:
            response["HTML-Metadata"] = _html_metadata(plan, rows)
        payload = {"Actual-Content-Type": "application/http; msgtype=response",
                   "HTTP-Response-Metadata": response, "Trailing-Slop-Length": "4"}
    return {
        "Container": {
            "Filename": warc_name, "Compressed": True, "Offset": str(warc_offset),
            "Gzip-Metadata": {"Deflate-Length": "1800", "Header-Length": "10", "Footer-Length": "8",
                              "Inflated-CRC": str(seed_int(seed, plan.page) % (1 << 31)),
                              "Inflated-Length": "5800"},
        },
        "Envelope": {
            "Format": "WARC", "WARC-Header-Length": "560", "Block-Digest": _digest(seed, rid),
            "Actual-Content-Length": "5200", "WARC-Header-Metadata": warc_headers,
            "Payload-Metadata": payload,
        },
    }


def _html_metadata(plan: PagePlan, rows: list[dict]) -> dict:
    metas = [{"name": "description", "content": "Shapes and colours for every project"},
             {"name": "viewport", "content": "width=device-width, initial-scale=1"}]
    if plan.opted_out:
        metas.append({"name": "robots", "content": "noai, noimageai"})
    head: dict = {"Title": f"Synthetic page {plan.page}", "Metas": metas,
                  "Link": [{"path": "LINK@/href", "rel": "stylesheet", "url": "/style.css"}]}  # not-a-column
    if plan.base:
        head["Base"] = plan.base
    links: list[dict] = [{"path": "A@/href", "url": "/", "text": "Home"}]  # not-a-column
    for i, row in enumerate(rows):
        img = {"path": "IMG@/src", "url": row[C.SRC]}  # not-a-column
        if row[C.TEXT] is not None:
            img["alt"] = row[C.TEXT]
        links.append(img)
        if i % 4 == 3:
            links.append({"path": "A@/href", "url": f"/tag/{i}", "text": f"more {i}"})  # not-a-column
    return {"Head": head, "Links": links}


def _metadata_record(plan: PagePlan, envelope: dict, record_type: str, seed: int) -> bytes:
    body = json.dumps(envelope, separators=(",", ":")).encode()
    return warc_record([
        ("WARC-Type", "metadata"), ("WARC-Target-URI", plan.page_url),
        ("WARC-Date", _date(plan.page)),
        ("WARC-Record-ID", _uuid(seed, plan.page, record_type, "wat")),
        ("WARC-Refers-To", _uuid(seed, plan.page, record_type)),
        ("Content-Type", "application/json"),
    ], body)


def page_html(plan: PagePlan, rows: list[dict]) -> str:
    """The page as HTML: the same links, alts, <base> and robots meta as its WAT record."""
    esc = html.escape
    head = [f"<title>Synthetic page {plan.page}</title>",
            '<meta name="description" content="Shapes and colours for every project">']
    if plan.opted_out:
        head.append('<meta name="robots" content="noai, noimageai">')
    if plan.base:
        head.append(f'<base href="{esc(plan.base)}">')
    body = ['<a href="/">Home</a>']
    for i, row in enumerate(rows):
        alt = "" if row[C.TEXT] is None else f' alt="{esc(row[C.TEXT])}"'
        body.append(f'<figure><img src="{esc(row[C.SRC])}"{alt}></figure>')
        if i % 4 == 3:
            body.append(f'<p><a href="/tag/{i}">more {i}</a> &amp; caf&eacute;</p>')
    return ("<!doctype html>\n<html><head>" + "".join(head) + "</head>\n<body>"
            + "\n".join(body) + "</body></html>\n")


def _http_response(plan: PagePlan, rows: list[dict]) -> bytes:
    """A raw HTTP response as a crawler records it: some chunked, some gzip-encoded."""
    entity = page_html(plan, rows).encode("utf-8")
    headers = ["HTTP/1.1 200 OK", "Content-Type: text/html; charset=utf-8", "Server: openwit-synth"]
    if plan.page % 5 == 1:
        entity = _gzip_member(entity)
        headers.append("Content-Encoding: gzip")
    if plan.page % 3 == 2:
        headers.append("Transfer-Encoding: chunked")
        entity = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in
                          (entity[i:i + 4000] for i in range(0, len(entity), 4000))) + b"0\r\n\r\n"
    else:
        headers.append(f"Content-Length: {len(entity)}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + entity


def _warc_response(plan: PagePlan, rows: list[dict], seed: int) -> bytes:
    return warc_record([
        ("WARC-Type", "response"), ("WARC-Target-URI", plan.page_url), ("WARC-Date", _date(plan.page)),
        ("WARC-Record-ID", _uuid(seed, plan.page, "response")),
        ("Content-Type", "application/http; msgtype=response"),
    ], _http_response(plan, rows) if plan.html else
        b"HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: 8\r\n\r\n%PDF-1.4")


# -- files -----------------------------------------------------------------------------------

def wat_name(index: int) -> str:
    return f"CC-MAIN-{CRAWL_DATE}000000-{CRAWL_DATE}235959-{index:05d}.warc.wat.gz"


def _cfg_key(cfg: CrawlConfig) -> tuple:
    kinds = tuple(cfg.kind_mix)
    return (cfg.seed, cfg.hosts, kinds, tuple(cfg.kind_mix[k] for k in kinds))


def generate_file(cfg: CrawlConfig, out: Path, index: int) -> Counter:
    """Write WAT file ``index`` and its ground truth; returns counts by kind (and totals)."""
    key = _cfg_key(cfg)
    name = wat_name(index)
    warc_name = name.replace(".warc.wat.gz", ".warc.gz")
    first, last = index * cfg.pages_per_file, min(cfg.pages, (index + 1) * cfg.pages_per_file)
    n_huge = min(cfg.huge_alts_per_file, last - first)
    huge_pages = {first + k * (last - first) // n_huge for k in range(n_huge)} if n_huge > 0 else set()
    columns: dict[str, list] = {n: [] for n in schemas.GROUND_TRUTH.names}
    counts: Counter = Counter()
    wat_path = out / WAT_DIR / name
    tmp = wat_path.with_name(f".{name}.tmp-{os.getpid()}")
    offset = 0
    warc_offset = 0
    with open(tmp, "wb") as fh:
        member = _gzip_member(_warcinfo(name, cfg.seed))
        fh.write(member)
        offset += len(member)
        for page in range(first, last):
            plan, rows = page_links(cfg, key, page, page in huge_pages)
            for record_type in ("request", "response"):
                env = _envelope(plan, rows, warc_name, warc_offset, record_type, cfg.seed)
                member = _gzip_member(_metadata_record(plan, env, record_type, cfg.seed))
                if record_type == "response":
                    for row in rows:
                        row[C.SOURCE_FILE] = name
                        row[C.SOURCE_OFFSET] = offset
                        for k, v in row.items():
                            columns[k].append(v)
                        counts[row[C.KIND]] += 1
                        if row[C.TEXT] and row[C.TEXT].strip() and row[C.URL].startswith("http"):
                            counts["candidates"] += 1
                fh.write(member)
                offset += len(member)
                warc_offset += 1800 if record_type == "response" else 500
            counts["pages"] += 1
            counts["links"] += len(rows)
    os.replace(tmp, wat_path)
    if cfg.warc:
        _write_warc(cfg, key, out, warc_name, first, last, huge_pages)
    table = pa.table({n: pa.array(columns[n], schemas.GROUND_TRUTH.field(n).type)
                      for n in schemas.GROUND_TRUTH.names})
    schemas.write_table(table, out / GROUND_TRUTH_DIR / f"{index:05d}.parquet", schemas.GROUND_TRUTH)
    return counts


def _write_warc(cfg: CrawlConfig, key: tuple, out: Path, name: str, first: int, last: int,
                huge_pages: set[int]) -> None:
    path = out / WARC_DIR / name
    tmp = path.with_name(f".{name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(_gzip_member(_warcinfo(name, cfg.seed)))
        for page in range(first, last):
            plan, rows = page_links(cfg, key, page, page in huge_pages)
            fh.write(_gzip_member(_warc_response(plan, rows, cfg.seed)))
    os.replace(tmp, path)


def _work(args: tuple[CrawlConfig, str, int]) -> tuple[int, Counter]:
    cfg, out, index = args
    return index, generate_file(cfg, Path(out), index)


def generate(cfg: CrawlConfig, out: str | os.PathLike, workers: int = 0,
             progress: Callable[[int, int, Counter, float], None] | None = None) -> dict:
    """Generate the whole crawl into ``out``; returns the manifest (also written to disk)."""
    out = Path(out)
    if not cfg.hosts:
        cfg = replace(cfg, hosts=default_hosts())
    for sub in (WAT_DIR, GROUND_TRUTH_DIR, *((WARC_DIR,) if cfg.warc else ())):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a partial rerun must not look complete
    workers = workers or os.cpu_count() or 1
    jobs = [(cfg, str(out), i) for i in range(cfg.files)]
    totals: Counter = Counter()
    start = time.perf_counter()
    if workers == 1 or len(jobs) == 1:
        results: Iterator = map(_work, jobs)
        pool = None
    else:
        pool = get_context("fork").Pool(min(workers, len(jobs)))
        results = pool.imap_unordered(_work, jobs)
    try:
        for done, (_, counts) in enumerate(results, 1):
            totals.update(counts)
            if progress:
                progress(done, len(jobs), totals, time.perf_counter() - start)
    finally:
        if pool:
            pool.close()
            pool.join()
    eval_files = write_eval_images(cfg, out / EVAL_IMAGES_DIR)
    bench = benchmark.write(cfg.seed, cfg.eval_size, out / benchmark.BENCHMARK_DIR)
    names = [wat_name(i) for i in range(cfg.files)]
    (out / WAT_PATHS).write_text("".join(f"{WAT_DIR}/{n}\n" for n in names))
    if cfg.warc:
        (out / WARC_PATHS).write_text("".join(f"{WARC_DIR}/{n.replace('.warc.wat.gz', '.warc.gz')}\n" for n in names))
    manifest = {
        "software": SOFTWARE, "seed": cfg.seed, "pages": cfg.pages, "files": cfg.files,
        "pages_per_file": cfg.pages_per_file, "hosts": list(cfg.hosts), "eval_size": cfg.eval_size,
        "heldout_combinations": sorted([SHAPES[s], COLOURS[c]] for s, c in heldout_combos(cfg.seed)),
        "kind_mix": cfg.kind_mix, "huge_alts_per_file": cfg.huge_alts_per_file, "warc": cfg.warc,
        "counts": dict(sorted(totals.items())), "wat_files": [f"{WAT_DIR}/{n}" for n in names],
        "ground_truth": GROUND_TRUTH_DIR, "eval_images": EVAL_IMAGES_DIR, "eval_image_count": eval_files,
        "benchmark": {name: f"{benchmark.BENCHMARK_DIR}/{name}" for name in bench},
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def write_eval_images(cfg: CrawlConfig, folder: Path) -> int:
    """The held-out evaluation images (``eval_spec(seed, k)``, k < eval_size) as PNG files
    ``NNNNN.png``: what the crawl's eval_item links copy, and what dedupe must find."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(cfg.eval_size):
        tmp = folder / f".{k:05d}.png.tmp"
        world.render_image(eval_spec(cfg.seed, k)).save(tmp, "PNG")
        os.replace(tmp, folder / f"{k:05d}.png")
    return cfg.eval_size


def load_manifest(crawl: str | os.PathLike) -> dict:
    path = Path(crawl) / MANIFEST
    if not path.is_file():
        raise schemas.UserError(f"{crawl}: not a synthetic crawl (no {MANIFEST}; run `openwit synth` first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise schemas.UserError(f"{path}: unreadable manifest ({e})") from None
