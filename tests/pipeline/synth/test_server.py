"""The loopback web over real HTTP: every fault behaves as declared, with a plain client."""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
from dataclasses import replace
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import pyarrow.compute as pc
import pytest
from PIL import Image

import schemas
from schemas import columns as C
from pipeline.synth import crawl, world
from pipeline.synth.server import SyntheticWeb, free_hosts
from tests.conftest import SLOW_SECONDS


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def rows(small_crawl):
    folder, _ = small_crawl
    return schemas.read_table(folder / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)


def urls_with(rows, fault: str, n: int = 2) -> list[str]:
    sel = rows.filter(pc.and_(pc.equal(rows[C.FAULT], fault), pc.starts_with(rows[C.URL], "http")))
    urls = sel[C.URL].to_pylist()
    assert urls, f"no link with fault {fault} in the crawl"
    return urls[:n]


def decoded(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    im.load()
    return im


def test_clean_image_is_served_and_decodes(web, rows):
    for url in urls_with(rows, "none", 5):
        status, headers, body = get(url)
        assert status == 200
        assert headers["content-type"].startswith("image/")
        assert int(headers["content-length"]) == len(body)
        if not headers["content-type"].startswith("image/svg"):
            assert min(decoded(body).size) >= 16
        assert get(url)[2] == body  # rendered from the url: same bytes every time


def test_status_faults(web, rows):
    for url in urls_with(rows, "not_found"):
        assert get(url)[0] == 404
    for url in urls_with(rows, "server_error"):
        assert get(url)[0] == 500


def test_unavailable_then_ok(web, rows):
    # the server remembers the request target, query included: one that no other test of
    # this session's server (downloads, the probe) has asked for
    url = urls_with(rows, "unavailable_then_ok", 1)[0] + "?test=unavailable_then_ok"
    status, headers, _ = get(url)
    assert status == 503 and headers["retry-after"] == "1"
    status, _, body = get(url)
    assert status == 200 and decoded(body)


def test_slow_exceeds_a_client_timeout(web, rows):
    url = urls_with(rows, "slow", 1)[0]
    with pytest.raises(TimeoutError):
        get(url, timeout=0.5)
    status, _, body = get(url, timeout=SLOW_SECONDS + 3)
    assert status == 200 and decoded(body)


def test_redirect_to_the_image(web, rows):
    url = urls_with(rows, "redirect", 1)[0]
    status, headers, _ = get(url)
    assert status == 302
    target = urljoin(url, headers["location"])
    assert target != url
    status, _, body = get(target)
    assert status == 200 and decoded(body)
    token = urlsplit(url).path.rsplit("/", 1)[1].split(".")[0]
    assert body == world.encode(replace(world.parse_token(token), fault=0))


def test_redirect_loop_never_ends(web, rows):
    url = urls_with(rows, "redirect_loop", 1)[0]
    seen = []
    for _ in range(10):
        status, headers, _ = get(url)
        assert status == 302
        url = urljoin(url, headers["location"])
        seen.append(url)
    assert len(set(seen)) < len(seen)


def test_redirect_to_a_forbidden_address(web, rows):
    before = web.stats()["canary_hits"]
    url = urls_with(rows, "redirect_forbidden", 1)[0]
    status, headers, _ = get(url)
    assert status == 302
    host = urlsplit(headers["location"]).hostname
    address = ipaddress.ip_address(host)
    assert address.is_unspecified and not address.is_global
    assert web.stats()["canary_hits"] == before  # we did not follow it


def test_wrong_content_type_and_truncated(web, rows):
    status, headers, body = get(urls_with(rows, "wrong_content_type", 1)[0])
    assert status == 200 and headers["content-type"].startswith("text/html")
    with pytest.raises(Exception):
        decoded(body)
    with pytest.raises(http.client.IncompleteRead):
        get(urls_with(rows, "truncated", 1)[0])


def test_opt_out_headers_and_robots(web, rows):
    status, headers, _ = get(urls_with(rows, "xrobots_noai", 1)[0])
    assert status == 200 and headers["x-robots-tag"] == "noai"
    status, headers, _ = get(urls_with(rows, "xrobots_noimageai", 1)[0])
    assert status == 200 and headers["x-robots-tag"] == "noimageai"
    url = urls_with(rows, "robots_disallow", 1)[0]
    netloc = urlsplit(url).netloc
    status, _, robots = get(f"http://{netloc}/robots.txt")
    assert status == 200
    parser = RobotFileParser()
    parser.parse(robots.decode().splitlines())
    assert not parser.can_fetch("openwit", url)
    assert parser.can_fetch("openwit", urls_with(rows, "none", 1)[0].replace(urlsplit(url).netloc, netloc))
    before = web.stats()["private_hits"]
    assert get(url)[0] == 200  # the server serves it; honouring robots.txt is the client's job
    assert web.stats()["private_hits"] == before + 1


def test_decompression_bomb_and_too_small(web, rows):
    status, headers, body = get(urls_with(rows, "bomb", 1)[0])
    assert status == 200 and headers["content-type"] == "image/png"
    assert len(body) < 100_000
    assert int.from_bytes(body[16:20], "big") == int.from_bytes(body[20:24], "big") == world.BOMB_SIDE
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(body))
    status, _, body = get(urls_with(rows, "too_small", 1)[0])
    assert status == 200 and decoded(body).size == (world.TINY_SIDE, world.TINY_SIDE)


def test_duplicates_share_bytes_across_urls(web, rows):
    dups = rows.filter(pc.equal(rows[C.KIND], "duplicate")).slice(0, 5).to_pylist()
    for row in dups:
        assert row[C.URL] != row[C.DUPLICATE_OF]
        assert get(row[C.URL])[2] == get(row[C.DUPLICATE_OF])[2]


def test_unknown_paths_are_404_and_every_host_answers(web):
    for base in web.urls:
        assert get(f"{base}/robots.txt")[0] == 200
        assert get(f"{base}/img/notatoken.jpg")[0] == 404
        assert get(f"{base}/")[0] == 404


def test_start_stop_restart_and_port_in_use():
    hosts = free_hosts(2, ips=2)
    with SyntheticWeb(hosts) as w:
        assert get(f"{w.urls[0]}/robots.txt")[0] == 200
        with pytest.raises(schemas.UserError, match="cannot listen on"):
            SyntheticWeb(hosts).start()
    ip, port = hosts[0].split(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ip, int(port)), timeout=1).close()
    with SyntheticWeb(hosts) as w:  # the same ports again, at once
        assert get(f"{w.urls[1]}/robots.txt")[0] == 200
    with pytest.raises(ValueError, match="loopback"):
        SyntheticWeb(["10.0.0.1:80"])


def test_several_server_processes_share_the_hosts(rows):
    hosts = free_hosts(4, ips=2)
    clean = urlsplit(urls_with(rows, "none", 1)[0]).path
    flaky = urlsplit(urls_with(rows, "unavailable_then_ok", 1)[0]).path
    with SyntheticWeb(hosts, processes=2) as w:
        assert w.processes == 2
        bodies = {get(f"http://{h}{clean}")[2] for h in hosts}
        assert len(bodies) == 1  # the same image from every host and process
        assert [get(f"http://{hosts[3]}{flaky}")[0] for _ in range(2)] == [503, 200]
        stats = w.stats()
        assert stats["requests"] == len(hosts) + 2 and stats["status_503"] == 1
    with pytest.raises(ConnectionRefusedError):
        ip, port = hosts[0].split(":")
        socket.create_connection((ip, int(port)), timeout=1).close()
