"""The `openwit` command as a user runs it: help, real work, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import schemas
from schemas import columns as C
from pipeline.synth.server import free_hosts
from tests.pipeline.test_report import ALL_FIGURES, check_report_in_chromium

OPENWIT = [sys.executable, "-m", "pipeline.cli"]


def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    # no progress lines: on a busy machine a job outlives the interval and prints one on
    # stderr before its error line (test_progress and the Ctrl-C test check them)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OPENWIT_PROGRESS_SECONDS": "0"}
    return subprocess.run([*OPENWIT, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_help_lists_the_commands():
    proc = run("--help")
    assert proc.returncode == 0
    for name in ("synth", "demo", "extract", "curate", "download", "dedupe", "shard", "train", "export", "eval"):  # not-a-column
        assert f"  {name} " in proc.stdout
    for cmd in (["synth", "--help"], ["synth", "serve", "--help"], ["demo", "--help"], ["extract", "--help"],
                ["curate", "--help"], ["download", "--help"], ["dedupe", "--help"], ["shard", "--help"],  # not-a-column
                ["train", "--help"], ["export", "--help"], ["eval", "--help"]):
        proc = run(*cmd)
        assert proc.returncode == 0 and "usage: openwit" in proc.stdout


class _Shown(Exception):
    """Raised instead of printing a parser's help, carrying the parser."""


