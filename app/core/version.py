"""The installed Minerva version (from package metadata; a source checkout says so)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def app_version() -> str:
    try:
        return version("minerva")
    except PackageNotFoundError:
        return "0.0.0+source"
