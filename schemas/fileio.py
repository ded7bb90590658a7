"""Files on local paths and on object storage (s3://, gs://, ...), written atomically.

The one layer for every read and write of data, in the pipeline's launchers and Beam
workers, the trainer, export, eval, validate and report alike. Local paths stay plain
``os`` calls (the default, and the fastest); a URL goes through ``pyarrow.fs``: the
filesystem layer of the library every part of openwit already imports for Parquet, with
native S3 and Google Cloud Storage clients in its wheels (nothing more to install), ranged
reads for the trainer's random access into shards, and the standard configuration: the
AWS_* variables (AWS_ENDPOINT_URL for an S3-compatible server, credentials, region) and
Google's application-default credentials. Beam's FileSystems are not used: they would put
Beam inside the trainer; fsspec would be a second client stack beside pyarrow's.

A file appears under its final name only when complete: local files are written beside
their destination under a temp name and renamed; remote files are written to a local temp
file and uploaded as one object (an object store publishes an object when its upload
completes, never a part of it).
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
from typing import BinaryIO, Iterator

import pyarrow.fs as pafs

from schemas.errors import UserError

_CACHE: dict[tuple, pafs.FileSystem] = {}
_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_REGION",
        "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "OPENWIT_GCS_RETRY_SECONDS")


def is_local(path: str) -> bool:
    return "://" not in str(path)


def filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path within it) for a URL; an unknown scheme is a one-line error.

    One client per scheme and bucket and environment in a process: building an S3 client
    resolves the bucket's region, a request worth making once, not per file.
    """
    scheme, _, rest = url.partition("://")
    bucket = rest.split("/", 1)[0]
    key = (scheme, bucket, tuple(os.environ.get(k) for k in _ENV))
    fs = _CACHE.get(key)
    try:
        if fs is None:
            # the client from the bucket alone: a key is any text (spaces, accents, brackets),
            # which pyarrow's URI parser would refuse
            fs = _CACHE[key] = _gcs() if scheme in ("gs", "gcs") else pafs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]
    except OSError as e:  # a known scheme whose store does not answer (resolving the bucket's region)
        raise UserError(f"{url}: cannot reach it ({type(e).__name__}: {str(e)[:300]})") from None
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid for an unknown scheme
        raise UserError(f"{url}: no filesystem for {scheme}:// ({type(e).__name__}: {str(e)[:300]})") from None
    return fs, rest.rstrip("/")


GCS_RETRY_ENV = "OPENWIT_GCS_RETRY_SECONDS"


def _gcs() -> pafs.FileSystem:
    """pyarrow's GCS client with a bounded retry budget per call (its own default is 15
    minutes, so a machine without credentials or network would seem to hang): 120 seconds,
    or ``OPENWIT_GCS_RETRY_SECONDS``."""
    import datetime

    try:
        seconds = float(os.environ.get(GCS_RETRY_ENV, "120"))
    except ValueError:
        raise UserError(f"{GCS_RETRY_ENV}={os.environ[GCS_RETRY_ENV]!r}: expected a number of seconds") from None
    return pafs.GcsFileSystem(retry_time_limit=datetime.timedelta(seconds=seconds))


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


def _info(path: str) -> pafs.FileInfo:
    fs, p = filesystem(path)
    with _remote(path, "reach it"):
        return fs.get_file_info(p)


def join(base: str, *parts: str) -> str:
    base = str(base)
    return os.path.join(base, *parts) if is_local(base) else posixpath.join(base, *parts)


def dirname(path: str) -> str:
    return os.path.dirname(os.path.normpath(path)) if is_local(path) else posixpath.dirname(path.rstrip("/"))


def basename(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) if is_local(path) else posixpath.basename(path.rstrip("/"))


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path)
    return _info(path).type != pafs.FileType.NotFound


def isfile(path: str) -> bool:
    if is_local(path):
        return os.path.isfile(path)
    return _info(path).type == pafs.FileType.File


