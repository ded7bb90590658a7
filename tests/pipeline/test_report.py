"""`openwit report`: the page a full run gets (rendered in headless Chromium), partial
runs, determinism, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import schemas
from schemas import columns as C
from pipeline import report
from tests import browser

ALL_FIGURES = ("funnel", "queries", "languages", "captions", "sizes", "duplicates", "training")
OPENWIT = [sys.executable, "-m", "pipeline.cli"]


def check_report_in_chromium(page: Path, figures: tuple[str, ...], samples: int, screenshot: Path | None = None) -> None:
    """Every figure and sample image is present and decoded, and the page logs no errors."""
    assert page.is_file(), page
    rendered = browser.render(page, screenshot)
    assert rendered.errors == [], rendered.errors
    assert rendered.figure_ids == [f"fig-{f}" for f in figures]
    plots = [i for i in rendered.images if i["figure"].startswith("fig-")]
    assert [i["figure"] for i in plots] == [f"fig-{f}" for f in figures]
    for img in rendered.images:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
    assert sum(1 for i in rendered.images if not i["figure"].startswith("fig-")) == samples
    for img in plots:
        assert img["w"] >= 400 and img["h"] >= 250, img  # a real plot, not an empty placeholder


def openwit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*OPENWIT, *args], capture_output=True, text=True, timeout=120)


def _extract_only(root: Path) -> Path:
    (root / "extract").mkdir(parents=True)
    (root / "extract" / "extract_stats.json").write_text(json.dumps(
        {"job": "extract", C.STAGE: "extract", "in": 10, "kept": 7, "rejected": {"empty_alt": 2, "not_http": 1},
         "steps": [{"step": "links", "in": 10, "kept": 7, "rejected": {"empty_alt": 2, "not_http": 1}}]}))
    return root


def test_a_partial_run_gets_its_funnel_and_says_what_was_not_run(tmp_path):
    root = _extract_only(tmp_path / "run")
    proc = openwit("report", str(root))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"report: {root / 'report.html'} ")
    assert "1 figures: funnel; stages: extract" in proc.stdout
    text = (root / "report.html").read_text()
    assert 'id="fig-funnel"' in text and 'id="fig-queries"' not in text
    assert "The curate stage was not run" in text and "No training run" in text
    assert "in = kept + rejected" in text and "empty_alt 2" in text
    assert "<script" not in text
    check_report_in_chromium(root / "report.html", ("funnel",), samples=0)


def test_a_ledger_that_does_not_add_up_is_shown_as_such(tmp_path):
    root = _extract_only(tmp_path / "run")
    stats = json.loads((root / "extract" / "extract_stats.json").read_text())
    stats["kept"] = 8
    (root / "extract" / "extract_stats.json").write_text(json.dumps(stats))
    report.write(schemas.run.layout(str(root)), str(root / "r.html"), "t")
    assert "does not add up" in (root / "r.html").read_text()


def test_the_page_is_deterministic(tmp_path):
    root = _extract_only(tmp_path / "run")
    a = report.write(schemas.run.layout(str(root)), str(tmp_path / "a.html"), "t")
    b = report.write(schemas.run.layout(str(root)), str(tmp_path / "b.html"), "t")
    assert a["figures"] == b["figures"] == ["funnel"]
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("setup, args, words", [
    (None, ["{root}/nope"], ["no such run folder"]),
    (lambda r: r.mkdir(), ["{root}"], ["no stage ledger found"]),
    (lambda r: _write(r / "curate" / "curate_stats.json", "{not json"), ["{root}"], ["curate_stats.json", "not valid JSON"]),
    (lambda r: _write(r / "curate" / "curate_stats.json", "[1, 2]"), ["{root}"], ["not a stage ledger"]),
    (lambda r: _write(r / "curate" / "curate_stats.json", '{"candidates": 3}'), ["{root}"],
     ["curate_stats.json", "not an openwit ledger (missing stage, in, kept, rejected, steps)"]),
    (lambda r: (_extract_only(r), _write(r / "eval" / "results.json", '{"a": 1}')), ["{root}"],
     ["results.json", "not an `openwit eval --output` file"]),
    (lambda r: (_extract_only(r), _write(r / "train" / "metrics.jsonl", '{"step": 1}\nxx\n')), ["{root}"],
     ["metrics.jsonl, line 2", "not valid JSON"]),
    (lambda r: _extract_only(r), ["{root}", "--samples", "-1"], ["--samples"]),
    (None, [], ["give a run folder"]),
])
def test_bad_input_ends_in_one_line(tmp_path, setup, args, words):
    root = tmp_path / "run"
    if setup:
        setup(root)
    proc = openwit("report", *[a.format(root=root) for a in args])
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (root / "report.html").exists()


def test_the_per_language_table_follows_curates_ledger_sections():
    def section(n_in, removed, balanced_out, t):
        kept = n_in - sum(removed.values())
        steps = [{"step": "language", "in": n_in, "kept": kept, "rejected": removed},
                 {"step": "balance", "in": kept, "kept": kept - balanced_out,
                  "rejected": {"balanced_out": balanced_out} if balanced_out else {}}]
        return {"t": t, "in": n_in, "kept": kept - balanced_out, "steps": steps, "ledger_ok": True}

    stats = {"by_language": {"zh": section(50, {}, 7, 12.0), "en": section(90, {"no_language_match": 2}, 20, 30.0),
                             "de": section(5, {"language_filtered": 5}, 0, None)}}
    rows = report.language_rows(stats)
    assert [r[0] for r in rows] == ["en", "zh", "de"]
    assert rows[0] == ["en", "30.0", "90", "no_language_match 2", "20", "68", '<span class="ok">closes</span>']
    assert rows[2][1] == "&ndash;" and rows[2][3] == "language_filtered 5"
    many = {"by_language": {f"l{i:02d}": section(100 - i, {}, 0, 1.0) for i in range(report.LANGUAGE_ROWS + 3)}}
    assert report.language_rows(many)[-1][0] == "&hellip; 3 more (curate_stats.json)"
