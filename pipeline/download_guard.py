"""The guards openwit adds to img2dataset's workers (used by the download stage).

img2dataset fetches with ``urllib.request.urlopen`` in worker processes it starts with the
*spawn* method, and decodes images with OpenCV before it checks their area. So:

- ``GuardedDownloader`` subclasses img2dataset's ``Downloader``; the stage hands img2dataset
  this class (``guarded_img2dataset``), img2dataset pickles the instance to its workers, and
  unpickling it in a worker installs ``pipeline.netguard``'s opener as that process's
  global urllib opener. Every fetch, and every redirect hop, then goes through the address
  guard, the redirect and byte caps, robots.txt and our user agent; a refusal surfaces in
  img2dataset's ``error_message`` as ``"<reason code>: <detail>"``.
- ``PixelCapResizer`` wraps img2dataset's resizer: it reads the image header (Pillow,
  no pixel decoded) and refuses more than ``max_pixels`` before OpenCV allocates anything,
  so a decompression bomb costs a header read, not gigabytes.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from typing import Iterator

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations

import importlib  # noqa: E402

from img2dataset import downloader as i2d_downloader  # noqa: E402

# The package re-exports a function named `main`, hiding the module of the same name.
i2d_main = importlib.import_module("img2dataset.main")
from PIL import Image  # noqa: E402

from pipeline import netguard  # noqa: E402

DEFAULT_MAX_PIXELS = 64_000_000


class PixelCapResizer:
    """img2dataset's resizer behind a header-only pixel-count check."""

    def __init__(self, resizer, max_pixels: int):
        self.resizer, self.max_pixels = resizer, max_pixels

    def __call__(self, img_stream, *args, **kwargs):
        try:
            pos = img_stream.tell()
            Image.MAX_IMAGE_PIXELS = None  # we enforce our own cap, on the header, below
            with Image.open(img_stream) as probe:
                width, height = probe.size
            img_stream.seek(pos)
        except Exception:  # not an image Pillow knows: let img2dataset's decoder judge it
            img_stream.seek(0)
        else:
            if width * height > self.max_pixels:
                return None, None, None, None, None, \
                    f"too_large_pixels: {width}x{height} declared, more than {self.max_pixels} pixels"
        return self.resizer(img_stream, *args, **kwargs)


class GuardedDownloader(i2d_downloader.Downloader):
    """img2dataset's Downloader that installs openwit's guarded opener in every worker."""

    guard: dict = {}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.guard = dict(type(self).guard)
        self.resizer = PixelCapResizer(self.resizer, self.guard.get("max_pixels", DEFAULT_MAX_PIXELS))

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        install(self.guard)

    def __call__(self, row):
        install(self.guard)  # also when img2dataset runs the shard in this very process
        return super().__call__(row)


_installed: dict | None = None


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no orphans after a kill -9)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the stage's own process-tree kill still applies


def install(guard: dict) -> None:
    """Make the guarded opener this process's urllib opener (once per configuration)."""
    global _installed
    if _installed == guard:
        return
    die_with_parent()
    policy = netguard.AddressPolicy.from_strings(guard.get("allow", ()), guard.get("allow_private", False))
    opener = netguard.build_opener(policy, max_redirects=guard.get("max_redirects", 5),
                                   max_bytes=guard.get("max_bytes", 32 << 20),
                                   user_agent=guard.get("user_agent", netguard.DEFAULT_USER_AGENT),
                                   robots=guard.get("robots", True), timeout=guard.get("timeout", 10.0),
                                   max_per_host=guard.get("max_per_host", 0))
    urllib.request.install_opener(opener)
    _installed = dict(guard)


@contextlib.contextmanager
def guarded_img2dataset(**guard) -> Iterator[None]:
    """Within this block, ``img2dataset.download`` builds GuardedDownloaders with ``guard``:
    allow (addresses/networks), allow_private, max_redirects, max_bytes, max_pixels,
    user_agent, robots, timeout."""
    original = i2d_main.Downloader
    GuardedDownloader.guard = dict(guard)
    i2d_main.Downloader = GuardedDownloader
    try:
        yield
    finally:
        i2d_main.Downloader = original
        GuardedDownloader.guard = {}


def _main(argv: list[str]) -> int:
    """Run one img2dataset job behind the guards: ``python -m pipeline.download_guard JOB_JSON``."""
    import json

    import img2dataset

    die_with_parent()
    job = json.loads(argv[0])
    with guarded_img2dataset(**job["guard"]):
        img2dataset.download(**job["download"])
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
