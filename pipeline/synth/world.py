"""The compositional image world of the synthetic crawl.

An image is an :class:`ImageSpec` (shape x colour x size x placement x background, a
32-bit jitter that moves, scales, turns and shades it, an optional near-duplicate variant,
a fault the server applies, and a file format). A spec packs into a 16-character token
with a checksum; the server renders the image from the token alone, so millions of
images need no disk and the same URL always yields the same bytes.

Some (shape, colour) combinations are held out of the crawl: they are the zero-shot
evaluation set, and a crawl link to one of them is a contamination to be removed.
"""

from __future__ import annotations

import base64
import colorsys
import hashlib
import io
import math
import random
from dataclasses import dataclass, fields, replace

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "heart")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
COLOUR_RGB = {
    "red": (215, 35, 35),
    "orange": (240, 135, 20),
    "yellow": (235, 215, 25),
    "green": (40, 160, 60),
    "cyan": (30, 195, 205),
    "blue": (35, 70, 215),
    "purple": (125, 45, 175),
    "pink": (240, 115, 185),
}
SIZES = ("small", "medium", "large")
SIZE_FRACTION = {"small": 0.28, "medium": 0.38, "large": 0.56}
PLACEMENTS = (
    "top left", "top", "top right",
    "left", "centre", "right",
    "bottom left", "bottom", "bottom right",
)
BACKGROUNDS = ("plain", "striped", "checkered", "dotted", "gradient", "grid")
# Neutral tones only, so the object's colour is always the one chromatic colour.
NEUTRALS = ((250, 250, 250), (222, 222, 222), (236, 228, 206), (205, 214, 222), (72, 72, 72), (38, 38, 40))

LIGHT_AMPLITUDE = 48  # grey levels of the lighting field's extremes

VARIANTS = ("none", "crop", "resize", "reencode", "brighten")
FORMATS = ("jpg", "png", "gif", "svg")
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "svg": "image/svg+xml"}

FAULTS = (
    "none",
    "not_found",            # 404
    "server_error",         # 500
    "unavailable_then_ok",  # 503 on the first request for the url, 200 afterwards
    "slow",                 # answers only after the server's slow delay
    "redirect",             # 302 to the same image without the fault
    "redirect_loop",        # 302 between two urls forever
    "redirect_forbidden",   # 302 to an unspecified address (0.0.0.0), an SSRF probe
    "wrong_content_type",   # 200 text/html with an html page
    "truncated",            # Content-Length of the whole image, half the body, then close
    "xrobots_noai",         # the image with X-Robots-Tag: noai
    "xrobots_noimageai",    # the image with X-Robots-Tag: noimageai
    "robots_disallow",      # served under a path robots.txt disallows
    "bomb",                 # a tiny PNG declaring 20000 x 20000 pixels
    "too_small",            # an 8 x 8 image
)

# Bit width of each ImageSpec field in the token, in field order.
_WIDTHS = (4, 4, 2, 4, 4, 32, 3, 8, 5, 3)
_PAYLOAD_BITS = sum(_WIDTHS)  # 69
_CHECK_BITS = 80 - _PAYLOAD_BITS  # 11: a token is 80 bits = 16 base32 characters
TOKEN_LENGTH = 16
BOMB_SIDE = 20000
TINY_SIDE = 8


class BadToken(ValueError):
    """The token is not one this world issued (bad length, alphabet or checksum)."""


