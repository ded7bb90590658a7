"""One pyarrow schema per stage output.

Each schema carries its name and the schema version in its metadata; that metadata is
written into every Parquet file, so a reader can refuse a file from an unknown version
with a clear message instead of misreading it.
"""

from __future__ import annotations

import pyarrow as pa

from schemas import columns as C

# 2: QUERY_COUNTS per language, text_source in CANDIDATE and CURATED; 3: keep_prob in SHARD_INDEX;
# 4: clip_score in SHARD_INDEX, the SCORES table
SCHEMA_VERSION = 4
KNOWN_VERSIONS = frozenset({2, 3, 4})
# a schema that changed in (or first appeared in) a later version: its files of an earlier version are refused
MIN_VERSIONS = {"SHARD_INDEX": 4, "SCORES": 4}

META_NAME = b"openwit.schema"
META_VERSION = b"openwit.schema_version"


def _schema(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        fields, metadata={META_NAME: name.encode(), META_VERSION: str(SCHEMA_VERSION).encode()}
    )


def _req(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _opt(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


_PROVENANCE = [
    _opt(C.PAGE_URL, pa.string()),
    _req(C.SOURCE_FILE, pa.string()),
    _req(C.SOURCE_OFFSET, pa.int64()),
    _req(C.SOURCE_FORMAT, pa.string()),  # wat | warc | list
]

# extract -> every (image url, alt text) link found in the crawl: the text repaired
# (ftfy, collapsed spaces) and the uid = schemas.uid(url, text) fixed here, once; every
# later stage carries it (curate's rejects and kept rows alike).
CANDIDATE = _schema(
    "CANDIDATE",
    [_req(C.UID, pa.string()), _req(C.URL, pa.string()), _req(C.TEXT, pa.string()), *_PROVENANCE,
     _opt(C.TEXT_SOURCE, pa.string())],
)

# curate -> the url list handed to the downloader.
CURATED = _schema(
    "CURATED",
    [
        _req(C.UID, pa.string()),
        _req(C.URL, pa.string()),
        _req(C.TEXT, pa.string()),
        _opt(C.LANG, pa.string()),
        _opt(C.LANG_PROB, pa.float32()),
        _req(C.MATCHED_QUERIES, pa.list_(pa.string())),
        *_PROVENANCE,
        _opt(C.TEXT_SOURCE, pa.string()),
    ],
)

# download -> one row per curated row: a sample in a tar, or a failure with its reason.
DOWNLOADED = _schema(
    "DOWNLOADED",
    [
        _req(C.UID, pa.string()),
        _req(C.URL, pa.string()),
        _req(C.TEXT, pa.string()),
        _opt(C.KEY, pa.string()),
        _opt(C.SHARD, pa.string()),
        _req(C.STATUS, pa.string()),  # success | failed
        _opt(C.REASON, pa.string()),  # a reason code when failed
        _opt(C.ERROR_MESSAGE, pa.string()),
        _opt(C.WIDTH, pa.int32()),
        _opt(C.HEIGHT, pa.int32()),
        _opt(C.ORIGINAL_WIDTH, pa.int32()),
        _opt(C.ORIGINAL_HEIGHT, pa.int32()),
        _opt(C.SHA256, pa.string()),
    ],
)

# dedupe -> the keep set: one row per training image that survives deduplication and
# decontamination, with where its image is in the downloaded shards.
KEEP = _schema(
    "KEEP",
    [
        _req(C.UID, pa.string()),
        _req(C.SHARD, pa.string()),
        _req(C.KEY, pa.string()),
        _req(C.SHA256, pa.string()),
        _req(C.PHASH, pa.uint64()),
        _opt(C.DHASH, pa.uint64()),
        _opt(C.WIDTH, pa.int32()),
        _opt(C.HEIGHT, pa.int32()),
        _opt(C.ORIGINAL_WIDTH, pa.int32()),
        _opt(C.ORIGINAL_HEIGHT, pa.int32()),
    ],
)

# shard -> the manifest of the final training shards, one row per sample.
SHARD_INDEX = _schema(
    "SHARD_INDEX",
    [
        _req(C.UID, pa.string()),
        _req(C.SHARD, pa.string()),
        _req(C.SHARD_POSITION, pa.int32()),
        _req(C.KEY, pa.string()),
        _req(C.TAR_OFFSET, pa.int64()),
        _req(C.TAR_BYTES, pa.int64()),
        _req(C.URL, pa.string()),
        _req(C.TEXT, pa.string()),
        _opt(C.LANG, pa.string()),
        _opt(C.LANG_PROB, pa.float32()),
        _req(C.MATCHED_QUERIES, pa.list_(pa.string())),
        _req(C.WIDTH, pa.int32()),
        _req(C.HEIGHT, pa.int32()),
        _opt(C.ORIGINAL_WIDTH, pa.int32()),
        _opt(C.ORIGINAL_HEIGHT, pa.int32()),
        _req(C.SHA256, pa.string()),
        _req(C.PHASH, pa.uint64()),
        _opt(C.DHASH, pa.uint64()),
        *_PROVENANCE,
        # shard --balance online: the sample's keep probability against the per-query counts
        # of the shards; the trainer draws each epoch's samples with it (null: no online balancing)
        _opt(C.KEEP_PROB, pa.float64()),
        # openwit score: the image-text similarity the sample was filtered on (null: not scored)
        _opt(C.CLIP_SCORE, pa.float32()),
    ],
)

# score -> one row per scored sample: its image-text cosine similarity under the scoring model.
SCORES = _schema(
    "SCORES",
    [
        _req(C.UID, pa.string()),
        _req(C.SHARD, pa.string()),  # the downloaded shard holding the image
        _req(C.KEY, pa.string()),
        _req(C.CLIP_SCORE, pa.float32()),
    ],
)

# every stage -> why a record was dropped.
REJECT = _schema(
    "REJECT",
    [
        _req(C.STAGE, pa.string()),
        _req(C.REASON, pa.string()),
        _opt(C.DETAIL, pa.string()),
        _opt(C.UID, pa.string()),
        _opt(C.URL, pa.string()),
        _opt(C.DUPLICATE_OF, pa.string()),
        _opt(C.SOURCE_FILE, pa.string()),
        _opt(C.SOURCE_OFFSET, pa.int64()),
    ],
)

# curate -> global per-query match counts and the resulting keep probability.
QUERY_COUNTS = _schema(
    "QUERY_COUNTS",
    [
        _req(C.LANG, pa.string()),  # counts are per language: a row per (language, query)
        _req(C.QUERY, pa.string()),
        _req(C.MATCH_COUNT, pa.uint64()),  # exact, over deduplicated texts of that language
        _req(C.KEEP_PROB, pa.float64()),
        _req(C.KEPT_COUNT, pa.uint64()),  # texts kept by balancing that match the query
    ],
)

# queries build -> one row per list entry (and per candidate that did not make the list:
# rank null), in list order.
QUERY_LIST = _schema(
    "QUERY_LIST",
    [
        _req(C.ENTRY, pa.string()),
        _req(C.QUERY_SOURCE, pa.string()),
        _opt(C.OCCURRENCES, pa.int64()),
        _opt(C.PMI, pa.float64()),
        _opt(C.VIEWS, pa.int64()),
        _opt(C.RANK, pa.int32()),
    ],
)

# synth -> what every image link in the synthetic crawl really is.
GROUND_TRUTH = _schema(
    "GROUND_TRUTH",
    [
        _req(C.SOURCE_FILE, pa.string()),
        _req(C.SOURCE_OFFSET, pa.int64()),
        _req(C.PAGE_URL, pa.string()),
        _req(C.LINK_INDEX, pa.int32()),
        _req(C.SRC, pa.string()),
        _req(C.URL, pa.string()),  # src resolved against <base> or the page; as written if not http
        _opt(C.TEXT, pa.string()),  # the alt as written in the page (null: no alt attribute)
        _req(C.KIND, pa.string()),
        _opt(C.FAULT, pa.string()),
        _opt(C.IMAGE_TOKEN, pa.string()),
        _opt(C.DUPLICATE_OF, pa.string()),  # url of the original for duplicates/near-duplicates
        _opt(C.VARIANT, pa.string()),
        _opt(C.SHAPE, pa.string()),
        _opt(C.COLOUR, pa.string()),
        _opt(C.SIZE, pa.string()),
        _opt(C.PLACEMENT, pa.string()),
        _opt(C.BACKGROUND, pa.string()),
        _opt(C.CLEAN_CAPTION, pa.string()),
        _opt(C.LANG, pa.string()),
        _req(C.HELDOUT, pa.bool_()),
        _opt(C.EVAL_INDEX, pa.int32()),
        _req(C.HOST, pa.string()),
    ],
)

# img2dataset's own per-shard parquet (an external format we read, not one we write).
IMG2DATASET_SHARD_COLUMNS = (
    C.KEY, C.STATUS, C.ERROR_MESSAGE, C.WIDTH, C.HEIGHT, C.ORIGINAL_WIDTH,
    C.ORIGINAL_HEIGHT, C.SHA256,
)

ALL: dict[str, pa.Schema] = {
    "CANDIDATE": CANDIDATE,
    "CURATED": CURATED,
    "DOWNLOADED": DOWNLOADED,
    "KEEP": KEEP,
    "SHARD_INDEX": SHARD_INDEX,
    "SCORES": SCORES,
    "REJECT": REJECT,
    "QUERY_COUNTS": QUERY_COUNTS,
    "QUERY_LIST": QUERY_LIST,
    "GROUND_TRUTH": GROUND_TRUTH,
}


def schema_name(schema: pa.Schema) -> str:
    """The openwit name stored in a schema's metadata ('' for a foreign schema)."""
    return (schema.metadata or {}).get(META_NAME, b"").decode()
