"""Shared fixtures: a small synthetic crawl and its loopback web, built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pipeline.synth import crawl  # noqa: E402
from pipeline.synth.server import SyntheticWeb, free_hosts  # noqa: E402

SMALL_PAGES = 240
SLOW_SECONDS = 2.0


@pytest.fixture(scope="session")
def small_crawl(tmp_path_factory):
    """(folder, manifest) of a 240-page crawl in 2 WAT files on free loopback ports."""
    out = tmp_path_factory.mktemp("crawl")
    cfg = crawl.CrawlConfig(pages=SMALL_PAGES, seed=7, pages_per_file=120, hosts=free_hosts(8))
    manifest = crawl.generate(cfg, out, workers=2)
    return out, manifest


@pytest.fixture(scope="session")
def web(small_crawl):
    """The small crawl's images served on loopback for the whole session."""
    _, manifest = small_crawl
    with SyntheticWeb(manifest["hosts"], slow_seconds=SLOW_SECONDS) as w:
        yield w
