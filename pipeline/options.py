"""Shared Beam option handling for openwit's jobs.

Each job declares its flags once (``add_args``) and parses them with openwit's parser (a
bad value is a one-line error, ``--help`` lists the job's flags); every other flag goes to
Beam's PipelineOptions unchanged if a Beam option takes it, so any runner's options
(Dataflow, Flink, Spark, ``--labels`` appended by Airflow's operator) pass through. What no
option takes (``--caption_col`` for ``--caption-col``) is refused in one line, where Beam
would only log that it discards it. The jobs' flags are not
registered as PipelineOptions subclasses: Beam merges every subclass into one parser, and
two jobs that both take --input could then not run in one process.

Without ``--runner``, jobs run on the local FnApiRunner with one worker process per core:
the plain DirectRunner would first try to download the Prism runner binary.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from typing import Callable, Iterator

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import progress
from pipeline.cli import Parser
from schemas.cli import interrupted
from schemas import UserError

LOCAL_RUNNER = "FnApiRunner"


def local_defaults(argv: list[str], mode: str = "multi_processing") -> list[str]:
    """argv plus the local runner defaults for whatever the user did not set.

    ``mode`` is the local running mode: ``multi_processing`` (one worker process per core)
    suits CPU-bound jobs; ``in_memory`` (one process) suits jobs that mostly move bytes,
    which the multi-process mode would copy through gRPC between processes."""
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    runner = LOCAL_RUNNER
    for i, a in enumerate(argv):
        if a.startswith("--runner="):
            runner = a.split("=", 1)[1]
        elif a == "--runner" and i + 1 < len(argv):
            runner = argv[i + 1]
    extra = []
    if "--runner" not in flags:
        extra.append(f"--runner={LOCAL_RUNNER}")
    if runner == LOCAL_RUNNER:  # implied or asked for by name (a scheduler's default)
        loopback_skips_proxy()
        if "--direct_running_mode" not in flags:
            extra.append(f"--direct_running_mode={mode}")
        if "--direct_num_workers" not in flags and mode == "multi_processing":
            extra.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return [*argv, *extra]


LOOPBACK = ("localhost", "127.0.0.1", "::1")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")


def loopback_skips_proxy() -> None:
    """With a proxy in the environment, add the loopback addresses to no_proxy (kept, not
    replaced): the local runner's worker processes talk gRPC to the job on localhost, and
    gRPC would send that through the proxy, so every worker failed to connect."""
    if not any(os.environ.get(v) or os.environ.get(v.upper()) for v in PROXY_VARS):
        return
    for var in ("no_proxy", "NO_PROXY"):
        have = [h.strip() for h in os.environ.get(var, "").split(",") if h.strip()]
        os.environ[var] = ",".join(have + [h for h in LOOPBACK if h not in have])


def parse(prog: str, description: str, add_args: Callable[[argparse.ArgumentParser], None],
          argv: list[str], epilog: str | None = None,
          local_mode: str = "multi_processing") -> tuple[argparse.Namespace, PipelineOptions]:
    """Validate openwit's flags (one-line errors) and build the PipelineOptions for Beam."""
    parser = Parser(prog=prog, description=description, epilog=(epilog or "") + (
        "\n\nAny Apache Beam pipeline option is accepted too (--runner, --project, "
        "--temp_location, --direct_num_workers, ...). Default: the local FnApiRunner with "
        + ("one worker process per core." if local_mode == "multi_processing" else
           f"--direct_running_mode={local_mode} (one process).")))
    add_args(parser)
    args, rest = parser.parse_known_args(argv)
    unknown = unknown_beam_args(rest)
    if unknown:
        flag = unknown[0].startswith("-")
        what, name = ("option", unknown[0].split("=", 1)[0]) if flag else ("argument", unknown[0])
        raise UserError(f"unknown {what} {name!r}: neither an option of {prog} nor an Apache Beam pipeline "
                        f"option (see `{prog} --help`)")
    return args, PipelineOptions(local_defaults(rest, local_mode))


# Runner modules that register their own pipeline options (Beam imports them only when the
# runner starts): a --flink_master must be known before then.
_RUNNER_OPTION_MODULES = ("apache_beam.runners.portability.flink_runner",
                          "apache_beam.runners.portability.spark_runner",
                          "apache_beam.runners.portability.prism_runner")


def unknown_beam_args(argv: list[str]) -> list[str]:
    """The arguments in ``argv`` that no registered Beam pipeline option takes (Beam itself
    would only log that it discards them). A bad value for a Beam option is one line too."""
    import importlib

    from apache_beam.options.pipeline_options import _BeamArgumentParser

    for name in _RUNNER_OPTION_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)

    class _Parser(_BeamArgumentParser):
        def error(self, message: str):  # type: ignore[override]
            raise UserError(f"Beam option: {message}")

    parser = _Parser(allow_abbrev=False, add_help=False)
    classes: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - how Beam itself builds its parser
    _, unknown = parser.parse_known_args(argv)
    return unknown


