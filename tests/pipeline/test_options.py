"""Beam option defaults: the local runner gets its worker settings whether it is implied or
named, any other runner's options pass through untouched, and what no option takes is
refused in one line."""

from __future__ import annotations

import os

import pytest

from pipeline import extract
from pipeline.options import local_defaults, parse
from schemas import UserError


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


def _parse(*extra: str):
    return parse("openwit extract", "extract", extract.add_args, ["--input", "in", "--output", "out", *extra])


def test_every_runners_own_options_pass_and_a_typo_is_refused_by_name():
    """Beam only logs that it discards an option it does not know: a typo of one of
    openwit's flags would run the job without it. Every registered Beam option still
    passes, a runner's own included (Airflow appends --labels)."""
    for extra in (["--labels=a=b"], ["--runner=FlinkRunner", "--flink_master=localhost:8081", "--parallelism", "4"],
                  ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
                  ["--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=gs://b/t",
                   "--experiments=use_runner_v2", "--save_main_session"],
                  ["--runner=SparkRunner", "--spark_master_url=spark://h:7077"]):
        args, beam_options = _parse(*extra)
        assert args.input == ["in"] and beam_options.get_all_options()["labels"] in (None, ["a=b"]), extra
    for extra, named in ((["--caption_col", "text"], "'--caption_col'"), (["--url-colum=u"], "'--url-colum'"),  # not-a-column
                         (["stray.csv"], "argument 'stray.csv'"), (["--direct_num_workers=two"], "'two'")):
        with pytest.raises(UserError, match=named):
            _parse(*extra)


def test_a_workers_ctrl_c_report_is_dropped_and_any_other_crash_passed_on():
    """Workers get the terminal's Ctrl-C with the launcher and may report it first: that
    KeyboardInterrupt traceback is not shown; a worker that crashes for another reason is."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent('''
        import os, sys
        from apache_beam.options.pipeline_options import PipelineOptions
        from pipeline import options
        lines = [b"INFO:starting a worker\\n",
                 b"CRITICAL:__main__:Python sdk harness failed: \\n", b"Traceback (most recent call last):\\n",
                 b'  File "sdk_worker.py", line 265, in run\\n', b"    for work_request in stub:\\n",
                 b"KeyboardInterrupt\\n", b"\\n", b"During handling of the above exception, another exception occurred:\\n",
                 b"\\n", b"Traceback (most recent call last):\\n", b"  File y\\n", b"KeyboardInterrupt\\n",
                 b"a line of the job\\n",
                 b'CRITICAL:apache_beam.runners.portability.local_job_service:Worker: severity: CRITICAL message: '
                 b'"Python sdk harness failed: \\\\nTraceback (most recent call last):\\\\n  File x\\\\nKeyboardInterrupt" trace: "KeyboardInterrupt\\\\n"\\n',
                 b"another line of the job\\n",
                 b'CRITICAL:apache_beam.runners.portability.local_job_service:Worker: severity: CRITICAL message: '
                 b'"Python sdk harness failed: \\\\nValueError: relayed"\\n',
                 b"CRITICAL:__main__:Python sdk harness failed: \\n", b"Traceback (most recent call last):\\n",
                 b"  File z\\n", b"ValueError: boom\\n"]
        with options.quiet_local_workers(PipelineOptions(["--runner=" + options.LOCAL_RUNNER])):
            for line in lines:
                os.write(2, line)
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    shown = [x for x in proc.stderr.decode().splitlines() if not x.startswith("WARNING:root:apitools")]  # on import
    assert shown == [
        "a line of the job", "another line of the job",
        'CRITICAL:apache_beam.runners.portability.local_job_service:Worker: severity: CRITICAL message: '
        '"Python sdk harness failed: \\nValueError: relayed"',
        "CRITICAL:__main__:Python sdk harness failed: ", "Traceback (most recent call last):",
        "  File z", "ValueError: boom"]