# every command and subcommand a user can ask `--help` of
HELP_COMMANDS = [["synth"], ["synth", "serve"], ["demo"], ["extract"], ["curate"], ["queries", "build"],
                 ["queries", "build-default"], ["queries", "build-world"],
                 ["queries", "stats"], ["download"], ["dedupe"], ["shard"], ["train"], ["export"], ["eval"],  # not-a-column
                 ["validate"], ["report"]]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_every_option_is_described_with_its_default(command, monkeypatch):
    import argparse

    from pipeline import cli

    def shown(parser, file=None):
        raise _Shown(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", shown)
    with pytest.raises(_Shown) as caught:
        cli.main([*command, "--help"])
    parser = caught.value.args[0]
    formatter = parser._get_formatter()  # noqa: SLF001 - the text argparse prints for each option
    for action in parser._actions:  # noqa: SLF001
        if not action.option_strings or action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[-1]
        assert action.help and len(action.help) > 8, f"{' '.join(command)} {name}: no help text"
        default = action.default
        if default not in (None, False, []) and not isinstance(action, argparse._StoreTrueAction):
            text = formatter._expand_help(action)  # noqa: SLF001
            assert "default" in text, f"{' '.join(command)} {name}: default {default!r} not shown: {text!r}"
            shown_value = f"{default:,}" if isinstance(default, int) and not isinstance(default, bool) else str(default)
            assert str(default) in text or shown_value in text or "default:" in text, (name, text)


def test_top_level_help_imports_no_command():
    """`openwit --help` reads the commands' summaries without importing them (Beam and torch
    take seconds to import), so it answers at once."""
    code = ("import sys; from pipeline.cli import main; main(['--help']); "
            "heavy = [m for m in ('apache_beam', 'torch', 'deepspeed', 'open_clip', 'img2dataset', 'pipeline.curate', "
            "'trainer.cli') if m in sys.modules]; assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "train " in proc.stdout and "(recipes: debug, vit-b-32, vit-b-16, vit-l-14)" in proc.stdout


def test_train_summary_names_every_recipe():
    from trainer import cli
    from trainer.config import RECIPES

    assert cli.SUMMARY.endswith("(recipes: " + ", ".join(RECIPES) + ")")


def test_unknown_command():
    assert_one_line_error(run("frobnicate"), "unknown command 'frobnicate'")


@pytest.mark.parametrize("args, words", [
    (["synth", "--pages", "abc"], ["--pages", "abc"]),
    (["synth", "--pages", "0"], ["--pages"]),
    (["synth", "--no-such-option"], ["--no-such-option"]),
    (["synth", "serve", "--crawl", "/nonexistent/crawl"], ["/nonexistent/crawl", "manifest.json"]),
    (["demo", "--sample", "x"], ["--sample"]),
    (["demo", "--quick", "--pages", "0"], ["--pages"]),  # --quick's sizes do not hide an explicit flag
    (["extract", "--output", "/tmp/x"], ["--input is required"]),
    (["extract", "--input", "/nonexistent/*.wat.gz", "--output", "/tmp/x"], ["/nonexistent/*.wat.gz"]),
    (["extract", "--input", "/etc/hostname", "--output", "/tmp/x"], ["cannot tell the format"]),
    (["curate", "--output", "/tmp/x"], ["--input is required"]),
    (["extract", "--input", "/etc/hostname", "--output", "/tmp/x", "--caption_col", "text"],  # not-a-column: a value
     ["unknown option '--caption_col'"]),
    (["curate", "--input", "/tmp", "--output", "/tmp/x", "--shardz", "3"], ["unknown option '--shardz'"]),
    (["dedupe", "--input", "/tmp", "--output", "/tmp/x", "--direct_num_workers=x"], ["--direct_num_workers", "'x'"]),
    (["train", "--data", "/tmp", "--train-data", "x/{0..1}.tar"], ["unrecognized arguments: --train-data"]),
    (["queries", "build", "--output", "/tmp/x"], ["give at least one source"]),
    (["queries", "build", "--corpus", "/nonexistent/*.txt", "--output", "/tmp/x"], ["/nonexistent/*.txt"]),
    (["queries", "build", "--wordnet", "/etc/hostname", "--output", "/tmp/x"], ["/etc/hostname", "not a WN-LMF file"]),
    (["queries", "build", "--titles", "/nonexistent.tsv", "--output", "/tmp/x"], ["--titles /nonexistent.tsv"]),
    (["queries", "build", "--unigram-counts", "wordfreq:xx", "--output", "/tmp/x"], ["no list for this language"]),
    (["queries", "stats", "/nonexistent.txt"], ["/nonexistent.txt", "no such query list"]),
    (["queries", "frobnicate"], ["unknown subcommand"]),
    (["curate", "--input", "/tmp", "--output", "/tmp/x", "--queries", "/nonexistent.txt"], ["/nonexistent.txt"]),
    (["curate", "--langid", "magic"], ["--langid"]),
    (["curate", "--input", "/tmp", "--output", "/tmp/x", "--t", "-5"], ["--t -5", "positive"]),
    (["curate", "--input", "/tmp", "--output", "/tmp/x", "--t", "nan"], ["--t nan", "positive"]),
    (["curate", "--input", "/tmp", "--output", "/tmp/x", "--languages", "en,xx"], ["--languages en,xx", "xx is not"]),
    (["curate", "--input", "/tmp", "--output", "/tmp/x", "--langid", "langdetect", "--languages", "fil"],
     ["fil is not a code the langdetect"]),
    (["curate", "--input", "/tmp", "--output", "/tmp/x", "--min-chars", "50", "--max-chars", "10"], ["--min-chars 50"]),
    (["curate", "--input", "/tmp", "--output", "/tmp/x", "--min-words", "-1"], ["--min-words -1"]),
    (["extract", "--input", "/etc/hostname", "--format", "csv", "--output", "/tmp/x", "--max-alt-chars", "0"],
     ["--max-alt-chars 0", "positive"]),
    (["extract", "--input", "/etc/hostname", "--format", "csv", "--output", "/proc"], ["/proc", "cannot write here"]),
    (["download", "--output", "/tmp/x"], ["--input and --output are required"]),
    (["download", "--input", "/nonexistent", "--output", "/tmp/x"], ["/nonexistent"]),
    (["download", "--input", "/tmp", "--output", "/tmp/x", "--connect-to", "img.test:80:127.0.0.1"],
     ["--connect-to 'img.test:80:127.0.0.1'", "HOST:PORT:ADDRESS:PORT"]),
    (["dedupe", "--input", "/nonexistent", "--output", "/tmp/x"], ["/nonexistent"]),
    (["dedupe", "--input", "/tmp", "--radius", "x"], ["--radius"]),
    (["shard", "--keep", "/nonexistent", "--images", "/tmp", "--curated", "/tmp", "--output", "/tmp/x"],  # not-a-column
     ["/nonexistent"]),
    (["shard", "--keep", "/tmp"], ["is required"]),  # not-a-column
    (["train", "--data", "/nonexistent/shards"], ["/nonexistent/shards"]),
    (["train", "--data", "/tmp", "--set", "nope=1"], ["unknown setting 'nope'"]),
    (["train", "--recipe", "vit-z"], ["--recipe"]),
    (["train"], ["--data is required"]),
    (["export", "--run", "/nonexistent/run", "--output", "/tmp/x"], ["/nonexistent/run"]),  # not-a-column
])
def test_bad_options_and_missing_paths_end_in_one_line(args, words):
    assert_one_line_error(run(*args), *words)


def test_unwritable_output_folder_ends_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_one_line_error(run("synth", "--out", str(blocker / "crawl"), "--pages", "5"), str(blocker))
    assert_one_line_error(run("demo", "--output", str(blocker / "demo")), str(blocker))


def test_unusable_input_files_exit_2_and_say_why(tmp_path):
    """Input that is there but gives nothing to judge (a url list without the caption column,
    a CSV read as WAT, an empty file) is not a successful run of 0 candidates: exit 2 with
    the reason, the ledger still written. One usable file among unusable ones is a run."""
    (tmp_path / "nocap.csv").write_text("link,alt\nhttp://a.example/x.jpg,a cat\n")
    (tmp_path / "ok.csv").write_text("url,caption\nhttp://a.example/x.jpg,a cat on a mat\n")
    (tmp_path / "empty.wat").write_bytes(b"")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"src": ["http://a.example/x.jpg"], "label": ["a cat"]}),  # not-a-column: foreign
                   tmp_path / "other.parquet")
    cases = [(["nocap.csv"], [], ["nocap.csv", "'caption'"]),
             (["ok.csv"], ["--format", "wat"], ["ok.csv", "bad_record"]),
             (["empty.wat"], [], ["empty.wat: empty file"]),
             (["other.parquet"], [], ["other.parquet", "no column 'url'"]),
             (["nocap.csv,empty.wat"], [], ["none of the 2 file(s)", "nocap.csv", "empty.wat"])]
    for i, (inputs, extra, words) in enumerate(cases):
        out = tmp_path / f"out{i}"
        proc = run("extract", "--input", ",".join(str(tmp_path / x) for x in inputs[0].split(",")),
                   "--output", str(out), *extra)
        assert_one_line_error(proc, "no usable input", *words)
        assert (out / "extract_stats.json").exists()  # the ledger says it too
    proc = run("extract", "--input", f"{tmp_path / 'ok.csv'},{tmp_path / 'empty.wat'}", "--output", str(tmp_path / "mixed"))
    assert proc.returncode == 0, proc.stderr
    assert "-> 1 candidates" in proc.stdout