def isdir(path: str) -> bool:
    """A local folder, or a URL prefix that holds objects."""
    if is_local(path):
        return os.path.isdir(path)
    return _info(path).type == pafs.FileType.Directory


def size(path: str) -> int:
    if is_local(path):
        return os.path.getsize(path)
    info = _info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(path)
    return int(info.size)


READ_BUFFER = 4 << 20  # one request per 4 MiB when a remote file is read through


def open_ranged(path: str) -> BinaryIO:
    """A seekable binary file for random access (the trainer's samples): on object storage
    every read is one ranged request for just the bytes asked for."""
    if is_local(path):
        return open(path, "rb")
    fs, p = filesystem(path)
    with _remote(path, "open it"):
        return fs.open_input_file(p)


def open_read(path: str) -> BinaryIO:
    """A seekable binary file for reading through (no decompression: readers detect gzip
    themselves); on object storage reads are buffered, one request per 4 MiB, and a
    short seek forward stays within the buffer."""
    if is_local(path):
        return open(path, "rb")
    return io.BufferedReader(open_ranged(path), buffer_size=READ_BUFFER)


def read_bytes(path: str) -> bytes:
    with open_read(path) as fh:
        return fh.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def _entries(folder: str, recursive: bool) -> list[tuple[str, str]]:
    """(path relative to folder, URL or path) of the files under folder, sorted."""
    if is_local(folder):
        if not os.path.isdir(folder):
            return []
        if not recursive:
            return sorted((n, os.path.join(folder, n)) for n in os.listdir(folder)
                          if os.path.isfile(os.path.join(folder, n)))
        out = []
        for d, _, names in os.walk(folder):
            for n in names:
                full = os.path.join(d, n)
                out.append((os.path.relpath(full, folder).replace(os.sep, "/"), full))
        return sorted(out)
    fs, p = filesystem(folder)
    with _remote(folder, "list it"):
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=recursive, allow_not_found=True))
    scheme = folder.partition("://")[0]
    return sorted((i.path[len(p) + 1:], f"{scheme}://{i.path}") for i in infos if i.type == pafs.FileType.File)


def listing(folder: str) -> list[tuple[str, int, int]]:
    """(name, size, modification time in ns) of the files directly in ``folder``, sorted."""
    if is_local(folder):
        if not os.path.isdir(folder):
            return []
        out = []
        with os.scandir(folder) as it:
            for e in it:
                if e.is_file():
                    st = e.stat()
                    out.append((e.name, st.st_size, st.st_mtime_ns))
        return sorted(out)
    fs, p = filesystem(folder)
    with _remote(folder, "list it"):
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=False, allow_not_found=True))
    return sorted((i.base_name, int(i.size), int(i.mtime_ns or 0)) for i in infos if i.type == pafs.FileType.File)


def listdir(folder: str) -> list[str]:
    """The names of the files directly in ``folder`` (none if it does not exist)."""
    return [name for name, _ in _entries(folder, recursive=False)]


def walk(folder: str) -> list[str]:
    """The paths, relative to ``folder`` and with ``/`` separators, of every file under it."""
    return [name for name, _ in _entries(folder, recursive=True)]


def remove(path: str) -> None:
    if is_local(path):
        os.unlink(path)
    else:
        fs, p = filesystem(path)
        with _remote(path, "remove it"):
            fs.delete_file(p)


