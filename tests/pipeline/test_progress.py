"""Progress lines of jobs run on this machine: what worker processes count reaches the
launcher's line, and a real local Beam job prints them while it runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pipeline import progress


def test_line_reports_each_kind_rate_and_eta():
    text = progress.line("curate", {"files": 10, "shards": 4}, {"files": 10, "shards": 1}, 50_000, "candidates", 10.0)
    assert text == "[curate] files 10/10, shards 1/4 (62%)  50,000 candidates  5,000 candidates/s  ETA 6s"
    done = progress.line("extract", {"files": 2}, {"files": 2}, 7, "records", 1.0)
    assert "(100%)" in done and "ETA" not in done
    assert progress._duration(3725) == "1h02m" and progress._duration(125) == "2m05s"


def test_ticks_from_other_processes_reach_the_reporter(monkeypatch, capsys):
    monkeypatch.setenv(progress.EVERY_ENV, "0.1")
    monkeypatch.delenv(progress.ENV, raising=False)
    with progress.Reporter("extract", {"files": 3}, "FnApiRunner") as reporter:
        folder = os.environ[progress.ENV]
        code = "from pipeline import progress; progress.tick('files', 1000); progress.tick('files', 500)"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # inherits the folder, as Beam's workers do
        progress.tick("files", 1)
        assert reporter.read() == ({"files": 3}, 1501)
        time.sleep(0.5)
    assert progress.ENV not in os.environ and not os.path.exists(folder)
    assert "[extract] files 3/3 (100%)  1,501 records" in capsys.readouterr().err


def test_remote_runners_and_a_zero_interval_print_nothing(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    with progress.Reporter("extract", {"files": 1}, "DataflowRunner"):
        assert progress.ENV not in os.environ
    monkeypatch.setenv(progress.EVERY_ENV, "0")
    with progress.Reporter("extract", {"files": 1}, "FnApiRunner"):
        assert progress.ENV not in os.environ
    progress.tick("files", 5)  # no folder: nothing happens


def test_a_local_beam_job_prints_progress_while_it_runs(tmp_path):
    for j in range(6):
        rows = "".join(f"http://h{i % 7}.example/{j}-{i}.jpg,a photo of a red cat number {i}\n" for i in range(20_000))
        (tmp_path / f"part{j}.csv").write_text("url,caption\n" + rows)
    env = {**os.environ, progress.EVERY_ENV: "0.2", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "extract", "--input", str(tmp_path / "*.csv"),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("[extract] files ")]
    assert lines and lines[-1].startswith("[extract] files 6/6 (100%)  120,000 records"), proc.stderr
