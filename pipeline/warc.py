"""Read WARC records (WAT metadata or HTML responses) robustly, with their byte offsets.

Common Crawl and most crawlers compress every record as its own gzip member, so a record's
offset is the offset of its member and a reader can jump over damage: a corrupt or
truncated member, or junk between members, is reported as an error with its offset and
reading resumes at the next gzip header. Plain (uncompressed) WARC files are read record
by record without loading the file. Records larger than ``max_record_bytes`` are skipped
with an error rather than held in memory (a gzip bomb cannot take the worker down).

Everything here is pure Python over a binary file object: no Beam, so tests need none.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGIC = b"WARC/1."
CHUNK = 1 << 20
MAX_RECORD_BYTES = 64 << 20
MAX_HEADER_BYTES = 64 << 10
FEED = 16 << 10  # compressed bytes handed to zlib at a time (bounded copying per member)


@dataclass
class Record:
    offset: int
    headers: dict[str, str]  # header names lower-cased
    body: bytes

    @property
    def type(self) -> str:
        return self.headers.get("warc-type", "")


@dataclass
class ReadError:
    offset: int
    reason: str  # a schemas.REASONS code: bad_gzip or bad_record
    detail: str


def read_records(fh: BinaryIO, max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[Record | ReadError]:
    """Every record of a WARC/WAT file: gzip (per record or whole file) or plain."""
    head = fh.read(3)
    if head == GZIP_MAGIC:
        yield from _gzip_records(fh, head, _Assembler(max_record_bytes, members=True))
    else:
        asm = _Assembler(max_record_bytes, members=False)
        data = head
        while data:
            yield from asm.feed(data)
            data = fh.read(CHUNK)
        yield from asm.finish()


class _Assembler:
    """Cuts a byte stream into WARC records, holding at most one record in memory.

    In gzip files a record's offset is that of the member its first byte came from; in
    plain files it is the record's own byte offset.
    """

    def __init__(self, cap: int, members: bool):
        self.cap = cap
        self.members = members
        self.buf = bytearray()
        self.pos = 0  # stream position of buf[0]
        self.starts: list[tuple[int, int]] = []  # (stream position, file offset) of members
        self.drop = 0  # bytes of an oversized record still to skip

    def begin_member(self, file_offset: int) -> None:
        here = self.pos + len(self.buf)
        self.starts = [s for s in self.starts if s[0] >= self.pos][-64:]
        self.starts.append((here, file_offset))

    def reset(self) -> None:
        """Forget a partial record (the member it came from was damaged)."""
        self.pos += len(self.buf)
        self.buf.clear()
        self.drop = 0

    def offset(self, stream_pos: int) -> int:
        if not self.members:
            return stream_pos
        best = self.starts[0][1] if self.starts else 0
        for pos, off in self.starts:
            if pos <= stream_pos:
                best = off
        return best

    def feed(self, data: bytes) -> Iterator[Record | ReadError]:
        if self.drop:
            d = min(self.drop, len(data))
            self.drop -= d
            self.pos += d
            data = data[d:]
        self.buf.extend(data)
        yield from self._cut(final=False)

    def finish(self) -> Iterator[Record | ReadError]:
        yield from self._cut(final=True)

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        self.pos += n

    def _cut(self, final: bool) -> Iterator[Record | ReadError]:
        buf = self.buf
        while True:
            i = 0
            while i < len(buf) and buf[i] in b"\r\n":
                i += 1
            self._consume(i)
            if not buf:
                return
            if len(buf) < len(WARC_MAGIC) and not final:
                return
            if not buf.startswith(WARC_MAGIC):
                nxt = buf.find(b"\n" + WARC_MAGIC)
                if nxt < 0 and not final and len(buf) < MAX_HEADER_BYTES:
                    return
                cut = nxt + 1 if nxt >= 0 else len(buf)
                yield ReadError(self.offset(self.pos), "bad_record", f"{cut} byte(s) that are not a WARC record skipped")
                self._consume(cut)
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if final or len(buf) > MAX_HEADER_BYTES:
                    yield ReadError(self.offset(self.pos), "bad_record", "record header not terminated")
                    self._consume(len(WARC_MAGIC))
                    continue
                return
            headers = _headers(bytes(buf[:end]))
            length = _content_length(headers)
            if length is None:
                yield ReadError(self.offset(self.pos), "bad_record", "missing or bad Content-Length")
                self._consume(end + 4)
                continue
            total = end + 4 + length
            if length > self.cap:
                yield ReadError(self.offset(self.pos), "bad_record", f"record of {length} bytes skipped (cap {self.cap})")
                here = min(total, len(buf))
                self.drop = total - here
                self._consume(here)
                continue
            if len(buf) < total:
                if final:
                    yield ReadError(self.offset(self.pos), "bad_record", f"body has {len(buf) - end - 4} of {length} bytes")
                    self._consume(len(buf))
                return
            yield Record(self.offset(self.pos), headers, bytes(buf[end + 4:total]))
            self._consume(total)


def _gzip_records(fh: BinaryIO, head: bytes, asm: _Assembler) -> Iterator[Record | ReadError]:
    raw = head  # compressed bytes not yet consumed start at raw[pos]
    pos = 0
    base = 0  # file offset of raw[0]
    at_eof = False

    def fill() -> bool:
        nonlocal raw, pos, base, at_eof
        if at_eof:
            return False
        chunk = fh.read(CHUNK)
        if not chunk:
            at_eof = True
            return False
        raw = raw[pos:] + chunk
        base += pos
        pos = 0
        return True

    damaged = False  # the bytes being skipped are the rest of a member already reported
    while pos < len(raw) or fill():
        if raw[pos:pos + 3] != GZIP_MAGIC:
            if len(raw) - pos < 3 and fill():
                continue
            i = raw.find(GZIP_MAGIC, pos + 1)
            while i < 0 and fill():
                i = raw.find(GZIP_MAGIC, pos + 1)
            cut = (i if i >= 0 else len(raw)) - pos
            if not damaged:
                yield ReadError(base + pos, "bad_gzip", f"{cut} byte(s) of non-gzip data skipped")
            damaged = False
            asm.reset()
            pos += cut
            continue
        start = base + pos
        damaged = False
        asm.begin_member(start)
        d = zlib.decompressobj(31)
        fed = 0  # compressed bytes of this member consumed
        error = None
        try:
            while True:
                if pos >= len(raw) and not fill():
                    error = "gzip member truncated at end of file"
                    break
                piece = raw[pos:pos + FEED]
                pos += len(piece)
                fed += len(piece)
                out = d.decompress(piece, CHUNK)
                while True:
                    yield from asm.feed(out)
                    if d.eof or not d.unconsumed_tail:
                        break
                    out = d.decompress(d.unconsumed_tail, CHUNK)
                if d.eof:
                    pos -= len(d.unused_data)
                    break
        except zlib.error as e:
            error = f"corrupt gzip member ({e})"
        if error:
            yield ReadError(start, "bad_gzip", error)
            damaged = True
            asm.reset()
            if start + 1 >= base:  # look for the next member from just after this one's header
                pos = start + 1 - base
    yield from asm.finish()


# -- shared ----------------------------------------------------------------------------------

def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _content_length(headers: dict[str, str]) -> int | None:
    try:
        n = int(headers.get("content-length", ""))
    except ValueError:
        return None
    return n if n >= 0 else None
