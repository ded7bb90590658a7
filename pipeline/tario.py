"""Fast streaming tar reading and writing for webdataset shards.

The standard library's ``tarfile`` parses every header field in Python, PAX records
included (img2dataset writes PAX headers for every member), which made reading and
writing headers most of the cost of copying samples between shards. This module reads
only what a shard copy needs (name, type, size; a PAX or GNU long name when present) and
writes plain POSIX ustar members with fixed metadata (mtime 0, owner 0/0, mode 0644), so
the bytes depend only on the names and contents. ``tarfile``, GNU tar and webdataset read
the output.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

BLOCK = 512
RECORD = 20 * BLOCK  # tar pads the archive to whole records, as tarfile does


def _octal(field: bytes) -> int:
    field = field.rstrip(b"\0 ").strip()
    if field and field[0] & 0x80:  # GNU base-256 for big numbers
        return int.from_bytes(field, "big") & ~(0x80 << 8 * (len(field) - 1))
    return int(field, 8) if field else 0


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ValueError(f"truncated tar: wanted {n} bytes, got {len(data)}")
    return data


def _pax_path(data: bytes) -> str | None:
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        pos += length
    return None


def iter_members(fh: BinaryIO, want=None) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) for each regular file of a tar stream. ``want(name)`` -> False skips
    the data (yields None) without keeping it in memory."""
    long_name: str | None = None
    while True:
        header = fh.read(BLOCK)
        if len(header) < BLOCK or header == b"\0" * BLOCK:
            return
        size = _octal(header[124:136])
        kind = header[156:157]
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        if kind in (b"x", b"L"):
            data = _read_exact(fh, padded)[:size]
            long_name = _pax_path(data) if kind == b"x" else data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if kind == b"g":
            _read_exact(fh, padded)
            continue
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            prefix = header[345:500].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and prefix:
                name = prefix.decode("utf-8", "surrogateescape") + "/" + name
        if kind not in (b"0", b"\0", b"7"):  # not a regular file: skip its data
            fh.seek(padded, 1) if fh.seekable() else _read_exact(fh, padded)
            continue
        if want is not None and not want(name):
            fh.seek(padded, 1) if fh.seekable() else _read_exact(fh, padded)
            yield name, None
            continue
        block = _read_exact(fh, padded)
        yield name, block[:size]


def wanted_samples(fh: BinaryIO, want, broken: list[str]) -> Iterator[tuple[str, str, bytes]]:
    """(key, lower-cased extension, data) of each member ``want(name)`` asks for, as in a
    webdataset tar ({key}.{ext}); a truncated or corrupt tar ends the stream, its error
    appended to ``broken`` (what follows it is missing)."""
    members = iter_members(fh, want)
    while True:
        try:
            name, data = next(members)
        except StopIteration:
            return
        except ValueError as e:
            broken.append(str(e))
            return
        if data is not None:
            key, _, ext = name.rpartition("/")[2].partition(".")
            yield key, ext.lower(), data


def header(name: str, size: int) -> bytes:
    """A ustar header for a regular file with fixed metadata."""
    raw = name.encode("utf-8")
    if len(raw) > 100:
        raise ValueError(f"member name longer than 100 bytes: {name!r}")
    h = bytearray(BLOCK)
    h[0:len(raw)] = raw
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:155] = b"%06o\0" % sum(h)
    return bytes(h)


class Writer:
    """Append members to a binary file; ``close`` writes the end-of-archive blocks."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.offset = 0

    def add(self, name: str, data: bytes) -> None:
        pad = -len(data) % BLOCK
        self.fh.write(header(name, len(data)))
        self.fh.write(data)
        if pad:
            self.fh.write(b"\0" * pad)
        self.offset += BLOCK + len(data) + pad

    def close(self) -> None:
        end = self.offset + 2 * BLOCK
        self.fh.write(b"\0" * (2 * BLOCK + (-end % RECORD)))