@dataclass(frozen=True)
class ImageSpec:
    shape: int
    colour: int
    size: int
    placement: int
    background: int
    jitter: int
    variant: int = 0
    variant_param: int = 0
    fault: int = 0
    fmt: int = 0

    # -- names -----------------------------------------------------------------------
    @property
    def shape_name(self) -> str:
        return SHAPES[self.shape]

    @property
    def colour_name(self) -> str:
        return COLOURS[self.colour]

    @property
    def size_name(self) -> str:
        return SIZES[self.size]

    @property
    def placement_name(self) -> str:
        return PLACEMENTS[self.placement]

    @property
    def background_name(self) -> str:
        return BACKGROUNDS[self.background]

    @property
    def variant_name(self) -> str:
        return VARIANTS[self.variant]

    @property
    def fault_name(self) -> str:
        return FAULTS[self.fault]

    @property
    def format_name(self) -> str:
        return FORMATS[self.fmt]

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format_name]

    def original(self) -> "ImageSpec":
        """The same picture without variant, fault or format change (what it duplicates)."""
        return replace(self, variant=0, variant_param=0, fault=0, fmt=0)

    # -- token -----------------------------------------------------------------------
    def token(self) -> str:
        value = 0
        for f, width in zip(fields(self), _WIDTHS):
            v = getattr(self, f.name)
            if not 0 <= v < (1 << width):
                raise ValueError(f"{f.name}={v} does not fit in {width} bits")
            value = (value << width) | v
        value = (value << _CHECK_BITS) | _checksum(value)
        return base64.b32encode(value.to_bytes(10, "big")).decode().lower()


