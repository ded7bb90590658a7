"""The argument parser every `openwit` command uses.

A bad option is one line for the user (an exception the `openwit` command prints, exit 2),
not argparse's usage block and exit; ``--help`` shows every option's default, whether or
not its help text spells it out.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from schemas.errors import UserError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; an option's default appended to its help unless the help
    already speaks of its default or there is nothing to show (no value, a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or default is None or default is False
                or default is argparse.SUPPRESS or default == []):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse that raises ``error_type`` (one line, naming ``--help``) for a bad option."""

    error_type: type[Exception] = UserError

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise self.error_type(f"{message} (see `{self.prog} --help`)")


# Set once the user presses Ctrl-C: whatever the job's threads and worker processes print
# while they are torn down is then dropped, so the command's last word is one line.
interrupted = threading.Event()


def _on_interrupt(signum, frame) -> None:
    interrupted.set()
    logging.disable(logging.CRITICAL)
    threading.excepthook = lambda args: None  # worker threads dying of the interrupt
    raise KeyboardInterrupt


def catch_interrupt() -> None:
    """Ctrl-C raises KeyboardInterrupt in the main thread, as by default, and silences the
    teardown that follows (see ``interrupted``)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_interrupt)