def remove_tree(folder: str) -> None:
    """Remove a folder and everything under it (nothing if it does not exist)."""
    if is_local(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    for _, url in _entries(folder, recursive=True):
        remove(url)


def makedirs(path: str) -> None:
    """A local folder, created; under a URL (object stores have no folders) a probe object
    is written and removed, so a missing bucket or a refused write is one line now, not an
    error inside a worker later."""
    if is_local(path):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise UserError(f"{path}: cannot create this folder ({e.strerror})") from None
        try:  # an existing folder may still refuse files (permissions, a read-only mount)
            fd, probe = tempfile.mkstemp(prefix=".openwit-write-probe-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UserError(f"{path}: cannot write here ({e.strerror})") from None
        return
    fs, p = filesystem(path)
    probe = posixpath.join(p, ".openwit-write-probe")
    try:
        with fs.open_output_stream(probe, compression=None) as fh:
            fh.write(b"")
        fs.delete_file(probe)
    except Exception as e:  # noqa: BLE001 - each backend raises its own kind
        raise UserError(f"{path}: cannot write here ({type(e).__name__}: {str(e)[:300]})") from None


def _upload(local: str, dest: str) -> None:
    fs, p = filesystem(dest)
    with _remote(dest, "write it"), open(local, "rb") as src, fs.open_output_stream(p, compression=None) as out:
        shutil.copyfileobj(src, out, 8 << 20)


def _umask() -> int:
    """The process's umask, read without changing it where the kernel says it (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share(path: str) -> None:
    """Give a file written through a private temp file (mode 0600) the mode any new file
    gets here: 0666 less the umask (0644 by default), so that others who share the
    folder can read it, as they could read a file written in place."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_local(dest: str) -> Iterator[str]:
    """Yield a local temp path; on success it becomes ``dest`` (local or remote)."""
    dest = str(dest)
    if is_local(dest):
        folder = os.path.dirname(os.path.abspath(dest))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise UserError(f"{folder}: cannot create this folder ({e.strerror})") from None
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=folder)
    else:
        fd, tmp = tempfile.mkstemp(suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        if is_local(dest):
            share(tmp)
            os.replace(tmp, dest)
        else:
            _upload(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(dest: str, data: bytes) -> None:
    with atomic_local(dest) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def write_text(dest: str, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str, obj: object) -> None:
    write_text(dest, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: str) -> dict:
    return json.loads(read_bytes(path))


def publish(src: str, dest: str) -> None:
    """Make a complete file ``src`` also appear as ``dest`` in one step: a hard link renamed
    into place on a local disk, a server-side copy on object storage (``src`` is kept)."""
    if is_local(src) and is_local(dest):
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:  # another device, or a filesystem without hard links
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    elif not is_local(src) and not is_local(dest) and src.partition("://")[0] == dest.partition("://")[0]:
        fs, p = filesystem(src)
        with _remote(dest, "copy to it"):
            fs.copy_file(p, filesystem(dest)[1])
    elif is_local(src):
        _upload(src, dest)
    else:
        with open_read(src) as fh, atomic_local(dest) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(fh, out, 8 << 20)


def get_tree(folder: str, local: str) -> None:
    """Copy every file under ``folder`` (local or remote) into the local folder ``local``."""
    for name, url in _entries(folder, recursive=True):
        dest = os.path.join(local, *name.split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open_read(url) as fh, open(dest, "wb") as out:
            shutil.copyfileobj(fh, out, 8 << 20)


def put_tree(local: str, folder: str) -> None:
    """Publish every file under the local folder ``local`` into ``folder``."""
    for name, path in _entries(local, recursive=True):
        publish(path, join(folder, *name.split("/")))


def expand_inputs(specs: list[str]) -> list[str]:
    """Sorted, de-duplicated files named by globs, plain paths or path-list files.

    A path-list file (``*.paths`` or ``*.paths.gz``, as Common Crawl publishes) holds one
    path a line; relative ones are taken relative to the list's folder.
    """
    return sorted({f for f, _ in expand_inputs_with_roots(specs)})


def expand_inputs_with_roots(specs: list[str]) -> list[tuple[str, str]]:
    """(file, root) for every file the specs name, sorted by file: ``root`` is the folder
    the spec names the file from (a glob's fixed prefix, a folder, a path list's folder, a
    plain file's own folder), so ``relative(file, root)`` names the input the same way
    wherever the inputs are kept (a local disk, a bucket)."""
    found: dict[str, str] = {}
    for spec in specs:
        for item in (s.strip() for s in str(spec).split(",")):
            if not item:
                continue
            if re.search(r"\.paths(\.gz)?$", item):
                root = dirname(item)
                listed = _read_path_list(item)
                missing = missing_files(listed)
                if missing:
                    raise UserError(f"--input {item}: {len(missing):,} of the {len(listed):,} files it lists do not "
                                    f"exist (first: {missing[0]})")
                for f in listed:
                    found.setdefault(f, root)
                continue
            matched, root = _match(item)
            if not matched:
                raise UserError(f"--input {item}: no such file (or the pattern matches nothing)")
            for f in matched:
                found.setdefault(f, root)
    return sorted(found.items())


def named_inputs(specs: list[str]) -> list[tuple[str, str]]:
    """(path, name) of every input file, by path: the name is the path relative to the
    folder the input was given from, so outputs named after it are the same wherever the
    inputs lie. Two inputs may not share a name (their outputs would collide)."""
    files = [(f, relative(f, root)) for f, root in expand_inputs_with_roots(specs)]
    seen: dict[str, str] = {}
    for f, name in files:
        if name in seen:
            raise UserError(f"--input: {seen[name]} and {f} are both named {name} relative to the "
                            "folders they are given from; give them from one folder")
        seen[name] = f
    return files


def relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` with ``/`` separators (``path`` as is if outside it)."""
    root = root.rstrip("/").rstrip(os.sep)
    if root and (path.startswith(root + "/") or path.startswith(root + os.sep)):
        return path[len(root) + 1:].replace(os.sep, "/")
    return path


def _match(item: str) -> tuple[list[str], str]:
    """The files a path, a folder (its files) or a glob names (``*`` within a folder, ``**``
    across folders, a trailing ``/`` for every file under it), hidden files left out, and
    the folder they are named from."""
    if item.endswith("/"):
        item += "**"
    magic = re.search(r"[*?\[]", item)
    if magic:
        root = item[:magic.start()].rsplit("/", 1)[0] if "/" in item[:magic.start()] else "."
        if is_local(item):
            import glob

            matched = [p for p in glob.glob(item, recursive=True) if os.path.isfile(p)]
        else:
            pattern = re.compile(_glob_regex(item))
            matched = [url for _, url in _entries(root, recursive=True) if pattern.fullmatch(url)]
    elif isdir(item):
        root = item.rstrip("/")
        matched = [join(item, n) for n in listdir(item)]
    else:
        root = dirname(item)
        matched = [item] if isfile(item) else []
    return [m for m in matched if not basename(m).startswith(".")], root


def _glob_regex(pattern: str) -> str:
    """A glob as a regex over full paths: ``**`` crosses folders, ``*`` and ``?`` do not."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                out.append(fnmatch.translate(pattern[i:end + 1])[4:-3])
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def missing_files(paths: list[str]) -> list[str]:
    """Those of ``paths`` that are not files, in order: one listing per folder, not one
    request per file (a Common Crawl path list names ~100,000 files in ~100 folders)."""
    by_folder: dict[str, set[str]] = {}
    for p in paths:
        by_folder.setdefault(dirname(p), set())
    for folder in by_folder:
        by_folder[folder] = {name for name, _, _ in listing(folder)}
    return [p for p in paths if basename(p) not in by_folder[dirname(p)]]


def _read_path_list(path: str) -> list[str]:
    if not exists(path):
        raise UserError(f"--input {path}: no such path list")
    data = read_bytes(path)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    folder = dirname(path)
    out = []
    for line in data.decode("utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line if ("://" in line or os.path.isabs(line)) else join(folder, line))
    return out


def stem(name: str) -> str:
    """A file-name-safe, unique name for an input file's outputs."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", basename(name))[:120]
    return f"{base}-{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"
