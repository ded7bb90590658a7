"""The closed set of reject reason codes, each with a one-line description.

A REJECT row's ``reason`` must be one of these; ``validate`` enforces it. Adding a code
is a schema change: add it here with its description, nowhere else.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # extract: reading crawl records
    "bad_gzip": "the gzip stream is corrupt or truncated; the rest of the file was unreadable",
    "bad_record": "a WARC/WAT record could not be parsed (bad header, bad length)",
    "bad_json": "a WAT record's payload is not valid JSON",
    "missing_field": "a record lacks a field the format requires (e.g. WARC-Target-URI)",
    "undecodable_text": "text bytes could not be decoded as the declared or detected charset",
    "bad_row": "an input list row lacks a url or caption, or has the wrong type",
    # extract: links
    "empty_alt": "the image has no alt text or only whitespace",
    "alt_too_long": "the alt text exceeds the extract length cap",
    "invalid_url": "the url does not parse or has no host, or (download) a request or redirect is not http(s)",
    "not_http": "the url scheme is not http or https (data:, javascript:, ftp:, ...)",
    "page_opted_out": "the page (meta robots or openwit, or X-Robots-Tag) says noai, noimageai, noindex, noimageindex or none",
    # curate
    "text_too_short": "the text is shorter than the minimum characters or words",
    "text_too_long": "the text is longer than the maximum characters",
    "boilerplate_text": "the text is boilerplate ('image', 'photo', 'click here', ...)",
    "filename_text": "the text looks like a file name (IMG_2034.jpg)",
    "url_too_long": "the url is longer than the maximum length",
    "duplicate_uid": "another record with the same (url, text) was kept",
    "duplicate_url": "another record with the same url was kept (url-only dedupe)",
    "no_query_match": "the text contains no entry of the query list",
    "no_language_match": "the text contains entries of other languages' lists but none of its own language's (worldwide)",
    "balanced_out": "dropped by per-query balancing (every matched query was over budget)",
    "language_filtered": "the detected language is not in the accepted set",
    # download
    "not_found": "the server answered 404 or 410",
    "server_error": "the server answered 5xx after all retries",
    "http_error": "the server answered another non-200 status",
    "timeout": "the fetch (redirects, body, or its host's robots.txt) ran past its wall-clock deadline",
    "connection_error": "the connection failed (refused, reset, DNS failure)",
    "truncated": "the body ended before its declared length",
    "too_large_bytes": "the body exceeded the byte cap",
    "too_small": "the image is smaller than the minimum size",
    "too_large_pixels": "the declared pixel count or the memory its decode needs exceeds the cap (bomb guard)",
    "bad_aspect_ratio": "the image's aspect ratio exceeds the maximum",
    "bad_format": "the bytes are not an image whose header can be read and bounded (html, svg, hdr, corrupt data)",
    "opted_out": "X-Robots-Tag says noai, noimageai, noindex, noimageindex or none to all agents or to ours",
    "robots_disallowed": "robots.txt disallows the path for our user-agent token, or is unreachable (RFC 9309)",
    "forbidden_address": "the host resolves to a loopback/private/link-local/reserved address",
    "redirect_loop": "redirects revisit a url",
    "too_many_redirects": "more redirects than the cap",
    "download_error": "another fetch or decode error (the detail says which)",
    # dedupe
    "exact_duplicate": "the same image bytes (sha256) were kept under another uid",
    "near_duplicate": "a perceptually near-identical image was kept under another uid",
    "eval_overlap": "the image is within the near-duplicate radius of an evaluation image",
    # score
    "low_clip_score": "the image-text similarity of the scoring model is under --min-score, or outside --keep-top",
    # shard / train
    "missing_sample": "the keep set names a uid whose image is not in the downloaded shards",
    "corrupt_sample": "the sample's image or text could not be decoded",
}


def describe(reason: str) -> str:
    """One-line description of a reason code; raises KeyError for an unknown code."""
    return REASONS[reason]
