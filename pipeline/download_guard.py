"""The guards openwit adds to img2dataset's workers (used by the download stage).

img2dataset fetches with ``urllib.request.urlopen`` in worker processes it starts with the
*spawn* method, and decodes images with OpenCV before it checks their area. So:

- ``GuardedDownloader`` subclasses img2dataset's ``Downloader``; the stage hands img2dataset
  this class (``guarded_img2dataset``), img2dataset pickles the instance to its workers, and
  unpickling it in a worker installs ``pipeline.netguard``'s opener as that process's
  global urllib opener. Every fetch, and every redirect hop, then goes through the address
  guard, the deadline, the redirect and byte caps, http(s) only, X-Robots-Tag, robots.txt
  and our user agent; a refusal surfaces in
  img2dataset's ``error_message`` as ``"<reason code>: <detail>"``.
- ``PixelCapResizer`` wraps img2dataset's resizer: it reads the image header (Pillow,
  no pixel decoded) and refuses what Pillow cannot identify, more than ``max_pixels``, or
  a decode that would take more than ``max_decode_bytes``, before OpenCV allocates
  anything, so a decompression bomb costs a header read, not gigabytes. OpenCV's own
  pixel limit is set in the workers' environment too, and Pillow's bomb guard stays on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.request
import warnings
from typing import Iterator

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations

import importlib  # noqa: E402

from img2dataset import downloader as i2d_downloader  # noqa: E402

# The package re-exports a function named `main`, hiding the module of the same name.
i2d_main = importlib.import_module("img2dataset.main")
from PIL import Image  # noqa: E402

from pipeline import netguard  # noqa: E402

DEFAULT_MAX_PIXELS = 64_000_000
PILLOW_MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's default, kept as a floor
DEFAULT_MAX_DECODE_BYTES = 512 << 20
# img2dataset mattes an alpha image onto white in float64: up to three three-channel
# float64 temporaries live at once (72 bytes a pixel) beside the decoded image; measured
# with tracemalloc on its resizer: 76 bytes a pixel in all for 8-bit RGBA (docs/download.md).
ALPHA_MATTING_BYTES_PER_PIXEL = 80
DECODE_MARGIN = 1.1  # the resize and re-encode around the decode: measured 1.03
_GREY_MODES = frozenset({"1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


def decode_bytes(probe: Image.Image, head: bytes) -> tuple[int, str]:
    """An upper estimate of the memory img2dataset's decode of this image takes, from its
    header only: width x height x channels x bytes per sample as OpenCV decodes it
    (IMREAD_UNCHANGED: 16-bit stays 16-bit, palette becomes BGR, transparency becomes a
    fourth channel), plus img2dataset's float64 alpha matting. Returns (bytes, what)."""
    width, height = probe.size
    mode = probe.mode
    alpha = "A" in mode or "a" in mode or "transparency" in probe.info
    channels = 4 if alpha or Image.getmodebands(mode) == 4 else 1 if mode in _GREY_MODES else 3
    sample = 4 if mode in ("I", "F") else 2 if mode.startswith("I;16") else 1
    if probe.format == "PNG" and len(head) > 24 and head[24] == 16:  # IHDR bit depth
        sample = max(sample, 2)
    if probe.format == "TIFF":
        bits = probe.tag_v2.get(258) or (8,)
        sample = max(sample, -(-max(bits if isinstance(bits, tuple) else (bits,)) // 8))
    pixels = width * height
    cost = int(pixels * channels * sample * DECODE_MARGIN) + (pixels * ALPHA_MATTING_BYTES_PER_PIXEL if alpha else 0)
    return cost, f"{width}x{height} {mode}{' with alpha' if alpha and 'A' not in mode else ''}"


class PixelCapResizer:
    """img2dataset's resizer behind a header-only check: what Pillow cannot identify is
    refused (``bad_format``: OpenCV decodes formats such as Radiance HDR, PFM and PAM that
    no header check here could bound), and so is an image over ``max_pixels`` or whose
    decode would take more than ``max_decode_bytes`` (``too_large_pixels``), before OpenCV
    allocates anything."""

    def __init__(self, resizer, max_pixels: int, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES):
        self.resizer, self.max_pixels, self.max_decode_bytes = resizer, max_pixels, max_decode_bytes

    def refusal(self, img_stream) -> str | None:
        img_stream.seek(0)
        head = img_stream.read(64)
        img_stream.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(img_stream) as probe:
                    width, height = probe.size
                    cost, what = decode_bytes(probe, head)
        except Image.DecompressionBombError as e:
            return f"too_large_pixels: {e}"
        except Exception as e:  # noqa: BLE001 - whatever Pillow cannot read is not decoded
            return f"bad_format: not an image format openwit can bound before decoding ({type(e).__name__})"
        finally:
            img_stream.seek(0)
        if width * height > self.max_pixels:
            return f"too_large_pixels: {width}x{height} declared, more than {self.max_pixels} pixels"
        if cost > self.max_decode_bytes:
            return (f"too_large_pixels: decoding {what} takes about {cost >> 20} MiB, more than the "
                    f"{self.max_decode_bytes >> 20} MiB budget")
        return None

    def __call__(self, img_stream, *args, **kwargs):
        refusal = self.refusal(img_stream)
        if refusal:
            return None, None, None, None, None, refusal
        return self.resizer(img_stream, *args, **kwargs)


class GuardedDownloader(i2d_downloader.Downloader):
    """img2dataset's Downloader that installs openwit's guarded opener in every worker."""

    guard: dict = {}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.guard = dict(type(self).guard)
        # X-Robots-Tag is judged by the guarded opener (pipeline.robots' grammar), not by
        # img2dataset's own check, which misreads agent scopes.
        self.disallowed_header_directives = None
        self.resizer = PixelCapResizer(self.resizer, self.guard.get("max_pixels", DEFAULT_MAX_PIXELS),
                                       self.guard.get("max_decode_bytes", DEFAULT_MAX_DECODE_BYTES))

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
    policy = netguard.AddressPolicy.from_strings(guard.get("allow", ()), guard.get("allow_private", False),
                                                 guard.get("connect_to", ()))
    opener = netguard.build_opener(policy, max_redirects=guard.get("max_redirects", 5),
                                   max_bytes=guard.get("max_bytes", 32 << 20),
                                   user_agent=guard.get("user_agent", netguard.DEFAULT_USER_AGENT),
                                   robots=guard.get("robots", True), timeout=guard.get("timeout", 10.0),
                                   max_per_host=guard.get("max_per_host", 0), proxy=guard.get("proxy"),
                                   x_robots_tag=True, robots_store=guard.get("robots_store"))
    urllib.request.install_opener(opener)
    # Pillow's own bomb guard stays on; it is only raised to a larger --max-pixels.
    Image.MAX_IMAGE_PIXELS = max(PILLOW_MAX_IMAGE_PIXELS, guard.get("max_pixels", DEFAULT_MAX_PIXELS))
    _installed = dict(guard)


def worker_environment(guard: dict) -> dict[str, str]:
    """Variables every img2dataset worker needs before it imports OpenCV (which reads its
    pixel limit once, at import): OpenCV's own cap, a second wall behind the header check."""
    return {"OPENCV_IO_MAX_IMAGE_PIXELS": str(guard.get("max_pixels", DEFAULT_MAX_PIXELS)),
            "NO_ALBUMENTATIONS_UPDATE": "1"}


@contextlib.contextmanager
def guarded_img2dataset(**guard) -> Iterator[None]:
    """Within this block, ``img2dataset.download`` builds GuardedDownloaders with ``guard``:
    allow (addresses/networks, optional ports), allow_private, connect_to, proxy, max_redirects,
    max_bytes, max_pixels, max_decode_bytes, user_agent, robots, robots_store, timeout,
    max_per_host. Worker processes started inside it get ``worker_environment``."""
    original = i2d_main.Downloader
    saved = {k: os.environ.get(k) for k in worker_environment(guard)}
    os.environ.update(worker_environment(guard))
    GuardedDownloader.guard = dict(guard)
    i2d_main.Downloader = GuardedDownloader
    try:
        yield
    finally:
        i2d_main.Downloader = original
        GuardedDownloader.guard = {}
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _main(argv: list[str]) -> int:
    """Run one img2dataset job behind the guards: ``python -m pipeline.download_guard JOB_JSON``."""
    import json

    import img2dataset

    die_with_parent()
    job = json.loads(argv[0])
    with guarded_img2dataset(**job["guard"]), spark_session(job.get("spark"), job["guard"]):
        img2dataset.download(**job["download"])
    return 0


@contextlib.contextmanager
def spark_session(spark: dict | None, guard: dict) -> Iterator[None]:
    """For the pyspark distributor: the session img2dataset finds active, on the given
    master, its executors' Python processes given ``worker_environment`` (they unpickle the
    GuardedDownloader, which installs the guards there)."""
    if not spark:
        yield
        return
    from pyspark.sql import SparkSession

    # PySpark takes the executors' Python from this variable when the context starts (the
    # spark.pyspark.python setting alone is not read for them)
    os.environ["PYSPARK_PYTHON"] = spark["conf"].get("spark.pyspark.python") or sys.executable
    builder = SparkSession.builder.master(spark["master"]).appName("openwit download")
    for key, value in {**{f"spark.executorEnv.{k}": v for k, v in worker_environment(guard).items()},
                       **spark["conf"]}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    try:
        yield
    finally:
        session.stop()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
