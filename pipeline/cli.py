"""The `openwit` command: one console entry point, one subcommand per job.

Subcommands are registered as the ``openwit.commands`` entry points (pyproject.toml), so
the pipeline and the trainer each register their own without importing each other. A
subcommand module exposes ``SUMMARY`` (one line) and ``main(argv) -> int``.

Errors a user can cause (``schemas.UserError``, a bad option, a path that cannot be read
or written) end in one line on stderr and exit status 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version
from types import ModuleType

from schemas import UserError

PROG = "openwit"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as a one-line UserError instead of usage + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _commands() -> dict[str, object]:
    return {ep.name: ep for ep in sorted(entry_points(group="openwit.commands"), key=lambda e: e.name)}


def _version() -> str:
    try:
        return version("openwit")
    except PackageNotFoundError:
        return "unknown"


def _help(commands: dict[str, object]) -> str:
    lines = [
        f"usage: {PROG} COMMAND [options]",
        "",
        "Build CLIP-style (image, text) training sets from web crawls, then train on them.",
        "",
        "commands:",
    ]
    for name, ep in commands.items():
        module: ModuleType = ep.load()  # type: ignore[attr-defined]
        lines.append(f"  {name:<10} {module.SUMMARY}")
    lines += ["", f"Run `{PROG} COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help(commands))
        return 0
    if argv[0] == "--version":
        print(f"{PROG} {_version()}")
        return 0
    name = argv[0]
    if name not in commands:
        print(f"{PROG}: error: unknown command '{name}' (commands: {', '.join(commands)})", file=sys.stderr)
        return 2
    module: ModuleType = commands[name].load()  # type: ignore[attr-defined]
    try:
        return int(module.main(argv[1:]) or 0)
    except UserError as e:
        print(f"{PROG} {name}: error: {e}", file=sys.stderr)
    except OSError as e:
        if e.filename is None and not isinstance(e, (ConnectionError, TimeoutError)):
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"{PROG} {name}: error: {e.strerror or e}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
