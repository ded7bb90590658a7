"""pipeline/netguard.py against the real loopback web: refused by literal, by hostname and by
redirect; capped redirects and bodies; robots.txt fetched once per host."""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pyarrow.compute as pc
import pytest

import schemas
from schemas import columns as C
from pipeline.netguard import (DEFAULT_USER_AGENT, AddressPolicy, ForbiddenAddress, RobotsDisallowed, TooLarge,
                               build_opener, parse_connect_to, why_forbidden)
from pipeline.robots import RobotsCache
from pipeline.synth import crawl


@pytest.fixture(scope="module")
def rows(small_crawl):
    folder, _ = small_crawl
    return schemas.read_table(folder / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)


def url_with(rows, fault: str) -> str:
    sel = rows.filter(pc.and_(pc.equal(rows[C.FAULT], fault), pc.starts_with(rows[C.URL], "http")))
    return sel[C.URL][0].as_py()


def allow_only(url: str) -> AddressPolicy:
    return AddressPolicy.from_strings([f"{urlsplit(url).hostname}/32"])


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
    "224.0.0.1", "0.0.0.0", "240.0.0.1", "192.0.2.1", "255.255.255.255",
    "::1", "::", "fc00::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::",
    "2001:db8::1",
])
def test_non_public_addresses_are_refused(address):
    assert why_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert why_forbidden(ipaddress.ip_address(address)) is None


def test_loopback_is_refused_by_literal_before_any_request(web, rows):
    url = url_with(rows, "none")
    before = web.stats()["requests"]
    with pytest.raises(ForbiddenAddress, match="forbidden_address: 127.0.0.* loopback"):
        build_opener(AddressPolicy()).open(url, timeout=5)
    assert web.stats()["requests"] == before


def test_refused_by_hostname_that_resolves_to_loopback(web, rows):
    url = url_with(rows, "none")
    port = urlsplit(url).port
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    policy = AddressPolicy.from_strings(["127.0.0.2/32"])  # the server's 127.0.0.2 only
    with pytest.raises(ForbiddenAddress, match="localhost:[0-9]+ is 127.0.0.1"):
        build_opener(policy).open(f"http://localhost:{port}/robots.txt", timeout=5)


def test_allowed_address_is_fetched_and_redirect_hops_are_checked(web, rows):
    url = url_with(rows, "none")
    with build_opener(allow_only(url)).open(url, timeout=5) as resp:
        assert resp.status == 200 and resp.read()
    forbidden = url_with(rows, "redirect_forbidden")
    before = web.stats()["canary_hits"]
    with pytest.raises(ForbiddenAddress, match="0.0.0.0"):
        build_opener(allow_only(forbidden)).open(forbidden, timeout=5)
    assert web.stats()["canary_hits"] == before
    redirect = url_with(rows, "redirect")
    with build_opener(allow_only(redirect)).open(redirect, timeout=5) as resp:
        assert resp.status == 200 and resp.geturl() != redirect


def test_redirect_loops_and_bodies_are_capped(web, rows):
    loop = url_with(rows, "redirect_loop")
    with pytest.raises(urllib.error.HTTPError, match="redirect_loop"):
        build_opener(allow_only(loop)).open(loop, timeout=5)
    url = url_with(rows, "none")
    with pytest.raises(TooLarge, match="too_large_bytes"):
        build_opener(allow_only(url), max_bytes=100).open(url, timeout=5)
    everything = build_opener(AddressPolicy(allow_private=True))
    with everything.open(url, timeout=5) as resp:
        assert len(resp.read()) > 100


def test_robots_txt_is_fetched_once_per_host_and_honoured(web, rows):
    private = url_with(rows, "robots_disallow")
    public = url_with(rows, "none").replace(urlsplit(url_with(rows, "none")).netloc, urlsplit(private).netloc)
    cache = RobotsCache(build_opener(AddressPolicy(allow_private=True)), DEFAULT_USER_AGENT)
    before = web.stats()["robots_txt"]
    assert not cache.allowed(private)
    assert cache.allowed(public)
    assert cache.allowed(public) and not cache.allowed(private)
    assert cache.fetches == 1 and web.stats()["robots_txt"] == before + 1
    with socket.socket() as s:  # a port nobody listens on: unreachable -> disallow, per RFC 9309
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/img/x.jpg"
    assert not cache.allowed(dead)
    refused = RobotsCache(build_opener(AddressPolicy()), DEFAULT_USER_AGENT)
    with pytest.raises(ForbiddenAddress):  # robots.txt on a forbidden host is never fetched
        refused.allowed(public)
    assert urllib.request is not None


