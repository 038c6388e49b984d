"""The one import rule: ``pro_app.domain`` is pure Python (stdlib, numpy and itself only)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "pro_app" / "domain"
ALLOWED_THIRD_PARTY = {"numpy"}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: stays inside the package
                names.append("pro_app.domain")
            elif node.module:
                names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda p: p.name)
def test_domain_module_imports_only_stdlib_numpy_and_domain(path: Path) -> None:
    for name in imported_modules(path):
        top = name.split(".")[0]
        allowed = (
            top in sys.stdlib_module_names
            or top in ALLOWED_THIRD_PARTY
            or name == "pro_app.domain"
            or name.startswith("pro_app.domain.")
        )
        assert allowed, f"{path.name} imports {name}"