def test_path_list_entries_are_checked_before_any_worker(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "a.csv").write_text("url,caption\nhttp://a.example/x.jpg,a cat on a mat\n")
    (tmp_path / "list.paths").write_text("crawl/a.csv\ncrawl/b.csv\nelsewhere/c.csv\n")
    proc = run("extract", "--input", str(tmp_path / "list.paths"), "--output", str(tmp_path / "out"))
    assert_one_line_error(proc, "list.paths", "2 of the 3 files it lists do not exist", "crawl/b.csv")
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_synth_writes_a_crawl_and_serve_serves_it(tmp_path):
    out = tmp_path / "crawl"
    hosts = free_hosts(8)
    base = hosts[0].rsplit(":", 1)[1]
    proc = run("synth", "--out", str(out), "--pages", "60", "--pages-per-file", "20",
               "--base-port", base, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "synthetic crawl in" in proc.stdout and "links/s" in proc.stdout
    assert "[synth] files 3/3" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == 3 and manifest["pages"] == 60
    proc = run("synth", "serve", "--crawl", str(out), "--duration", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"serving 8 hosts: http://{hosts[0]} ")
    assert "stopped after" in proc.stdout


def test_synth_with_named_hosts_serves_them_on_free_ports(tmp_path):
    out = tmp_path / "crawl"
    proc = run("synth", "--out", str(out), "--pages", "20", "--pages-per-file", "20", "--named-hosts", "--hosts", "3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["hosts"] == [f"img{i}.openwit-demo.test" for i in range(3)]
    proc = run("synth", "serve", "--crawl", str(out), "--duration", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("serving 3 hosts: http://img0.openwit-demo.test http://img1.openwit-demo.test ")
    routes = re.findall(r"--connect-to=img(\d)\.openwit-demo\.test:80:(127\.0\.0\.\d+:\d+)", proc.stdout)
    allows = re.findall(r"--allow=(127\.0\.0\.\d+:\d+)", proc.stdout)
    assert [r[0] for r in routes] == ["0", "1", "2"] and sorted(allows) == sorted(r[1] for r in routes)


def _digests(root: Path, patterns: tuple[str, ...]) -> dict[str, str]:
    import hashlib

    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for pattern in patterns for f in sorted(root.glob(pattern))}


@pytest.mark.slow
def test_demo_quick_runs_end_to_end_and_is_a_function_of_its_seed(tmp_path):
    """The quick demo runs every step; its data steps run again with the same seed serve the
    web on other loopback ports, yet the urls, the curated pairs and the shards are byte for
    byte the first run's. (Training on identical shards gives identical weights: the
    trainer's resume tests check that bit for bit.)"""
    proc = run("demo", "--quick", "--output", str(tmp_path / "demo"), timeout=600)  # ~2 min; more on a busy machine
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[3/11] probe" in proc.stdout and "[5/11] curate" in proc.stdout and "[6/11] download" in proc.stdout
    assert "[7/11] dedupe" in proc.stdout and "[8/11] shard" in proc.stdout and "[9/11] train" in proc.stdout
    assert "[10/11] eval" in proc.stdout and "[11/11] report" in proc.stdout and "training: " in proc.stdout
    page = tmp_path / "demo" / "report.html"
    assert f"report: {page} (open it in a browser)" in proc.stdout
    summary = proc.stdout[proc.stdout.index("funnel:"):]
    for line in ("| zeroshot_shape | zeroshot_classification |", "| zeroshot_colour | linear_probe |",
                 "| retrieval | zeroshot_retrieval |",
                 "learning goal, zero-shot on held-out combinations:", "  step   shape  colour",
                 "(--quick trains one epoch to show every step working; the goal is the full demo's)"):
        assert line in summary, line
    assert "funnel:" in proc.stdout and "curated pairs" in proc.stdout
    assert "INFO:" not in proc.stderr
    assert " NO " not in proc.stdout
    assert "duplicates byte-identical to their original: 8/8" in proc.stdout
    assert "0 fetches of a forbidden redirect target, 0 fetches of robots-disallowed paths" in proc.stdout
    check_report_in_chromium(page, ALL_FIGURES, samples=24)

    from pipeline import demo

    again = tmp_path / "again"
    again.mkdir()
    paths = schemas.run.layout(str(again))
    cfg, _, truth = demo.synthesize(again, demo.SIZES[True][0], 0)  # --quick's pages, seed 0
    assert demo.probe_links(cfg, truth, 2)[0]  # served on ports of its own
    demo.extract_and_curate(again, paths, demo.budget(demo.SIZES[True][0]))
    demo.download_images(cfg, paths)
    demo.dedupe_and_shard(again, paths, demo.budget(demo.SIZES[True][0]))
    patterns = ("curate/curated/*.parquet", "shards/*.tar", "shards/index/*.parquet")
    a, b = _digests(tmp_path / "demo", patterns), _digests(again, patterns)
    assert a == b and len(a) >= 3 and any(k.endswith(".tar") for k in a)
    assert re.search(r"img0\.openwit-demo\.test on 127\.0\.0\.\d+:\d+", proc.stdout)
    urls = schemas.read_table(tmp_path / "demo" / "curate" / "curated", schemas.CURATED)[C.URL].to_pylist()
    assert urls and all(u.startswith("http://img") and ".openwit-demo.test/" in u for u in urls)


def test_ctrl_c_ends_a_running_job_in_one_line(tmp_path):
    """Ctrl-C reaches the whole process group (the launcher and Beam's worker processes):
    the command says it was interrupted, in one line, with no worker's traceback."""
    import signal

    for j in range(40):
        rows = "".join(f"http://h{i % 7}.example/{j}-{i}.jpg,a photo of a red cat number {i}\n" for i in range(25_000))
        (tmp_path / f"part{j:02d}.csv").write_text("url,caption\n" + rows)
    env = {**os.environ, "OPENWIT_PROGRESS_SECONDS": "0.2", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.Popen([*OPENWIT, "extract", "--input", str(tmp_path / "*.csv"), "--output", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    first = proc.stderr.readline()  # the first progress line: the workers are busy
    assert first.startswith("[extract] files "), first
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if not x.startswith("[extract] files ")]
    assert proc.returncode == 130 and lines == ["openwit extract: interrupted"], err


def test_a_gs_url_without_credentials_is_one_line_not_a_hang(tmp_path):
    """pyarrow's GCS client retries for 15 minutes by default; openwit bounds each call's
    retries (OPENWIT_GCS_RETRY_SECONDS), so a machine without credentials or network hears
    why in one line, for an input and for an output."""
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    env.update({"OPENWIT_GCS_RETRY_SECONDS": "2", "NO_ALBUMENTATIONS_UPDATE": "1"})
    (tmp_path / "ok.csv").write_text("url,caption\nhttp://a.example/x.jpg,a cat on a mat\n")
    for args in (["--input", "gs://openwit-no-such-bucket/crawl/x.wat.gz", "--output", str(tmp_path / "o")],
                 ["--input", str(tmp_path / "ok.csv"), "--output", "gs://openwit-no-such-bucket/out"]):
        proc = subprocess.run([*OPENWIT, "extract", *args], capture_output=True, text=True, env=env, timeout=120)
        assert_one_line_error(proc, "gs://openwit-no-such-bucket")


def test_a_beam_job_runs_with_a_proxy_in_the_environment(tmp_path):
    """A proxy set for the web (here one that accepts nothing) is not where the local
    runner's worker processes reach the job on localhost: extract on two worker processes
    ends as without it, and a no_proxy the user set is kept."""
    (tmp_path / "urls.csv").write_text("url,caption\n" + "".join(
        f"http://h{i % 5}.example/{i}.jpg,a photo of a red cat number {i}\n" for i in range(500)))
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "http_proxy": dead, "HTTPS_PROXY": dead, "ALL_PROXY": dead, "no_proxy": "intranet.example"}
    proc = subprocess.run([*OPENWIT, "extract", "--input", str(tmp_path / "urls.csv"), "--output", str(tmp_path / "out"),
                           "--direct_num_workers=2"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    from pipeline import options

    os.environ.update(http_proxy=dead, no_proxy="intranet.example")
    try:
        options.loopback_skips_proxy()
        assert os.environ["no_proxy"] == "intranet.example,localhost,127.0.0.1,::1"
    finally:
        for var in ("http_proxy", "no_proxy", "NO_PROXY"):
            os.environ.pop(var, None)
