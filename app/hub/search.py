"""Find models on the Hugging Face Hub and read what one needs: files, size, quantization.

Blocking calls (the GUI runs them in a thread). Results are plain dataclasses;
`RepoDetails.weights_bytes` and `.config` are what app/hub/fit.py needs for its estimate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from huggingface_hub import HfApi, constants, get_session, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from app.hub.download_http import resolve_endpoint
from app.hub.download_paths import check_repo_id
from app.hub.download_plan import entries_from_info, is_gguf, select_files
from app.hub.errors import HubError, NetworkError, RepoFormatError, translate
from app.hub.search_meta import (
    Quantization,
    context_length,
    gguf_quant_label,
    params_from_config,
    params_from_safetensors,
    parse_quantization,
)

log = logging.getLogger(__name__)

ModelFormat = Literal["mlx", "gguf"]
SortKey = Literal["downloads", "likes", "recent", "trending"]
MLX_COMMUNITY = "mlx-community"
_SORTS = {"downloads": "downloads", "likes": "likes", "recent": "last_modified",
          "lastModified": "last_modified", "last_modified": "last_modified",
          "trending": "trending_score"}
_EXPAND = ["author", "downloads", "likes", "lastModified", "tags", "gated", "pipeline_tag",
           "library_name", "private"]


@dataclass(frozen=True)
class ModelSummary:
    repo_id: str
    author: str | None
    downloads: int
    likes: int
    last_modified: datetime | None
    tags: tuple[str, ...]
    pipeline_tag: str | None
    library: str | None
    gated: bool
    format: ModelFormat


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int | None
    sha256: str | None  # LFS files only
    needed: bool  # part of the default MLX download
    gguf_quant: str | None = None  # GGUF files: "Q4_K_M", "F16", ...


@dataclass(frozen=True)
class RepoDetails:
    repo_id: str
    revision: str
    sha: str | None
    format: Literal["mlx", "gguf", "other"]
    files: tuple[RepoFile, ...]
    needed_files: tuple[str, ...]  # what enqueue(repo_id) downloads; empty for GGUF repos
    download_bytes: int  # size of needed_files
    weights_bytes: int  # the *.safetensors among them
    quantization: Quantization | None
    model_type: str | None
    param_count: int | None
    params_exact: bool  # False: estimated from the config's dimensions or packed weights
    context_length: int | None
    license: str | None
    gated: bool
    private: bool
    downloads: int
    likes: int
    last_modified: datetime | None
    tags: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)  # config.json; {} if unreadable

    @property
    def gguf_files(self) -> tuple[RepoFile, ...]:
        return tuple(f for f in self.files if is_gguf(f.path))


def search_models(query: str = "", *, fmt: ModelFormat = "mlx", sort: SortKey = "downloads",
                  limit: int = 50, endpoint: str | None = None,
                  token: str | None = None) -> list[ModelSummary]:
    """Models matching `query`: MLX ones (mlx-community first) or, with fmt="gguf", GGUF repos."""
    if fmt not in ("mlx", "gguf"):
        raise ValueError(f"fmt must be 'mlx' or 'gguf', not {fmt!r}")
    if sort not in _SORTS:
        raise ValueError(f"sort must be one of {sorted(_SORTS)}, not {sort!r}")
    api = HfApi(endpoint=resolve_endpoint(endpoint), token=token)
    authors = [MLX_COMMUNITY, None] if fmt == "mlx" else [None]
    found: dict[str, ModelSummary] = {}
    try:
        for author in authors:
            for info in api.list_models(search=query.strip() or None, author=author, filter=fmt,
                                        sort=_SORTS[sort], limit=limit, expand=_EXPAND):  # type: ignore[arg-type]
                found.setdefault(info.id, _summary(info, fmt))
    except Exception as exc:
        raise _search_error(exc) from exc
    return list(found.values())[:limit]


def repo_details(repo_id: str, revision: str = "main", *, endpoint: str | None = None,
                 token: str | None = None) -> RepoDetails:
    """Files, sizes and model facts of one repo; HubError (access, not found, network) otherwise."""
    check_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        raise translate(exc, repo_id, revision) from exc
    entries = entries_from_info(info)
    try:
        needed = [e.path for e in select_files(entries, None, repo_id)]
    except RepoFormatError:
        needed = []
    sizes = {e.path: e.size or 0 for e in entries}
    config = _fetch_config(repo_id, info, endpoint, token) if "config.json" in sizes else {}
    quant = parse_quantization(config)
    params, exact = _param_count(info, config, quant)
    tags = tuple(info.tags or ())
    return RepoDetails(
        repo_id=repo_id, revision=revision, sha=info.sha, format=_format(info, sizes),
        files=tuple(RepoFile(e.path, e.size, e.sha256, e.path in needed,
                             gguf_quant_label(e.path) if is_gguf(e.path) else None) for e in entries),
        needed_files=tuple(needed),
        download_bytes=sum(sizes[p] for p in needed),
        weights_bytes=sum(sizes[p] for p in needed if p.endswith(".safetensors")),
        quantization=quant,
        model_type=config.get("model_type") or (info.gguf or {}).get("architecture"),
        param_count=params, params_exact=exact,
        context_length=context_length(config) or _int((info.gguf or {}).get("context_length")),
        license=_license(info), gated=info.gated not in (None, False), private=bool(info.private),
        downloads=info.downloads or 0, likes=info.likes or 0, last_modified=info.last_modified,
        tags=tags, config=config,
    )


def _fetch_config(repo_id: str, info: ModelInfo, endpoint: str, token: str | None) -> dict[str, Any]:
    """config.json at the repo's commit; {} when it cannot be read (a gated repo without a token)."""
    url = hf_hub_url(repo_id, "config.json", revision=info.sha, endpoint=endpoint)
    try:
        response = get_session().get(url, headers=build_hf_headers(token=token),
                                     timeout=constants.HF_HUB_ETAG_TIMEOUT)
        hf_raise_for_status(response)
        config = json.loads(response.content)
    except (HfHubHTTPError, ValueError) as exc:
        log.info("No config.json for %s: %s", repo_id, str(exc).splitlines()[0] if str(exc) else exc)
        return {}
    except Exception as exc:
        raise translate(exc, repo_id, info.sha, "config.json") from exc
    return config if isinstance(config, dict) else {}