def _checksum(payload: int) -> int:
    digest = hashlib.blake2b(payload.to_bytes(9, "big"), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> (32 - _CHECK_BITS)


def parse_token(token: str) -> ImageSpec:
    """Decode a token back into its spec; raises BadToken for anything not issued here."""
    if len(token) != TOKEN_LENGTH:
        raise BadToken(f"token must have {TOKEN_LENGTH} characters")
    try:
        raw = base64.b32decode(token.upper())
    except (ValueError, base64.binascii.Error):
        raise BadToken("token is not base32") from None
    value = int.from_bytes(raw, "big")
    check = value & ((1 << _CHECK_BITS) - 1)
    payload = value >> _CHECK_BITS
    if _checksum(payload) != check:
        raise BadToken("token checksum mismatch")
    values = []
    for width in reversed(_WIDTHS):
        values.append(payload & ((1 << width) - 1))
        payload >>= width
    values.reverse()
    # Fields with a closed set of names must index into it (jitter and variant_param are free).
    limits = (len(SHAPES), len(COLOURS), len(SIZES), len(PLACEMENTS), len(BACKGROUNDS), None,
              len(VARIANTS), None, len(FAULTS), len(FORMATS))
    for f, v, limit in zip(fields(ImageSpec), values, limits):
        if limit is not None and v >= limit:
            raise BadToken(f"token field {f.name} out of range")
    return ImageSpec(*values)


# -- held-out combinations and the evaluation set ------------------------------------------

def seed_int(*parts: object) -> int:
    """A 64-bit integer derived from the parts (stable across runs and machines)."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def heldout_combos(seed: int) -> frozenset[tuple[int, int]]:
    """One held-out colour per shape, each colour held out once (a Latin transversal).

    So every shape and every colour is seen in training, but 8 of the 64 (shape, colour)
    pairs never are: zero-shot on them tests composition, not memory.
    """
    n = len(SHAPES)
    offset = seed_int(seed, "held-out") % n
    return frozenset((s, (3 * s + offset) % n) for s in range(n))


def eval_spec(seed: int, index: int) -> ImageSpec:
    """The index-th image of the held-out evaluation set (combinations cycle)."""
    combos = sorted(heldout_combos(seed))
    shape, colour = combos[index % len(combos)]
    rng = random.Random(seed_int(seed, "eval", index))
    return ImageSpec(
        shape=shape, colour=colour, size=rng.randrange(len(SIZES)),
        placement=rng.randrange(len(PLACEMENTS)), background=rng.randrange(len(BACKGROUNDS)),
        jitter=rng.getrandbits(32),
    )


# -- rendering ---------------------------------------------------------------------------

def _shape_points(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    def poly(n: int, start: float, radii: tuple[float, ...] = (1.0,)) -> list[tuple[float, float]]:
        pts = []
        for i in range(n * len(radii)):
            a = start + turn + 2 * math.pi * i / (n * len(radii))
            rr = r * radii[i % len(radii)]
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts

    if shape == "square":
        return poly(4, math.pi / 4)
    if shape == "triangle":
        return poly(3, -math.pi / 2)
    if shape == "star":
        return poly(5, -math.pi / 2, (1.0, 0.45))
    if shape == "hexagon":
        return poly(6, 0.0)
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.62 * r, cy), (cx, cy + r), (cx - 0.62 * r, cy)]
    if shape == "cross":
        a, b = r, r * 0.34
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a),
               (-b, b), (-a, b), (-a, -b), (-b, -b)]
        c, s = math.cos(turn), math.sin(turn)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    raise ValueError(shape)


def _draw_mask(spec: ImageSpec, w: int, h: int, rng: random.Random) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    side = min(w, h)
    r = 0.5 * side * SIZE_FRACTION[spec.size_name] * rng.uniform(0.88, 1.12)
    col, row = spec.placement % 3, spec.placement // 3
    margin = r + 1
    cx = margin + (w - 2 * margin) * (col / 2) + rng.uniform(-0.05, 0.05) * w
    cy = margin + (h - 2 * margin) * (row / 2) + rng.uniform(-0.05, 0.05) * h
    cx = min(max(cx, margin), w - margin)
    cy = min(max(cy, margin), h - margin)
    turn = rng.uniform(-0.25, 0.25)
    shape = spec.shape_name
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "heart":
        lobe = r * 0.52
        draw.ellipse((cx - 2 * lobe + 0.1 * r, cy - r * 0.75, cx + 0.1 * r, cy - r * 0.75 + 2 * lobe), fill=255)
        draw.ellipse((cx - 0.1 * r, cy - r * 0.75, cx + 2 * lobe - 0.1 * r, cy - r * 0.75 + 2 * lobe), fill=255)
        draw.polygon([(cx - r * 0.98, cy - r * 0.1), (cx + r * 0.98, cy - r * 0.1), (cx, cy + r)], fill=255)
    else:
        draw.polygon(_shape_points(shape, cx, cy, r, turn), fill=255)
    return mask


def _background(spec: ImageSpec, w: int, h: int, rng: random.Random) -> Image.Image:
    i, j = rng.sample(range(len(NEUTRALS)), 2)
    a, b = NEUTRALS[i], NEUTRALS[j]
    img = Image.new("RGB", (w, h), a)
    draw = ImageDraw.Draw(img)
    kind = spec.background_name
    period = rng.randrange(8, 22)
    phase = rng.randrange(period)
    if kind == "striped":
        vertical = rng.random() < 0.5
        for k in range(-period + phase, (w if vertical else h), period):
            box = (k, 0, k + period // 2 - 1, h) if vertical else (0, k, w, k + period // 2 - 1)
            draw.rectangle(box, fill=b)
    elif kind == "checkered":
        for y in range(-phase, h, period):
            for x in range(-phase, w, period):
                if ((x + phase) // period + (y + phase) // period) % 2:
                    draw.rectangle((x, y, x + period - 1, y + period - 1), fill=b)
    elif kind == "dotted":
        dot = max(1, period // 5)
        for y in range(phase // 2, h, period):
            for x in range(phase // 2, w, period):
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=b)
    elif kind == "gradient":
        horizontal = rng.random() < 0.5
        n = w if horizontal else h
        for k in range(n):
            t = k / max(1, n - 1)
            c = tuple(int(a[q] * (1 - t) + b[q] * t) for q in range(3))
            draw.line((k, 0, k, h) if horizontal else (0, k, w, k), fill=c)
    elif kind == "grid":
        for k in range(phase, max(w, h), period):
            draw.line((k, 0, k, h), fill=b)
            draw.line((0, k, w, k), fill=b)
    return img


def _light(img: Image.Image, rng: random.Random) -> Image.Image:
    """Smooth uneven lighting: a random 4 x 4 field upscaled, added to every channel.

    It varies an image's low frequencies the way lighting varies photos, so unrelated
    pictures of the same composition do not share a perceptual hash.
    """
    field = Image.new("L", (4, 4))
    field.putdata([rng.randrange(256) for _ in range(16)])
    field = field.resize(img.size, Image.Resampling.BICUBIC)
    light = (np.asarray(field, dtype=np.int16) - 128) * LIGHT_AMPLITUDE // 128
    pixels = np.asarray(img, dtype=np.int16) + light[:, :, None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _shade(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    hue, light, sat = colorsys.rgb_to_hls(*(c / 255 for c in rgb))
    hue = (hue + rng.uniform(-0.015, 0.015)) % 1.0
    light = min(0.9, max(0.1, light + rng.uniform(-0.06, 0.06)))
    r, g, b = colorsys.hls_to_rgb(hue, light, sat)
    return int(r * 255), int(g * 255), int(b * 255)


def render_image(spec: ImageSpec) -> Image.Image:
    """The picture a spec describes, including its near-duplicate variant (not its format)."""
    rng = random.Random(spec.jitter)
    w = rng.randrange(112, 176)
    h = int(w * rng.choice((0.75, 1.0, 1.0, 1.25)))
    img = _background(spec, w, h, rng)
    img.paste(_shade(COLOUR_RGB[spec.colour_name], rng), (0, 0), _draw_mask(spec, w, h, rng))
    img = _light(img, rng)
    variant = spec.variant_name
    p = spec.variant_param
    if variant == "crop":
        f = 0.01 + 0.03 * (p / 255)
        dx, dy = int(w * f), int(h * f)
        img = img.crop((dx, dy, w - dx, h - dy))
    elif variant == "resize":
        f = 0.5 + 0.4 * (p / 255)
        img = img.resize((max(16, int(w * f)), max(16, int(h * f))), Image.Resampling.BILINEAR)
    elif variant == "brighten":
        delta = 0.05 + 0.10 * (p % 128) / 127  # 5-15% darker or brighter, never unchanged
        f = 1 + delta if p >= 128 else 1 - delta
        img = img.point(lambda v: min(255, int(v * f)))
    return img


def _svg(spec: ImageSpec) -> bytes:
    rng = random.Random(spec.jitter)
    w = rng.randrange(112, 176)
    rgb = COLOUR_RGB[spec.colour_name]
    r = 0.5 * w * SIZE_FRACTION[spec.size_name]
    pts = _shape_points("hexagon" if spec.shape_name in ("circle", "heart") else spec.shape_name,
                        w / 2, w / 2, r, 0.0)
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{w}">'
        f'<rect width="100%" height="100%" fill="#fafafa"/>'
        f'<polygon points="{path}" fill="rgb{rgb}"/></svg>'
    ).encode()


def encode(spec: ImageSpec) -> bytes:
    """The bytes the server sends for a spec in its format (faults are the server's job)."""
    fmt = spec.format_name
    if fmt == "svg":
        return _svg(spec)
    img = render_image(spec)
    buf = io.BytesIO()
    if fmt == "jpg":
        quality = 20 + (spec.variant_param % 50) if spec.variant_name == "reencode" else 90
        img.save(buf, "JPEG", quality=quality)
    elif fmt == "png":
        img.save(buf, "PNG")
    else:
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buf, "GIF")
    return buf.getvalue()


def tiny_image(spec: ImageSpec) -> bytes:
    """An 8 x 8 version of the picture (the too_small fault)."""
    buf = io.BytesIO()
    render_image(spec).resize((TINY_SIDE, TINY_SIDE)).save(buf, "JPEG", quality=90)
    return buf.getvalue()
