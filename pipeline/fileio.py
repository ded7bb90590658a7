"""Files on local paths and on any fsspec URL (s3://, gs://, ...), written atomically.

One layer for every read and write of data. Local paths stay plain ``os`` calls (the
default, and the fastest); a URL goes through fsspec, the filesystem library that pyarrow,
webdataset and open_clip's data loaders also speak, so one configuration (the standard
AWS_* or Google variables, or fsspec's own) serves the Beam jobs' workers, the trainer and
the report alike. Beam's FileSystems are not used: they would put Beam inside the trainer
and give no ranged reads. s3:// needs ``openwit[s3]`` (s3fs), gs:// ``openwit[gcs]`` (gcsfs).

A file appears under its final name only when complete: local files are written beside
their destination under a temp name and renamed; remote files are written to a local temp
file and uploaded in one request (an object store publishes an object when its upload
completes, never a part of it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from schemas import UserError


def is_local(path: str) -> bool:
    return "://" not in path


def filesystem(url: str):
    """(fsspec filesystem, path within it) for a URL; a missing backend is a one-line error."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as e:
        scheme = url.split("://", 1)[0]
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme)
        hint = f" (pip install 'openwit[{extra}]')" if extra else ""
        raise UserError(f"{url}: no filesystem for {scheme}:// here{hint}: {e}") from None
    except ValueError as e:
        raise UserError(f"{url}: {e}") from None
    # Listings are cached per process by fsspec; other processes (Beam's workers, a rerun)
    # write here too, so every question is asked afresh.
    fs.invalidate_cache()
    return fs, path


@contextlib.contextmanager
def _remote(url: str, what: str) -> Iterator[None]:
    """A backend's failure (no endpoint, refused credentials, a network error) as one line
    that names the URL, not a traceback from deep inside the object-store client."""
    try:
        yield
    except (UserError, FileNotFoundError):
        raise
    except Exception as e:  # noqa: BLE001 - each backend raises its own kind
        raise UserError(f"{url}: cannot {what} ({type(e).__name__}: {str(e)[:300]})") from None


def _url(fs, path: str) -> str:
    return fs.unstrip_protocol(path)


def join(base: str, *parts: str) -> str:
    return os.path.join(base, *parts) if is_local(base) else posixpath.join(base, *parts)


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path)
    fs, p = filesystem(path)
    with _remote(path, "reach it"):
        return fs.exists(p)


def isdir(path: str) -> bool:
    """A local folder, or a URL prefix that holds objects."""
    if is_local(path):
        return os.path.isdir(path)
    fs, p = filesystem(path)
    with _remote(path, "reach it"):
        return fs.isdir(p)


def size(path: str) -> int:
    if is_local(path):
        return os.path.getsize(path)
    fs, p = filesystem(path)
    with _remote(path, "read its size"):
        return int(fs.size(p))


def open_read(path: str) -> BinaryIO:
    """A raw binary stream (no decompression: readers detect gzip themselves)."""
    if is_local(path):
        return open(path, "rb")
    fs, p = filesystem(path)
    with _remote(path, "open it"):
        return fs.open(p, "rb")


def listdir(folder: str) -> list[str]:
    """The names of the files directly in ``folder`` (none if it does not exist)."""
    if is_local(folder):
        return sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))) \
            if os.path.isdir(folder) else []
    fs, p = filesystem(folder)
    try:
        with _remote(folder, "list it"):
            entries = fs.ls(p, detail=True)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file")


def remove(path: str) -> None:
    if is_local(path):
        os.unlink(path)
    else:
        fs, p = filesystem(path)
        with _remote(path, "remove it"):
            fs.rm_file(p)


def makedirs(path: str) -> None:
    """A local folder, created; under a URL (object stores have no folders) a probe object
    is written and removed, so a missing bucket or a refused write is one line now, not an
    error inside a worker later."""
    if is_local(path):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise UserError(f"{path}: cannot create this folder ({e.strerror})") from None
        return
    fs, p = filesystem(path)
    probe = posixpath.join(p, ".openwit-write-probe")
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as e:  # noqa: BLE001 - each backend raises its own kind
        raise UserError(f"{path}: cannot write here ({type(e).__name__}: {e})") from None


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
            fs, p = filesystem(dest)
            with _remote(dest, "write it"):
                fs.put_file(tmp, p)
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
            found = _match(item)
            if not found:
                raise UserError(f"--input {item}: no such file (or the pattern matches nothing)")
            files.update(found)
    return sorted(files)


def _match(item: str) -> list[str]:
    """The files a path, a folder (its files) or a glob names (``*`` within a folder, ``**``
    across folders, a trailing ``/`` for every file under it), hidden files left out."""
    if item.endswith("/"):
        item += "**"
    magic = any(c in item for c in "*?[")
    if is_local(item):
        import glob

        if magic:
            matched = [p for p in glob.glob(item, recursive=True) if os.path.isfile(p)]
        elif os.path.isdir(item):
            matched = [os.path.join(item, n) for n in listdir(item)]
        else:
            matched = [item] if os.path.isfile(item) else []
    else:
        fs, p = filesystem(item)
        try:
            if magic:
                matched = [_url(fs, m) for m in fs.glob(p) if fs.isfile(m)]
            elif fs.isdir(p):
                matched = [join(item, n) for n in listdir(item)]
            else:
                matched = [item] if fs.isfile(p) else []
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - each backend raises its own kind
            raise UserError(f"--input {item}: cannot list ({type(e).__name__}: {str(e)[:300]})") from None
    return [m for m in matched if not os.path.basename(m).startswith(".")]


def _read_path_list(path: str) -> list[str]:
    import gzip

    if not exists(path):
        raise UserError(f"--input {path}: no such path list")
    with open_read(path) as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    folder = os.path.dirname(path) if is_local(path) else posixpath.dirname(path)
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
