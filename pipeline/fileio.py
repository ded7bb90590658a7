"""Files on any Beam FileSystems URL (local paths, gs://, s3://, ...), written atomically.

A file appears under its final name only when complete: local files are written beside
their destination under a temp name and renamed; remote files are written to a local temp
file and copied up in one create/close (object stores publish on close).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from schemas import UserError

COPY_CHUNK = 8 << 20


def _beam():
    """Beam's FileSystems and CompressionTypes, imported on first use of a URL: a stage
    that only touches local paths (download's parent, for one) does not pay Beam's import."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    return FileSystems, CompressionTypes


def is_local(path: str) -> bool:
    return "://" not in path


def join(base: str, *parts: str) -> str:
    return os.path.join(base, *parts) if is_local(base) else _beam()[0].join(base, *parts)


def exists(path: str) -> bool:
    return os.path.exists(path) if is_local(path) else _beam()[0].exists(path)


def size(path: str) -> int:
    if is_local(path):
        return os.path.getsize(path)
    return _beam()[0].match([path])[0].metadata_list[0].size_in_bytes


def open_read(path: str) -> BinaryIO:
    """A raw binary stream (no decompression: readers detect gzip themselves)."""
    if is_local(path):
        return open(path, "rb")
    filesystems, compression = _beam()
    return filesystems.open(path, compression_type=compression.UNCOMPRESSED)


def makedirs(path: str) -> None:
    if is_local(path):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise UserError(f"{path}: cannot create this folder ({e.strerror})") from None


@contextlib.contextmanager
def atomic_local(dest: str) -> Iterator[str]:
    """Yield a local temp path; on success it becomes ``dest`` (local or remote)."""
    if is_local(dest):
        folder = os.path.dirname(os.path.abspath(dest))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=folder)
    else:
        fd, tmp = tempfile.mkstemp(suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        if is_local(dest):
            os.replace(tmp, dest)
        else:
            filesystems, compression = _beam()
            with open(tmp, "rb") as src, filesystems.create(dest, compression_type=compression.UNCOMPRESSED) as out:
                while chunk := src.read(COPY_CHUNK):
                    out.write(chunk)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(dest: str, obj: object) -> None:
    with atomic_local(dest) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: str) -> dict:
    with open_read(path) as fh:
        return json.loads(fh.read())


def expand_inputs(specs: list[str]) -> list[str]:
    """Sorted, de-duplicated files named by globs, plain paths or path-list files.

    A path-list file (``*.paths`` or ``*.paths.gz``, as Common Crawl publishes) holds one
    path a line; relative ones are taken relative to the list's folder.
    """
    files: set[str] = set()
    for spec in specs:
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            if re.search(r"\.paths(\.gz)?$", item):
                files.update(_read_path_list(item))
                continue
            try:
                matched = _beam()[0].match([item])[0].metadata_list
            except Exception as e:  # Beam raises BeamIOError with a nested message
                raise UserError(f"--input {item}: cannot list ({e})") from None
            found = [m.path for m in matched if not os.path.basename(m.path).startswith(".")]
            if not found:
                raise UserError(f"--input {item}: no such file (or the pattern matches nothing)")
            files.update(found)
    return sorted(files)


def _read_path_list(path: str) -> list[str]:
    import gzip

    if not exists(path):
        raise UserError(f"--input {path}: no such path list")
    with open_read(path) as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    folder = os.path.dirname(path)
    out = []
    for line in data.decode("utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line if ("://" in line or os.path.isabs(line)) else join(folder, line))
    return out


def stem(path: str) -> str:
    """A file-name-safe, unique name for an input file's outputs."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(path))[:120]
    return f"{base}-{hashlib.blake2b(path.encode(), digest_size=4).hexdigest()}"
