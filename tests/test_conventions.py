"""Conventions the whole codebase keeps (checked on the source, so they cannot drift)."""

from __future__ import annotations

import ast
from pathlib import Path

from schemas import columns

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# not-a-column"
CHECKED = ("pipeline", "trainer", "dags", "benchmarks", "tests")


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py") if ".venv" not in p.parts)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_column_name_is_spelled_outside_schemas():
    names = columns.all_names()
    offenders = []
    for path in _sources(*CHECKED):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                if MARKER not in lines[node.lineno - 1]:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: '{node.value}'")
    assert not offenders, "use schemas.columns instead of:\n" + "\n".join(offenders)


def test_the_check_sees_a_literal_column_name(tmp_path):
    # The rule above must be able to fail: a planted literal is found by the same walk.
    planted = ast.parse(f"row[{columns.URL!r}] = 1")
    found = [n.value for n in ast.walk(planted) if isinstance(n, ast.Constant) and n.value in columns.all_names()]
    assert found == [columns.URL]


def test_pipeline_and_trainer_do_not_import_each_other():
    for path in _sources("pipeline"):
        assert "trainer" not in _imports(path), path
    for path in _sources("trainer"):
        assert "pipeline" not in _imports(path), path


def test_schemas_imports_only_pyarrow_and_the_standard_library():
    import sys
    allowed = {"pyarrow", "schemas", "__future__"} | set(sys.stdlib_module_names)
    for path in _sources("schemas"):
        assert _imports(path) <= allowed, (path, _imports(path) - allowed)
