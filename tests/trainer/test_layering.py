"""The trainer's modules import each other in one direction only (no import circle, even
through imports inside functions), and only the command modules parse arguments."""

from __future__ import annotations

import ast
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[2] / "trainer"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainer"):
            parts = node.module.split(".")
            if len(parts) > 1:
                out.add(parts[1])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("trainer."))
    return out


def test_no_import_circle_and_parsing_only_in_commands():
    graph = {p.stem: _imports(p) - {p.stem} for p in TRAINER.glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, " -> ".join([*trail, node])
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*trail, node])
        state[node] = 2

    for module in sorted(graph):
        visit(module, [])
    parsing = sorted(p.stem for p in TRAINER.glob("*.py") if {"argparse", "schemas.cli"} & _names(p))
    assert parsing == ["cli", "eval_cli", "export"], parsing


def _names(path: Path) -> set[str]:
    """The modules ``path`` imports (``import m`` and ``from m import ...``)."""
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom) and n.module:
            out.add(n.module)
    return out
