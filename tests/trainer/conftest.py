"""Training shards made by the real pipeline (dedupe + shard) from a small built download."""

from __future__ import annotations

import pytest

from pipeline import dedupe, shard
from tests.pipeline import downloaded


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    downloaded.build(root, pictures=200)
    dedupe.run(["--input", str(root / "download"), "--output", str(root / "dedupe")])
    shard.run(["--keep", str(root / "dedupe"), "--images", str(root / "download"), "--curated", str(root / "curate"),
               "--output", str(root / "shards"), "--samples-per-shard", "64"])
    return root / "shards"


@pytest.fixture(scope="session")
def suite(tmp_path_factory):
    """The synthetic benchmark's four sets, small: 16 held-out test images, 16 probe images."""
    from pipeline.synth import benchmark

    root = tmp_path_factory.mktemp("suite")
    benchmark.write(0, 16, root, probe_size=16)
    return root
