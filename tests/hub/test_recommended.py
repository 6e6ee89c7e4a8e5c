"""The curated recommended-models list in resources/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub.utils import validate_repo_id

from app.hub.recommended import (
    RECOMMENDED_FILE,
    TIERS_GB,
    by_tier,
    load_recommended,
    recommended_for,
    resource_path,
    tier_for,
)

GiB = 1024**3


@pytest.fixture(scope="module")
def models():
    return load_recommended()


def test_the_file_is_found_from_the_package(models):
    path = resource_path(RECOMMENDED_FILE)
    assert path == Path(__file__).resolve().parents[2] / "resources" / RECOMMENDED_FILE
    assert len(models) >= 12


def test_repo_ids_are_valid_hub_ids_and_unique(models):
    ids = [m.repo_id for m in models]
    assert len(ids) == len(set(ids))
    for repo_id in ids:
        validate_repo_id(repo_id)  # raises on bad characters, "--", "..", length > 96
        org, name = repo_id.split("/")
        assert org == "mlx-community" and name


def test_expected_models_are_there(models):
    ids = {m.repo_id for m in models}
    for expected in (
        "mlx-community/Qwen3-0.6B-4bit",
        "mlx-community/Qwen3-4B-4bit",
        "mlx-community/Qwen3-8B-4bit",
        "mlx-community/Llama-3.2-1B-Instruct-4bit",
        "mlx-community/Llama-3.2-3B-Instruct-4bit",
        "mlx-community/gemma-3-4b-it-qat-4bit",
        "mlx-community/gpt-oss-20b-MXFP4-Q8",
        "mlx-community/Mistral-Small-3.2-24B-Instruct-2506-4bit",
    ):
        assert expected in ids


def test_every_tier_has_models_that_fit_it(models):
    tiers = by_tier(models)
    assert list(tiers) == list(TIERS_GB)
    for tier, entries in tiers.items():
        assert entries, f"no models for {tier} GB"
        for m in entries:
            assert m.description and m.name and m.params
            # Weights well under the memory a Mac of that size gives the GPU (~75%).
            assert m.size_gb < tier * 0.75 * 0.85, m.repo_id


def test_recommended_for_a_machine(models):
    for_16 = recommended_for(16 * GiB, models)
    assert {m.tier_gb for m in for_16} == {8, 16}
    assert for_16[0].tier_gb == 16  # its own tier first
    assert {m.tier_gb for m in recommended_for(128 * GiB, models)} == set(TIERS_GB)
    assert {m.tier_gb for m in recommended_for(4 * GiB, models)} == {8}
    assert tier_for(int(15.8 * GiB)) == 16 and tier_for(22 * GiB) == 16 and tier_for(96 * GiB) == 64


def test_a_bad_tier_is_refused(tmp_path):
    bad = {
        "models": [{"repo_id": "a/b", "name": "x", "tier_gb": 12, "size_gb": 1, "description": "d"}]
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="tier_gb 12"):
        load_recommended(path)


def test_missing_resource_says_where_it_looked():
    with pytest.raises(FileNotFoundError, match="looked in"):
        resource_path("no-such-file.json")
