"""The import rules of ARCHITECTURE.md: the core of ``service/`` never imports ``handlers/`` or
``dashboard/``; only the composition root (process, app factory, serve) does."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPOSITION_ROOT = {"service/app.py", "service/process.py", "service/server.py"}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_the_core_does_not_import_the_faces():
    offenders = []
    for path in sorted((ROOT / "service").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in COMPOSITION_ROOT:
            continue
        for module in imported_modules(path):
            if module.split(".")[0] in ("handlers", "dashboard"):
                offenders.append(f"{name} imports {module}")
    assert offenders == []


def test_the_faces_do_not_import_each_other():
    offenders = []
    for face, other in (("handlers", "dashboard"), ("dashboard", "handlers")):
        for path in sorted((ROOT / face).rglob("*.py")):
            for module in imported_modules(path):
                if module.split(".")[0] == other and module != "handlers.base":
                    offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []
