"""Caption repair and the cheap text/url filters of `openwit curate` (pure functions)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import ftfy

# Words that make an alt text boilerplate when the text has nothing else.
BOILERPLATE_WORDS = frozenset({
    "image", "images", "img", "photo", "photos", "picture", "pic", "pics", "thumbnail", "thumb",
    "logo", "icon", "banner", "spacer", "placeholder", "untitled", "click", "here", "button",
    "avatar", "loading", "default", "blank", "graphic", "null", "undefined", "alt", "figure",
    "no", "preview", "of", "an", "a", "the",
})
IMAGE_EXTENSIONS = r"jpe?g|png|gif|webp|bmp|tiff?|svg|heic|avif|ico"
FILENAME = re.compile(rf"(?:^|\s)\S*\.(?:{IMAGE_EXTENSIONS})$", re.IGNORECASE)
CAMERA_NAME = re.compile(r"^(?:IMG|DSC|DSCN|DSCF|DCIM|PXL|MVIMG|P)[_-]?\d{3,}\b", re.IGNORECASE)


@dataclass(frozen=True)
class TextRules:
    min_chars: int = 5
    min_words: int = 2
    max_chars: int = 1000
    max_url_chars: int = 2000


def normalize(text: str) -> str:
    """ftfy repair (mojibake, entities, odd spacing characters), then collapsed whitespace.

    Printable ASCII without '&' is left alone by ftfy (nothing to repair: no mojibake, no
    entity, no control character), so it skips the repair: most alt texts take this path.
    """
    if not (text.isascii() and "&" not in text and text.replace("\t", " ").replace("\n", " ").isprintable()):
        text = ftfy.fix_text(text)
    return " ".join(text.split())


def verdict(text: str, url: str, rules: TextRules) -> str | None:
    """The reason code that drops a (normalised) caption, or None to keep it."""
    if len(url) > rules.max_url_chars:
        return "url_too_long"
    if len(text) > rules.max_chars:
        return "text_too_long"
    if FILENAME.search(text) and len(text.split()) <= 8 or CAMERA_NAME.match(text):
        return "filename_text"
    words = text.split()
    if all(w.strip(".,:;!?-_()[]'\"").lower() in BOILERPLATE_WORDS for w in words):
        return "boilerplate_text"
    if len(text) < rules.min_chars or len(words) < rules.min_words:
        return "text_too_short"
    return None
