"""The `openwit` command: one console entry point, one subcommand per job.

Subcommands are registered as the ``openwit.commands`` entry points (pyproject.toml), so
the pipeline and the trainer each register their own without importing each other. A
subcommand module exposes ``SUMMARY`` (one line) and ``main(argv) -> int``.

Errors a user can cause (``schemas.UserError``, a bad option, a path that cannot be read
or written) end in one line on stderr and exit status 2; bugs keep their traceback.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version
from types import ModuleType

from schemas import UserError
from schemas.cli import Parser, catch_interrupt

__all__ = ["PROG", "Parser", "main"]

PROG = "openwit"
# Packages of the optional extras, by the import name a missing one fails with
EXTRAS = {"torch": "train", "torchvision": "train", "open_clip": "train", "open_clip_train": "train",
          "deepspeed": "train", "sklearn": "train", "tensorboard": "train", "s3fs": "aws", "gcsfs": "gcp",
          "pyspark": "spark", "airflow": "airflow"}


def missing_extra(e: ModuleNotFoundError) -> str | None:
    """The one line for a package of an extra that is not installed (None for another)."""
    top = (e.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return f"needs the '{extra}' extra ({top} is not installed): pip install 'openwit[{extra}]'"


def _commands() -> dict[str, object]:
    return {ep.name: ep for ep in sorted(entry_points(group="openwit.commands"), key=lambda e: e.name)}


def _version() -> str:
    try:
        return version("openwit")
    except PackageNotFoundError:
        return "unknown"


def _summary(ep) -> str:
    """A command's SUMMARY, read from its module's source where it is a plain string, so
    that `openwit --help` imports none of the commands (Beam, torch: seconds each)."""
    spec = importlib.util.find_spec(ep.value)
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        with open(spec.origin, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), spec.origin)
        for node in tree.body:
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SUMMARY" for t in node.targets)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                return node.value.value
    return ep.load().SUMMARY


def _help(commands: dict[str, object]) -> str:
    lines = [
        f"usage: {PROG} COMMAND [options]",
        "",
        "Build CLIP-style (image, text) training sets from web crawls, then train on them.",
        "",
        "commands:",
    ]
    for name, ep in commands.items():
        lines.append(f"  {name:<10} {_summary(ep)}")
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
    catch_interrupt()
    try:
        module: ModuleType = commands[name].load()  # type: ignore[attr-defined]
        return int(module.main(argv[1:]) or 0)
    except UserError as e:
        print(f"{PROG} {name}: error: {e}", file=sys.stderr)
    except ModuleNotFoundError as e:
        line = missing_extra(e)
        if line is None:
            raise
        print(f"{PROG} {name}: error: {line}", file=sys.stderr)
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
