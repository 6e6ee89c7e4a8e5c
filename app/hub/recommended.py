"""The curated list of models to suggest, per memory size, from resources/.

The list is data (`recommended_models.json`), so it can be updated without
touching code. It is looked up in the places it can be in a source checkout,
an installed wheel and a macOS app bundle (see `resource_path`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECOMMENDED_FILE = "recommended_models.json"
TIERS_GB = (8, 16, 24, 32, 64)  # the last one means "64 GB or more"


@dataclass(frozen=True)
class RecommendedModel:
    repo_id: str
    name: str
    tier_gb: int  # the smallest memory size (GB of RAM) it is suggested for
    size_gb: float  # approximate download size
    params: str
    description: str


def _candidates(name: str) -> list[Path]:
    """Where a resource file can be, most specific first.

    - inside the `app` package (`app/resources/`), if a build copies it there;
    - the repository's top-level `resources/` (source checkout, `uv run`);
    - a py2app bundle's Contents/Resources (`RESOURCEPATH`, set by py2app's
      launcher; or next to the executable's folder).
    """
    found: list[Path] = []
    try:
        packaged = resources.files("app") / "resources" / name
        found.append(Path(str(packaged)))
    except (ModuleNotFoundError, TypeError):
        pass
    found.append(Path(__file__).resolve().parents[2] / "resources" / name)
    if bundle := os.environ.get("RESOURCEPATH"):
        found.append(Path(bundle) / name)
    found.append(Path(sys.executable).resolve().parent.parent / "Resources" / name)
    return found


def resource_path(name: str) -> Path:
    """The first existing copy of resource file `name`; FileNotFoundError naming where we looked."""
    candidates = _candidates(name)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name} not found; looked in: " + ", ".join(map(str, candidates)))


def _parse(entry: dict[str, Any]) -> RecommendedModel:
    tier = int(entry["tier_gb"])
    if tier not in TIERS_GB:
        raise ValueError(f"{entry.get('repo_id')}: tier_gb {tier} is not one of {TIERS_GB}")
    return RecommendedModel(
        repo_id=str(entry["repo_id"]),
        name=str(entry["name"]),
        tier_gb=tier,
        size_gb=float(entry["size_gb"]),
        params=str(entry.get("params", "")),
        description=str(entry["description"]),
    )


def load_recommended(path: Path | None = None) -> list[RecommendedModel]:
    """Every curated model, in the file's order (smallest tiers first)."""
    source = path or resource_path(RECOMMENDED_FILE)
    data = json.loads(Path(source).read_text(encoding="utf-8"))
    return [_parse(entry) for entry in data["models"]]


def tier_for(memory_bytes: int) -> int:
    """The largest tier a machine with `memory_bytes` of RAM reaches (8 at least)."""
    gb = memory_bytes / 1024**3
    reached = [t for t in TIERS_GB if gb >= t * 0.95]  # "16 GB" Macs report a bit less
    return reached[-1] if reached else TIERS_GB[0]


def by_tier(models: list[RecommendedModel]) -> dict[int, list[RecommendedModel]]:
    """Models grouped per memory tier, every tier present."""
    return {tier: [m for m in models if m.tier_gb == tier] for tier in TIERS_GB}


def recommended_for(
    memory_bytes: int, models: list[RecommendedModel] | None = None
) -> list[RecommendedModel]:
    """Models for a machine with `memory_bytes` of RAM: its own tier first, then smaller ones."""
    models = load_recommended() if models is None else models
    tier = tier_for(memory_bytes)
    fitting = [m for m in models if m.tier_gb <= tier]
    return sorted(fitting, key=lambda m: -m.tier_gb)
