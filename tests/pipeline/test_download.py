"""`openwit download` against the loopback web: every fault ends as the right reason, the
ledger holds, hosts are interleaved, a rerun skips finished shards."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

import schemas
from schemas import columns as C
from pipeline import download
from tests.pipeline.faults import EXPECTED, FAULT_ARGS, curated, fault_run  # noqa: F401 - fixtures


def test_reason_mapping():
    assert download.reason_for("success", None) is None
    assert download.reason_for("failed_to_download", "HTTP Error 404: Not Found") == "not_found"
    assert download.reason_for("failed_to_download", "HTTP Error 503: x") == "server_error"
    assert download.reason_for("failed_to_download", "HTTP Error 302: redirect_loop: y") == "redirect_loop"
    assert download.reason_for("failed_to_download", "forbidden_address: 10.0.0.1 is private") == "forbidden_address"
    assert download.reason_for("failed_to_resize", "Image decoding error") == "bad_format"
    assert download.reason_for("failed_to_download", "something new") == "download_error"
    assert download.reason_for("failed_to_resize", "OpenCV(4.14.0) loadsave.cpp:79: error: (-215:Assertion failed) "
                               "pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'") \
        == "too_large_pixels"
    assert download.reason_for("failed_to_download", "invalid_url: file: urls are not fetched") == "invalid_url"
    assert download.reason_for("failed_to_download", "timeout: fetching x took longer than 2s") == "timeout"


def test_interleave_by_host():
    rows = [{C.URL: f"http://{h}/{i}"} for h in "aab" for i in range(2)]
    hosts = [r[C.URL].split("/")[2] for r in download.interleave_by_host(rows)]
    assert hosts == ["a", "b", "a", "b", "a", "a"] and len(hosts) == len(rows)


@pytest.mark.slow
def test_every_fault_ends_as_its_reason_and_the_ledger_holds(web, curated, fault_run):  # noqa: F811
    folder, faults = curated
    stats, tmp_path, argv, before, after = fault_run
    assert stats["ledger_ok"] and stats["in"] == len(faults) and stats["missing_from_img2dataset"] == 0
    rows = schemas.read_table(tmp_path / "downloaded", schemas.DOWNLOADED).to_pylist()
    assert len(rows) == len(faults)
    got = {}
    for r in rows:
        fault, kind = faults[r[C.UID]]
        want = "bad_format" if kind == "svg" else EXPECTED[fault]
        got.setdefault((fault, kind), Counter())[r[C.REASON]] += 1
        assert r[C.REASON] == want, (fault, kind, r[C.ERROR_MESSAGE])
        assert (r[C.STATUS] == "success") == (want is None)
    assert after["canary_hits"] == before["canary_hits"]
    assert after["private_hits"] == before["private_hits"]
    rejects = schemas.read_table(tmp_path / "rejects", schemas.REJECT)
    assert rejects.num_rows == sum(stats["rejected"].values())
    # a rerun skips the finished shards and accounts the same
    again = download.run(argv)
    assert again["kept"] == stats["kept"] and again["rejected"] == stats["rejected"]
    assert web.stats()["requests"] == after["requests"]


def _successes(folder) -> set[str]:
    rows = schemas.read_table(folder / "downloaded", schemas.DOWNLOADED).to_pylist()
    return {r[C.UID] for r in rows if r[C.STATUS] == "success"}


@pytest.mark.slow
def test_kill_9_then_rerun_equals_an_uninterrupted_run(web, curated, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    folder, faults = curated
    common = ["--input", str(folder), "--allow", "127.0.0.0/8", "--workers", "1", "--threads", "2",
              "--timeout", "1", "--retries", "1", "--image-size", "32", "--samples-per-shard", "4", "--hang-grace", "5"]
    full = download.run([*common, "--output", str(tmp_path / "full")])
    assert full["shards_done"] == full["shards_expected"] and full["ledger_ok"]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "download", *common, "--output", str(killed)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((killed / "shards").glob("*_stats.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name.removesuffix("_stats.json") for p in (killed / "shards").glob("*_stats.json")}
    assert 0 < len(done_before) < full["shards_expected"]
    for f in (killed / "shards").iterdir():  # shards/ holds finished shards only, never a partial tar
        assert f.name.split(".")[0].split("_")[0] in done_before, f.name

    resumed = download.run([*common, "--output", str(killed)])
    assert resumed["shards_done"] == full["shards_expected"] and resumed["ledger_ok"]
    assert _successes(killed) == _successes(tmp_path / "full")
    assert resumed["kept"] == full["kept"] and resumed["rejected"] == full["rejected"]


@pytest.mark.slow
def test_a_killed_runs_straggler_finishing_a_removed_shard_is_fetched_again(web, curated, tmp_path,  # noqa: F811
                                                                               monkeypatch):
    """A killed run's worker that outlives it (a Spark executor of a killed driver) finishes a
    shard just after the rerun removed that shard's partial files: its stats file lands
    alone, and img2dataset's incremental mode would take the shard as done. The rerun
    fetches it again, and no curated row goes unaccounted."""
    import shutil

    folder, _ = curated
    argv = ["--input", str(folder), "--workers", "1", *FAULT_ARGS]
    full_out, out = tmp_path / "full", tmp_path / "out"
    full = download.run([*argv, "--output", str(full_out)])
    shutil.copytree(full_out / "_staging", out / "_staging")
    stats = (out / "_staging" / "00001_stats.json").read_text()
    (out / "_staging" / "00001_stats.json").unlink()  # shard 1 as a killed run left it: no stats yet
    (out / "_staging" / "00001.tar").write_bytes((out / "_staging" / "00001.tar").read_bytes()[:1000])
    real, removed = download.remove_partial_shards, []

    def remove_then_straggle(staging):
        removed.append(real(staging))
        if len(removed) == 1:  # the straggler writes its stats right after the rerun's clean-up
            (out / "_staging" / "00001_stats.json").write_text(stats)
        return removed[-1]

    monkeypatch.setattr(download, "remove_partial_shards", remove_then_straggle)
    again = download.run([*argv, "--output", str(out)])
    assert removed == [1, 1, 0]  # the partial shard at the start, the straggler's shard after the first pass
    assert again["shards_done"] == again["shards_expected"] == full["shards_expected"]
    assert again["missing_from_img2dataset"] == 0 and again["ledger_ok"]
    assert _records(out) == _records(full_out)
    assert sorted((out / "shards").iterdir()) == sorted(out / "shards" / p.name for p in (full_out / "shards").iterdir())

    # rows that no shard reports are counted and written as rejects with their url
    (out / "shards" / "00001.parquet").unlink()
    shutil.rmtree(out / "downloaded")
    urls = dict(zip(*schemas.read_table(folder, schemas.CURATED).select([C.UID, C.URL]).to_pydict().values()))
    ledger = download.account(str(out / "shards"), str(out), len(urls), urls)
    unreported = schemas.read_table(out / "rejects" / "unreported.parquet", schemas.REJECT).to_pylist()
    assert ledger["missing_from_img2dataset"] == len(unreported) > 0 and ledger["ledger_ok"]
    assert all(r[C.REASON] == "download_error" and r[C.URL] == urls[r[C.UID]] for r in unreported)
    reported = {r[C.UID] for r in schemas.read_table(out / "downloaded", schemas.DOWNLOADED).to_pylist()}
    assert reported | {r[C.UID] for r in unreported} == set(urls)


def _records(folder) -> list[tuple]:
    rows = schemas.read_table(folder / "downloaded", schemas.DOWNLOADED).to_pylist()
    return sorted((r[C.UID], r[C.STATUS], r[C.REASON], r[C.SHA256]) for r in rows)


@pytest.mark.slow
def test_hostile_web_through_the_stage(ok, forbidden, tmp_path, monkeypatch):
    """Every attack of the hostile web, through `openwit download` (img2dataset's own spawned
    workers, 2 processes, one url per shard), ends as its reason in REJECT and the ledger;
    a proxy in the environment changes nothing; robots.txt is fetched once per host."""
    import base64

    from pipeline.synth.server import bomb_png
    from tests.pipeline.hostile import PNG, ForwardProxy, HostileServer, send, stream, trickle
    from tests.pipeline.test_download_guard import _encoded

    other = HostileServer("127.0.0.1")  # an unlisted port of an allowed address
    other.routes["/img.png"] = lambda h: send(h, 200, PNG)
    bom = HostileServer("127.0.0.1")  # a second allowed host whose robots.txt starts with a BOM
    bom.routes["/robots.txt"] = lambda h: send(h, 200, "\ufeffUser-agent: *\nDisallow: /\n".encode(), "text/plain")
    bom.routes["/img.png"] = lambda h: send(h, 200, PNG)
    proxy = ForwardProxy()
    ok.routes["/robots.txt"] = lambda h: send(h, 200, b"User-agent: *\nAllow: /\nDisallow: /private/\n"
                                                     b"Disallow: /*.jpeg$\n", "text/plain")
    hdr, rgba = _encoded("hdr"), _encoded("rgba3000")
    routes = {
        "/img.png": None, "/x4.png": ("googlebot: noindex", None),
        "/x1.png": ("noimageai, googlebot: noindex", "opted_out"),
        "/x2.png": ("index, follow, openwit: noimageai", "opted_out"), "/x3.png": ("none", "opted_out"),
    }
    for path, spec in routes.items():
        if spec:
            ok.routes[path] = lambda h, v=spec[0]: send(h, 200, PNG, headers={"X-Robots-Tag": v})
    ok.routes["/private/a.png"] = ok.routes["/w.jpeg"] = lambda h: send(h, 200, PNG)
    ok.routes["/hop"] = lambda h: send(h, 302, b"", "text/plain", {"Location": forbidden.url("/secret")})
    ok.routes["/port"] = lambda h: send(h, 302, b"", "text/plain", {"Location": other.url("/img.png")})
    ok.routes["/to-file"] = lambda h: send(h, 302, b"", "text/plain", {"Location": "file:///etc/hostname"})
    ok.routes["/big"] = lambda h: stream(h, 40_000_000, "+40000000")
    ok.routes["/slow"] = lambda h: trickle(h, b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\n", 0) or \
        trickle(h, b"abcdefgh", 0.7)
    ok.routes["/img.hdr"] = lambda h: send(h, 200, hdr, "image/vnd.radiance")
    ok.routes["/alpha.png"] = lambda h: send(h, 200, rgba)
    ok.routes["/bomb.png"] = lambda h: send(h, 200, bomb_png())
    cases = {ok.url(p): (r[1] if r else None) for p, r in routes.items()}
    cases.update({
        ok.url("/private/a.png"): "robots_disallowed", ok.url("/w.jpeg"): "robots_disallowed",
        bom.url("/img.png"): "robots_disallowed",
        forbidden.url("/secret"): "forbidden_address", ok.url("/hop"): "forbidden_address",
        ok.url("/port"): "forbidden_address",
        "file:///etc/hostname": "invalid_url", f"ftp://127.0.0.2:{forbidden.server_address[1]}/x": "invalid_url",
        "data:image/png;base64," + base64.b64encode(PNG).decode(): "invalid_url", ok.url("/to-file"): "invalid_url",
        ok.url("/big"): "too_large_bytes", ok.url("/slow"): "timeout",
        ok.url("/img.hdr"): "bad_format", ok.url("/alpha.png"): "too_large_pixels",
        ok.url("/bomb.png"): "too_large_pixels",
    })
    rows = [{C.UID: schemas.uid(u, "a red circle"), C.URL: u, C.TEXT: "a red circle", C.LANG: "en",
             C.LANG_PROB: 1.0, C.MATCHED_QUERIES: ["red"], C.PAGE_URL: None, C.SOURCE_FILE: "x",
             C.SOURCE_OFFSET: 0, C.SOURCE_FORMAT: "csv"} for u in cases]
    folder = tmp_path / "curated"
    schemas.write_table(pa.Table.from_pylist(rows, schema=schemas.CURATED), folder / "part-0.parquet",
                        schemas.CURATED)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "ftp_proxy", "all_proxy"):
        monkeypatch.setenv(var, proxy.url)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        stats = download.run(["--input", str(folder), "--output", str(tmp_path / "out"), "--allow", ok.address,
                              "--allow", bom.address, "--workers", "2", "--threads", "4", "--timeout", "1",
                              "--retries", "0", "--image-size", "32", "--samples-per-shard", "1",
                              "--max-bytes", str(1 << 20), "--hang-grace", "5"])
        got = {r[C.URL]: r[C.REASON] for r in
               schemas.read_table(tmp_path / "out" / "downloaded", schemas.DOWNLOADED).to_pylist()}
        assert got == cases
        rejects = schemas.read_table(tmp_path / "out" / "rejects", schemas.REJECT).to_pylist()
        assert Counter(r[C.REASON] for r in rejects) == Counter(v for v in cases.values() if v)
        assert stats["ledger_ok"] and stats["rejected"] == dict(Counter(v for v in cases.values() if v))
        assert proxy.asked == [] and other.connections == 0
        assert ok.hits["/robots.txt"] == 1 and bom.hits["/robots.txt"] == 1  # across processes and shards
        assert ok.hits["/private/a.png"] == ok.hits["/w.jpeg"] == bom.hits["/img.png"] == 0
        assert ok.bytes_sent["/big"] < 20_000_000
    finally:
        for s in (other, bom, proxy):
            s.close()


@pytest.mark.parametrize("flags, message", [
    (["--allow", "example.com"], "hostnames are not accepted"), (["--allow", "10.0.0.0/8:99999"], "port"),
    (["--proxy", "socks5://127.0.0.1:1080"], "--proxy"), (["--max-decode-mib", "0"], "must be positive"),
    (["--timeout", "-1"], "must be positive"),
])
def test_bad_guard_flags_are_one_line_errors(flags, message, tmp_path):
    with pytest.raises(schemas.UserError, match=message):
        download.run(["--input", str(tmp_path), "--output", str(tmp_path / "out"), *flags])