WORKER_CRASH = b"CRITICAL:__main__:Python sdk harness failed"
# the job service's one-line copy of a worker's crash report (its traceback escaped inside)
RELAYED_CRASH = b"CRITICAL:apache_beam.runners.portability.local_job_service:Worker:"


def _traceback_line(line: bytes) -> bool:
    """A line inside a Python traceback (not its last line, which names the exception)."""
    return line[:1] in (b" ", b"\t") or not line.strip() or line.startswith(
        (b"Traceback (most recent call last)", b"During handling of the above exception",
         b"The above exception was the direct cause"))


@contextlib.contextmanager
def quiet_local_workers(beam_options: PipelineOptions) -> Iterator[None]:
    """Drop the INFO lines that local Beam worker processes print while starting and stopping.

    The FnApiRunner starts its workers with a fixed command that logs at INFO before it has
    read any option, on the stderr it inherits. On the local runner, stderr is routed through
    a pipe for the duration of the job and every line but those is passed on unchanged.
    """
    runner = beam_options.get_all_options().get("runner") or ""
    if runner != LOCAL_RUNNER or not hasattr(os, "pipe"):
        yield
        return
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service")
    relay_level = relay.level
    relay.setLevel(logging.ERROR)  # it re-logs the workers' start-up warnings
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        held: list[bytes] | None = None  # a worker's crash report, until its last line tells why
        dropped = False
        with os.fdopen(read_end, "rb") as src:
            for line in src:
                if interrupted.is_set():
                    continue  # workers torn down by Ctrl-C: the command says it in one line
                if held is not None:
                    held.append(line)
                    if _traceback_line(line):
                        continue
                    # A worker that got the same Ctrl-C can report it before the launcher has
                    # noticed (itself, or relayed by the job service): its KeyboardInterrupt
                    # is dropped, any other crash passed on.
                    dropped = b"KeyboardInterrupt" in line
                    if not dropped:
                        os.write(saved, b"".join(held))
                    held = None
                    continue
                if line.startswith(WORKER_CRASH) or (dropped and _traceback_line(line)):
                    held = [line]
                    continue
                if line.startswith(RELAYED_CRASH) and b"KeyboardInterrupt" in line:
                    dropped = True  # the same Ctrl-C, relayed by the job service on one line
                    continue
                dropped = False
                if not line.startswith((b"INFO:", b"WARNING:root:apitools", b"WARNING:__main__:No semi_persistent")):
                    os.write(saved, line)
            if held and not interrupted.is_set():
                os.write(saved, b"".join(held))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end once the workers are gone
        thread.join(timeout=5)
        os.close(saved)
        relay.setLevel(relay_level)


def progress_of(beam_options: PipelineOptions, namespace: str, totals: dict[str, int],
                unit: str = "records") -> progress.Reporter:
    """Progress lines while a job runs on this machine (``pipeline.progress``)."""
    return progress.Reporter(namespace.rsplit(".", 1)[-1], totals, beam_options.get_all_options().get("runner"), unit)


def run_counted(pipeline, beam_options: PipelineOptions, namespace: str, totals: dict[str, int] | None = None,
                unit: str = "records") -> dict[str, int]:
    """Run ``pipeline`` to the end (local worker chatter filtered; progress lines when
    ``totals`` says what units of work it has) and return its counters in ``namespace`` by
    name (committed values where the runner has them)."""
    from apache_beam.metrics.metric import MetricsFilter

    with quiet_local_workers(beam_options), progress_of(beam_options, namespace, totals or {}, unit):
        result = pipeline.run()
        result.wait_until_finish()
    counters: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(value or 0)
    return counters


def job_main(run: Callable[[list[str]], dict], summary: Callable[[dict], str], stats_file: str,
             argv: list[str]) -> int:
    """A job's command: run it, print its summary and where its ledger is; exit 1 when the
    ledger does not add up."""
    from schemas import fileio

    stats = run(argv)
    print(summary(stats))
    print(f"  {stats['seconds']:.1f}s; ledger in {fileio.join(stats['output'], stats_file)}")
    return 0 if stats["ledger_ok"] else 1


def ledger_lines(steps: list[dict], step_width: int, reason_width: int) -> list[str]:
    """The summary lines of a job's ledger: per step in and kept, then its rejects by reason."""
    lines = []
    for s in steps:
        lines.append(f"  {s['step']:<{step_width}} in {s['in']:>10,}  kept {s['kept']:>10,}")
        for reason, n in s["rejected"].items():
            lines.append(f"  {'':<{step_width}} {'':>13}  {reason:<{reason_width}} {n:>10,}")
    return lines
