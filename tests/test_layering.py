"""The package layering DEVELOPERS.md fixes: only app/engine imports MLX, and so on."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# package -> top-level modules it must never import
FORBIDDEN = {
    "core": {"mlx", "mlx_lm", "PySide6", "qasync", "aiohttp", "app.engine", "app.server", "app.ui"},
    "server": {"mlx", "mlx_lm", "PySide6", "qasync", "app.ui"},
    "hub": {"mlx", "mlx_lm", "PySide6", "qasync"},
    "ui": {"mlx", "mlx_lm"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(package: str, banned: set[str]) -> list[str]:
    found = []
    for path in sorted((APP / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == b or name.startswith(b + ".") for b in banned):
                if package == "server" and name == "app.engine.types":
                    continue
                found.append(f"{path.relative_to(APP.parent)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layers(package):
    banned = set(FORBIDDEN[package])
    if package in ("server", "ui", "hub"):
        banned |= {"app.engine"}  # only the MLX-free types module is allowed
    assert _violations(package, banned) == []


def test_engine_types_import_no_mlx():
    assert not {n for n in _imports(APP / "engine" / "types.py") if n.startswith("mlx")}


def test_server_runs_without_loading_mlx():
    code = "import sys, app.server.app, app.server.runner; print('mlx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
