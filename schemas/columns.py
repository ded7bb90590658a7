"""Column names: the only place in openwit where a column is spelled as a string.

Every other module refers to ``columns.URL`` and friends; a convention test fails on any
string literal outside ``schemas/`` that equals one of these names (a line that spells an
external format's key, such as a WAT JSON field, says so with ``# not-a-column``).
"""

from __future__ import annotations

# Identity and provenance (every stage).
UID = "uid"  # blake2b-128 of (url, text); see schemas.ids.uid
URL = "url"
TEXT = "text"
PAGE_URL = "page_url"
SOURCE_FILE = "source_file"
SOURCE_OFFSET = "source_offset"
SOURCE_FORMAT = "source_format"
TEXT_SOURCE = "text_source"  # where the text was found: alt, title, data-image-title, or a list's column

# Curation.
LANG = "lang"
LANG_PROB = "lang_prob"
MATCHED_QUERIES = "matched_queries"

# Download / shards.
KEY = "key"
SHARD = "shard"
SHARD_POSITION = "shard_position"
STATUS = "status"
ERROR_MESSAGE = "error_message"
WIDTH = "width"
HEIGHT = "height"
ORIGINAL_WIDTH = "original_width"
ORIGINAL_HEIGHT = "original_height"
SHA256 = "sha256"
PHASH = "phash"  # 64-bit perceptual hash (imagehash pHash, big-endian bit order)
DHASH = "dhash"  # 64-bit difference hash (optional second key)
TAR_OFFSET = "tar_offset"  # byte offset of the sample's first member header in its tar
TAR_BYTES = "tar_bytes"  # bytes the sample's members take in the tar, headers included
CAPTION = "caption"
CLIP_SCORE = "clip_score"  # cosine similarity of the image and text embeddings of a CLIP model (openwit score)

# Ledger.
STAGE = "stage"
REASON = "reason"
DETAIL = "detail"
DUPLICATE_OF = "duplicate_of"

# Query balancing.
QUERY = "query"
MATCH_COUNT = "match_count"
KEEP_PROB = "keep_prob"
KEPT_COUNT = "kept_count"

# Query lists (`openwit queries build`).
ENTRY = "entry"
QUERY_SOURCE = "source"  # wordnet | unigram | bigram | title
OCCURRENCES = "occurrences"  # corpus count of a unigram or bigram
PMI = "pmi"  # log2(c(ab) * N / (c(a) * c(b))) of a bigram
VIEWS = "views"  # page views of a title
RANK = "rank"  # 1-based position in the list

# Synthetic crawl ground truth.
LINK_INDEX = "link_index"
SRC = "src"
KIND = "kind"
FAULT = "fault"
IMAGE_TOKEN = "image_token"
VARIANT = "variant"
SHAPE = "shape"
COLOUR = "colour"
SIZE = "size"
PLACEMENT = "placement"
BACKGROUND = "background"
CLEAN_CAPTION = "clean_caption"
HELDOUT = "heldout"
EVAL_INDEX = "eval_index"
HOST = "host"


def all_names() -> frozenset[str]:
    """Every column name defined above (used by the convention test)."""
    return frozenset(v for k, v in globals().items() if k.isupper() and isinstance(v, str))
