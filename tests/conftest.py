"""Shared fixtures: a small synthetic crawl and its loopback web, built once per session,
and an S3-compatible server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pipeline.synth import crawl  # noqa: E402
from pipeline.synth.server import SyntheticWeb, free_hosts  # noqa: E402
from tests.servers import free_port, wait_for_port  # noqa: E402

SMALL_PAGES = 240
SLOW_SECONDS = 2.0


@pytest.fixture(scope="session", autouse=True)
def work_folder(tmp_path_factory):
    """Machine-local scratch (the trainer's index records, remote runs' local copies) in the
    session's temp folder, not the system's."""
    if "OPENWIT_WORK" in os.environ:
        yield os.environ["OPENWIT_WORK"]
        return
    os.environ["OPENWIT_WORK"] = str(tmp_path_factory.mktemp("work"))
    yield os.environ["OPENWIT_WORK"]
    del os.environ["OPENWIT_WORK"]


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


@pytest.fixture(scope="module")
def s3():
    """A bucket (its s3:// URL) on a moto S3 server process on loopback, moto's standalone
    server: a real HTTP S3 endpoint. The standard AWS variables point every client at it,
    in this process and in every process it starts."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, server, "the S3 server", timeout=60)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "openwit",
           "AWS_SECRET_ACCESS_KEY": "openwit-secret", "AWS_DEFAULT_REGION": "us-east-1",
           # a proxy in the environment must not carry loopback requests away
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import boto3  # moto's own dependency: the bucket is made the way an operator would

        boto3.client("s3").create_bucket(Bucket="openwit-test")
        yield "s3://openwit-test"
    finally:
        server.terminate()
        server.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
