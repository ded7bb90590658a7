"""Beam option defaults: the local runner gets its worker settings whether it is implied or
named, and any other runner's options pass through untouched."""

from __future__ import annotations

import os

from pipeline.options import local_defaults


def test_the_local_runner_gets_its_workers_implied_or_named():
    n = os.cpu_count() or 1
    implied = local_defaults(["--labels=a=b"])
    assert implied == ["--labels=a=b", "--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                       f"--direct_num_workers={n}"]
    named = local_defaults(["--runner=FnApiRunner", "--labels=a=b"])
    assert named == ["--runner=FnApiRunner", "--labels=a=b", "--direct_running_mode=multi_processing",
                     f"--direct_num_workers={n}"]
    assert local_defaults(["--runner", "FnApiRunner", "--direct_num_workers=2"], "in_memory") == [
        "--runner", "FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=in_memory"]


def test_other_runners_options_pass_through_unchanged():
    argv = ["--runner=DataflowRunner", "--project=p", "--region=r", "--labels=x=y"]
    assert local_defaults(argv) == argv
