"""The fetch guards against a hostile web on loopback: proxies from the environment and
explicit ones (HTTP and CONNECT), lying Content-Lengths, trickled bodies and headers, odd
robots.txt, X-Robots-Tag scopes, non-http schemes, ports, special-purpose ranges. One
allowed server on 127.0.0.1; the forbidden one on 127.0.0.2 counts every connection, and
every test ends with it at 0."""

from __future__ import annotations

import ipaddress
import ssl
import time
import tracemalloc
import urllib.request

import pytest

from pipeline import robots
from pipeline.netguard import (DEFAULT_USER_AGENT, AddressPolicy, FetchTimeout, ForbiddenAddress, InvalidUrl,
                               OptedOut, RobotsDisallowed, TooLarge, build_opener, parse_allow, why_forbidden)
from tests.pipeline.hostile import PNG, ForwardProxy, HostileServer, only, send, stream, trickle

# -- 1. proxies -------------------------------------------------------------------------------

def test_environment_proxy_is_ignored(ok, forbidden, monkeypatch):
    proxy = ForwardProxy()
    try:
        for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "all_proxy"):
            monkeypatch.setenv(var, proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        with pytest.raises(ForbiddenAddress):
            build_opener(only(ok)).open(forbidden.url("/secret"), timeout=5)
        with build_opener(only(ok)).open(ok.url("/img.png"), timeout=5) as resp:
            assert resp.read() == PNG
        assert proxy.asked == []
    finally:
        proxy.close()


def test_explicit_proxy_is_asked_for_the_checked_address_only(ok, forbidden):
    proxy = ForwardProxy()
    try:
        opener = build_opener(only(ok), proxy=proxy.url)
        with opener.open(ok.url("/img.png", host="localhost"), timeout=5) as resp:
            assert resp.read() == PNG
        assert proxy.asked == [f"GET http://127.0.0.1:{ok.server_address[1]}/img.png"]  # pinned, not the name
        ok.routes["/hop"] = lambda h: send(h, 302, b"", "text/plain", {"Location": forbidden.url("/secret")})
        with pytest.raises(ForbiddenAddress):
            opener.open(ok.url("/hop"), timeout=5)
        with pytest.raises(ForbiddenAddress):
            opener.open(forbidden.url("/secret"), timeout=5)
        with pytest.raises(ForbiddenAddress):  # CONNECT targets are checked before the proxy hears of them
            opener.open(f"https://127.0.0.2:{forbidden.server_address[1]}/secret", timeout=5)
        assert all("127.0.0.2" not in a for a in proxy.asked)
    finally:
        proxy.close()


def test_https_through_connect_pins_the_address_and_verifies_the_name(forbidden):
    import trustme
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    tls = HostileServer("127.0.0.1", tls=server_ctx)
    tls.routes["/img.png"] = lambda h: send(h, 200, PNG)
    proxy = ForwardProxy()
    try:
        opener = build_opener(only(tls), proxy=proxy.url, context=client_ctx)
        with opener.open(tls.url("/img.png", host="localhost"), timeout=5) as resp:
            assert resp.read() == PNG
        assert proxy.asked == [f"CONNECT 127.0.0.1:{tls.server_address[1]}"]
    finally:
        proxy.close()
        tls.close()


# -- 2. body caps whatever the headers say ----------------------------------------------------

@pytest.mark.parametrize("length", ["+40000000", "40_000000", " 40000000", None])
def test_bodies_are_read_in_bounded_chunks(ok, length):
    ok.routes["/big"] = lambda h: stream(h, 40_000_000, length)
    cap = 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge):
            with build_opener(only(ok), max_bytes=cap).open(ok.url("/big"), timeout=10) as resp:
                resp.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * cap, f"{peak} bytes held while refusing a {cap}-byte cap"
    time.sleep(0.3)
    assert ok.bytes_sent["/big"] < 20_000_000


def test_declared_length_over_the_cap_is_refused_before_reading(ok):
    ok.routes["/big"] = lambda h: stream(h, 4_000_000, "4000000")
    with pytest.raises(TooLarge, match="Content-Length"):
        build_opener(only(ok), max_bytes=1 << 20).open(ok.url("/big"), timeout=5)


# -- 3. one deadline per fetch ----------------------------------------------------------------