def test_opener_with_robots_refuses_disallowed_paths_and_sends_our_user_agent(web, rows):
    private = url_with(rows, "robots_disallow")
    opener = build_opener(AddressPolicy(allow_private=True), user_agent="openwit-test/1", robots=True)
    before = web.stats()["private_hits"]
    with pytest.raises(RobotsDisallowed, match="robots_disallowed: robots.txt of .* disallows /private/"):
        opener.open(private, timeout=5)
    assert web.stats()["private_hits"] == before
    url = url_with(rows, "none")
    request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 something else"})
    with opener.open(request, timeout=5) as resp:
        assert resp.status == 200
    assert request.get_header("User-agent") == "openwit-test/1"


def test_requests_per_host_are_bounded(web, rows):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.netguard import HostLimiter

    limiter = HostLimiter(2)
    inside, peak, lock = [0], [0], threading.Lock()
    original = limiter.slot

    class Counting:
        def __init__(self, sem):
            self.sem = sem

        def __enter__(self):
            self.sem.acquire()
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])

        def __exit__(self, *exc):
            with lock:
                inside[0] -= 1
            self.sem.release()

    limiter.slot = lambda host: Counting(original(host))  # type: ignore[method-assign]
    from pipeline.netguard import GuardedHTTPHandler
    opener = urllib.request.build_opener(GuardedHTTPHandler(AddressPolicy(allow_private=True), limiter))
    clean = url_with(rows, "none")
    host = urlsplit(clean).netloc
    urls = [clean.replace(urlsplit(clean).netloc, host)] * 6
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda u: opener.open(u, timeout=5).read(), urls))
    assert 1 <= peak[0] <= 2


@pytest.mark.parametrize("entry, why", [
    ("img.test:80:127.0.0.1", "expected HOST:PORT:ADDRESS:PORT"),
    ("img.test:80:127.0.0.1:0", "ports must be numbers from 1 to 65535"),
    ("img.test:http:127.0.0.1:8080", "ports must be numbers"),
    ("img.test:80:127.0.0.1:8080:9", "expected HOST:PORT:ADDRESS:PORT"),
    (":80:127.0.0.1:8080", "expected HOST:PORT:ADDRESS:PORT"),
])
def test_connect_to_entries_are_checked(entry, why):
    with pytest.raises(ValueError, match=why) as err:
        parse_connect_to(entry)
    assert "\n" not in str(err.value)


def test_connect_to_parses_names_addresses_and_ipv6():
    assert parse_connect_to("IMG.Example.test.:80:[::1]:8080") == ("img.example.test", 80, "::1", 8080)
    assert parse_connect_to("[2001:db8::1]:443:127.0.0.1:8443") == ("2001:db8::1", 443, "127.0.0.1", 8443)


def test_connect_to_keeps_the_url_and_host_header_and_checks_the_address_it_connects_to():
    """A named host served on a loopback port: reached only through its route, with its own
    Host header, and only once the address it routes to is allowed (port included)."""
    from tests.pipeline.hostile import ForwardProxy, HostileServer, send

    server = HostileServer("127.0.0.1")
    server.routes["/host"] = lambda h: send(h, 200, h.headers["Host"].encode(), "text/plain")
    server.routes["/hop"] = lambda h: send(h, 302, b"", "text/plain", {"Location": "/host"})
    proxy = ForwardProxy()
    route = f"img1.openwit-demo.test:80:{server.address}"
    try:
        allowed = AddressPolicy.from_strings([server.address], connect_to=[route])
        with build_opener(allowed).open("http://img1.openwit-demo.test/hop", timeout=5) as resp:
            assert resp.read() == b"img1.openwit-demo.test" and resp.geturl() == "http://img1.openwit-demo.test/host"
        # the address routed to is checked like any other: loopback needs --allow, on its port
        for policy in (AddressPolicy.from_strings([], connect_to=[route]),
                       AddressPolicy.from_strings(["127.0.0.1:1"], connect_to=[route])):
            with pytest.raises(ForbiddenAddress, match=rf"img1.openwit-demo.test:80 \(connecting to "
                                                       rf"{server.address}\) is 127.0.0.1"):
                build_opener(policy).open("http://img1.openwit-demo.test/host", timeout=5)
        # another port of the same name is not routed (and the name does not resolve)
        with pytest.raises(urllib.error.URLError, match="cannot resolve img1.openwit-demo.test"):
            build_opener(allowed).open("http://img1.openwit-demo.test:8080/host", timeout=5)
        # through a proxy, the proxy is asked for the routed address and port, not the name
        with build_opener(allowed, proxy=proxy.url).open("http://img1.openwit-demo.test/host", timeout=5) as resp:
            assert resp.read() == b"img1.openwit-demo.test"
        assert proxy.asked == [f"GET http://{server.address}/host"]
        assert server.hits["/host"] == 2 and server.hits["/hop"] == 1
    finally:
        server.close()
        proxy.shutdown()
        proxy.server_close()
