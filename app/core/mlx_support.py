"""Which model architectures the installed mlx-lm can load, found without importing it.

Importing mlx_lm imports MLX (and, on a Mac, initializes Metal), which the
registry must not do just to list models. mlx-lm loads
`mlx_lm.models.<model_type>` after applying its MODEL_REMAPPING tables, so
the installed `models/` folder and those tables (read as text) tell the
same story.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Modules in mlx_lm/models that are helpers, not architectures.
_NOT_MODELS = frozenset(
    {"__init__", "activations", "base", "bitlinear_layers", "cache", "gated_delta", "mla",
     "pipeline", "rope_utils", "ssm", "switch_layers"}
)  # fmt: skip


@dataclass(frozen=True)
class MlxLmArchitectures:
    """The model types an mlx-lm install provides, and its renaming tables."""

    version: str | None
    model_types: frozenset[str]
    remapping: dict[str, str] = field(default_factory=dict)
    architecture_remapping: dict[tuple[str, str], str] = field(default_factory=dict)

    def resolve(self, config: dict[str, Any]) -> str | None:
        """The mlx_lm.models module name mlx-lm would use for `config`."""
        model_type = config.get("model_type")
        if not isinstance(model_type, str):
            return None
        architectures = config.get("architectures") or ()
        if isinstance(architectures, str):
            architectures = (architectures,)
        for architecture in architectures:
            remapped = self.architecture_remapping.get((model_type, architecture))
            if remapped is not None:
                return remapped
        return self.remapping.get(model_type, model_type)


def _package_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("mlx_lm")  # top level: does not run __init__
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def _literal_tables(utils_py: Path) -> dict[str, Any]:
    """MODEL_REMAPPING and MODEL_ARCHITECTURE_REMAPPING from utils.py, if literal."""
    wanted = {"MODEL_REMAPPING", "MODEL_ARCHITECTURE_REMAPPING"}
    tables: dict[str, Any] = {}
    try:
        tree = ast.parse(utils_py.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError) as exc:
        log.warning("Cannot read mlx-lm's remapping tables: %s", exc)
        return tables
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in wanted:
                try:
                    tables[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    log.warning("mlx-lm's %s is not a literal; ignoring it", target.id)
    return tables


def _version() -> str | None:
    try:
        return importlib.metadata.version("mlx-lm")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def installed_architectures() -> MlxLmArchitectures | None:
    """What the installed mlx-lm supports; None if mlx-lm is not installed.

    Cached: the installed package does not change while the app runs.
    """
    package = _package_dir()
    if package is None or not (package / "models").is_dir():
        return None
    types = frozenset(
        p.stem for p in (package / "models").glob("*.py") if p.stem not in _NOT_MODELS
    )
    tables = _literal_tables(package / "utils.py")
    return MlxLmArchitectures(
        version=_version(),
        model_types=types,
        remapping=dict(tables.get("MODEL_REMAPPING", {})),
        architecture_remapping=dict(tables.get("MODEL_ARCHITECTURE_REMAPPING", {})),
    )


def mlx_lm_problem(
    config: dict[str, Any], architectures: MlxLmArchitectures | None = None
) -> str | None:
    """Why mlx-lm cannot load a model with this config.json, or None if it can."""
    found = architectures or installed_architectures()
    if found is None:
        return "mlx-lm is not installed"
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        return "config.json does not name a model_type, so mlx-lm cannot tell what it is"
    module = found.resolve(config)
    if module in found.model_types:
        return None
    version = f" {found.version}" if found.version else ""
    return f"mlx-lm{version} does not support the '{model_type}' architecture"
