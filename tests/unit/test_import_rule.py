"""Imports flow one way: web -> services -> (db, domain); db -> domain; exports -> domain.

``pro_app/domain`` is plain Python: it must not import a web framework, an ORM, a form
library or any of our own packages outside ``domain``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pro_app"
FORBIDDEN_IN_DOMAIN = ("flask", "flask_babel", "flask_wtf", "sqlalchemy", "wtforms", "werkzeug", "alembic")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("domain"), ids=lambda p: p.name)
def test_domain_is_framework_free(path: Path) -> None:
    for name in _imports(path):
        root = name.split(".")[0]
        assert root not in FORBIDDEN_IN_DOMAIN, f"{path.name} imports {name}"
        if root == "pro_app":
            assert name.startswith("pro_app.domain"), f"{path.name} imports {name}"


ALLOWED = {
    "db": ("pro_app.db", "pro_app.domain"),
    # Services may hand records to the export writers; writers never call back into services.
    "services": ("pro_app.services", "pro_app.db", "pro_app.domain", "pro_app.exports"),
    "exports": ("pro_app.exports", "pro_app.domain"),
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downwards(layer: str) -> None:
    for path in _modules(layer):
        for name in _imports(path):
            if name.split(".")[0] in ("pro_app",) and name != "pro_app":
                assert name.startswith(ALLOWED[layer]), f"{path.relative_to(PACKAGE)} imports {name}"
            assert name.split(".")[0] not in ("flask", "flask_babel", "flask_wtf", "wtforms"), (
                f"{path.relative_to(PACKAGE)} imports {name}"
            )