def test_a_trickled_body_hits_the_deadline(ok):
    ok.routes["/slow"] = lambda h: trickle(h, b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\n", 0.0) or \
        trickle(h, b"abcdefgh", 0.7)
    start = time.monotonic()
    with pytest.raises(FetchTimeout, match="timeout"):
        with build_opener(only(ok)).open(ok.url("/slow"), timeout=1) as resp:
            resp.read()
    assert time.monotonic() - start < 2.0


def test_trickled_headers_hit_the_deadline(ok):
    ok.routes["/slowhead"] = lambda h: trickle(h, b"HTTP/1.0 200 OK\r\nX-A: bbbbbbbbbbbb\r\n\r\n", 0.3)
    start = time.monotonic()
    with pytest.raises(FetchTimeout):
        build_opener(only(ok)).open(ok.url("/slowhead"), timeout=1)
    assert time.monotonic() - start < 2.0


def test_a_trickled_robots_txt_hits_the_deadline_once(ok):
    ok.routes["/robots.txt"] = lambda h: trickle(h, b"HTTP/1.0 200 OK\r\n\r\nUser-agent: *\nAllow: /\n", 0.3)
    opener = build_opener(only(ok), robots=True, timeout=1)
    start = time.monotonic()
    with pytest.raises(FetchTimeout, match="robots.txt"):
        opener.open(ok.url("/img.png"), timeout=1)
    assert time.monotonic() - start < 2.0
    with pytest.raises(FetchTimeout):  # cached: no second wait
        opener.open(ok.url("/img.png"), timeout=1)
    assert ok.hits["/robots.txt"] == 1 and ok.hits["/img.png"] == 0


# -- 5. robots.txt as RFC 9309 says -----------------------------------------------------------

@pytest.mark.parametrize("body, path, allowed", [
    ("User-agent: *\nAllow: /\nDisallow: /private/\n", "/private/a.png", False),  # longest match, not first
    ("User-agent: *\nDisallow: /a\nAllow: /a\n", "/a", True),  # a tie goes to Allow
    ("User-agent: *\nDisallow: /*.png$\n", "/img/x.png", False),
    ("User-agent: *\nDisallow: /*.png$\n", "/img/x.png?v=1", True),
    ("\ufeffUser-agent: *\nDisallow: /\n", "/img.png", False),  # a byte-order mark
    ("User-agent: openwit\nDisallow: /img\n\nUser-agent: *\nAllow: /\n", "/img.png", False),
    ("User-agent: otherbot\nDisallow: /\n", "/img.png", True),
])
def test_robots_txt_semantics(ok, body, path, allowed):
    ok.routes["/robots.txt"] = lambda h: send(h, 200, body.encode("utf-8"), "text/plain")
    ok.routes[path.split("?")[0]] = lambda h: send(h, 200, PNG)
    opener = build_opener(only(ok), robots=True)
    if allowed:
        with opener.open(ok.url(path), timeout=5) as resp:
            assert resp.read() == PNG
    else:
        with pytest.raises(RobotsDisallowed):
            opener.open(ok.url(path), timeout=5)
        assert ok.hits[path.split("?")[0]] == 0


def _too_many_headers(h):
    h.send_response(200)
    for i in range(150):
        h.send_header(f"X-H{i}", "x")
    h.end_headers()
    h.wfile.write(b"User-agent: *\nAllow: /\n")


@pytest.mark.parametrize("route", [
    _too_many_headers,
    lambda h: send(h, 200, b"User-agent: *\nDisal", "text/plain", length="400"),  # truncated
    lambda h: send(h, 503, b"down", "text/plain"),
    lambda h: send(h, 429, b"slow down", "text/plain"),
])
def test_broken_or_unreachable_robots_txt_disallows_and_is_cached(ok, route):
    ok.routes["/robots.txt"] = route
    opener = build_opener(only(ok), robots=True)
    for _ in range(3):
        with pytest.raises(RobotsDisallowed, match="unreachable"):
            opener.open(ok.url("/img.png"), timeout=5)
    assert ok.hits["/robots.txt"] == 1 and ok.hits["/img.png"] == 0


def test_missing_robots_txt_allows(ok):
    opener = build_opener(only(ok), robots=True)  # /robots.txt answers 404
    with opener.open(ok.url("/img.png"), timeout=5) as resp:
        assert resp.read() == PNG


def test_robots_store_is_shared_between_caches(ok, tmp_path):
    ok.routes["/robots.txt"] = lambda h: send(h, 200, b"User-agent: *\nDisallow: /img\n", "text/plain")
    for _ in range(3):  # three "processes", one store
        cache = robots.RobotsCache(build_opener(only(ok)), DEFAULT_USER_AGENT, store=str(tmp_path / "r"))
        assert not cache.allowed(ok.url("/img.png"))
    assert ok.hits["/robots.txt"] == 1


# -- 6. X-Robots-Tag grammar ------------------------------------------------------------------

@pytest.mark.parametrize("value, out", [
    ("noimageai, googlebot: noindex", True), ("index, follow, openwit: noimageai", True), ("none", True),
    ("noai", True), ("NoImageIndex", True), ("googlebot: noindex", False), ("otherbot: noai, openwit: index", False),
    ("unavailable_after: 25 Jun 2010 15:00:00 PST", False), ("index, follow", False),
])
def test_x_robots_tag(ok, value, out):
    ok.routes["/tagged.png"] = lambda h: send(h, 200, PNG, headers={"X-Robots-Tag": value})
    opener = build_opener(only(ok), x_robots_tag=True)
    assert robots.opted_out([value]) is out
    if out:
        with pytest.raises(OptedOut):
            opener.open(ok.url("/tagged.png"), timeout=5)
    else:
        with opener.open(ok.url("/tagged.png"), timeout=5) as resp:
            assert resp.read() == PNG


def test_meta_robots_scopes():
    assert robots.opted_out(metas=[("robots", "none")])
    assert robots.opted_out(metas=[("openwit", "noimageai")])
    assert not robots.opted_out(metas=[("googlebot", "noindex")])
    assert robots.opted_out(metas=[("robots", "index, openwit: noai")])


# -- 7. http and https only -------------------------------------------------------------------

def test_only_http_and_https_are_fetched(ok, forbidden, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("local file")
    opener = build_opener(only(ok))
    for url in (secret.as_uri(), f"ftp://127.0.0.2:{forbidden.server_address[1]}/secret",
                "data:image/png;base64,iVBORw0KGgo=", "gopher://127.0.0.2/"):
        with pytest.raises(InvalidUrl, match="invalid_url"):
            opener.open(url, timeout=5)
    ok.routes["/to-file"] = lambda h: send(h, 302, b"", "text/plain", {"Location": secret.as_uri()})
    with pytest.raises(InvalidUrl):
        opener.open(ok.url("/to-file"), timeout=5)


# -- 8. ports in the allow-list ---------------------------------------------------------------

def test_an_allowed_address_with_a_port_does_not_open_its_other_ports(ok):
    other = HostileServer("127.0.0.1")
    other.routes["/secret"] = lambda h: send(h, 200, b"secret", "text/plain")
    try:
        ok.routes["/hop"] = lambda h: send(h, 302, b"", "text/plain", {"Location": other.url("/secret")})
        with pytest.raises(ForbiddenAddress, match="port"):
            build_opener(only(ok)).open(ok.url("/hop"), timeout=5)
        assert other.connections == 0
        with build_opener(only(ok, port=False)).open(ok.url("/hop"), timeout=5) as resp:  # address only: all ports
            assert resp.read() == b"secret"
    finally:
        other.close()


@pytest.mark.parametrize("entry, net, port", [
    ("127.0.0.1", "127.0.0.1/32", None), ("127.0.0.1:8080", "127.0.0.1/32", 8080),
    ("10.0.0.0/8:443", "10.0.0.0/8", 443), ("::1", "::1/128", None), ("[::1]:8080", "::1/128", 8080),
    ("[fd00::/8]:443", "fd00::/8", 443),
])
def test_parse_allow(entry, net, port):
    assert parse_allow(entry) == (ipaddress.ip_network(net), port)


@pytest.mark.parametrize("spec", ["example.com", "127.0.0.1:0", "127.0.0.1:http", "10.0.0.0/33", "[::1]:99999"])
def test_parse_allow_refuses(spec):
    with pytest.raises(ValueError, match="--allow"):
        parse_allow(spec)


# -- 9. special-purpose ranges ----------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "fec0::1", "3fff::1", "192.0.0.8", "192.0.0.9", "198.18.0.1", "192.88.99.1", "192.31.196.1", "100::1",
    "2001:2::1", "5f00::1", "64:ff9b:1::1", "64:ff9b::7f00:1", "64:ff9b::a00:1", "4000::1", "2620:4f:8000::1",
])
def test_special_purpose_addresses_are_refused(address):
    assert why_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2a00:1450:4001::1"])
def test_public_addresses_still_pass(address):
    assert why_forbidden(ipaddress.ip_address(address)) is None

