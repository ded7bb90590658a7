"""Image hashes for deduplication: sha256 of the bytes, 64-bit pHash and dHash (imagehash).

Perceptual hashes are computed on the picture's content: img2dataset's ``border`` resize
mode pads an image to a square with uniform bars, and the same picture at another aspect
ratio (a crop) or an evaluation image at its original size would otherwise hash apart.
When the original size says the stored image must hold bars, and those margins are
uniform, they are cropped off before hashing; an image without bars is hashed whole.
"""

from __future__ import annotations

import hashlib
import io
import re

import imagehash
import numpy as np
from PIL import Image

# Extensions read as images (webdataset keys and files in evaluation folders).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_UNIFORM = 24  # max per-channel spread (max - min) of a padding bar, JPEG ringing included


def to_int(h: imagehash.ImageHash) -> int:
    """The 64 hash bits as an unsigned integer, first bit most significant."""
    return int.from_bytes(np.packbits(h.hash.flatten()).tobytes(), "big")


def content_box(size: tuple[int, int], original: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
    """Where an image of ``original`` (w, h) sits after a fit-and-pad into ``size``, or None
    if no bar is expected (same aspect ratio, or unknown original)."""
    if not original or not all(original):
        return None
    w, h = size
    ow, oh = original
    scale = min(w / ow, h / oh)
    cw, ch = round(ow * scale), round(oh * scale)
    if abs(cw - w) <= 1 and abs(ch - h) <= 1:
        return None
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def _uniform(a: np.ndarray) -> bool:
    a = a[::2, ::2]  # every other pixel is enough to see a picture, at a quarter of the cost
    return a.size == 0 or int(a.max()) - int(a.min()) <= _UNIFORM


def strip_bars(img: Image.Image, original: tuple[int, int] | None) -> Image.Image:
    """``img`` without the padding bars a fit-and-pad resize added (if there are any)."""
    box = content_box(img.size, original)
    if box is None:
        return img
    left, top, right, bottom = box
    a = np.asarray(img)
    # one pixel inside each cut as a margin for the resizer's rounding
    margins = (a[:, :max(0, left - 1)], a[:, right + 1:], a[:max(0, top - 1)], a[bottom + 1:])
    if not all(_uniform(m) for m in margins):
        return img  # no bars: the image was cropped or stretched, not padded
    inner = (min(left + 1, right - 1), min(top + 1, bottom - 1), max(right - 1, left + 1), max(bottom - 1, top + 1))
    return img.crop(inner) if inner[2] > inner[0] and inner[3] > inner[1] else img


def decode(data: bytes, mode: str = "RGB") -> Image.Image:
    """Image from bytes in ``mode``; raises ValueError with the decoder's reason.

    The hashes need luminance only: decoding straight to "L" gives the same pixels as
    imagehash's own RGB-to-L conversion, without building the RGB copy first."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P", "PA"):  # as imagehash sees them: alpha dropped via RGB
                im = im.convert("RGB")
            return im.convert(mode)
    except Exception as e:  # PIL raises many types for bad data
        message = re.sub(r"<[^>]* at 0x[0-9a-fA-F]+>", "the image", str(e))  # no addresses: rows stay reproducible
        raise ValueError(f"{type(e).__name__}: {message}") from None


def hashes(data: bytes, original: tuple[int, int] | None = None, dhash: bool = False) -> tuple[int, int | None]:
    """(pHash, dHash or None) of image bytes, on the content without padding bars."""
    img = strip_bars(decode(data, "L"), original)
    return to_int(imagehash.phash(img)), (to_int(imagehash.dhash(img)) if dhash else None)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