def _param_count(info: ModelInfo, config: dict[str, Any],
                 quant: Quantization | None) -> tuple[int | None, bool]:
    """(count, exact): safetensors metadata when unquantized, the config's dims when quantized."""
    st = info.safetensors
    if st is not None and quant is None:
        return int(st.total), True
    if (from_config := params_from_config(config)) is not None:
        return from_config, False
    if st is not None:
        return params_from_safetensors(dict(st.parameters), quant), False
    if (gguf_total := _int((info.gguf or {}).get("total"))) is not None:
        return gguf_total, True
    return None, False


def _license(info: ModelInfo) -> str | None:
    card = info.card_data
    value = card.get("license") if card is not None else None
    if value:
        return str(value)
    for tag in info.tags or ():
        if tag.startswith("license:"):
            return tag.removeprefix("license:")
    return None


def _format(info: ModelInfo, sizes: dict[str, int]) -> Literal["mlx", "gguf", "other"]:
    mlx = "mlx" in (info.tags or ()) or info.library_name == "mlx"
    if mlx and any(p.endswith(".safetensors") for p in sizes):
        return "mlx"
    if any(is_gguf(p) for p in sizes):
        return "gguf"
    return "other"


def _summary(info: ModelInfo, fmt: ModelFormat) -> ModelSummary:
    return ModelSummary(
        repo_id=info.id, author=info.author or (info.id.split("/")[0] if "/" in info.id else None),
        downloads=info.downloads or 0, likes=info.likes or 0, last_modified=info.last_modified,
        tags=tuple(info.tags or ()), pipeline_tag=info.pipeline_tag, library=info.library_name,
        gated=info.gated not in (None, False), format=fmt,
    )


def _search_error(exc: BaseException) -> HubError:
    if isinstance(exc, HubError):
        return exc
    status = getattr(getattr(exc, "response", None), "status_code", None)
    what = f"answered {status}" if status else f"could not be reached ({exc.__class__.__name__})"
    return NetworkError(f"Searching the Hugging Face Hub failed: the hub {what}.")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
