"""faster-whisper models: the names faster-whisper knows (tiny … large-v3, distil) and rhasspy's `-int8`
conversions, each installed from its Hugging Face repository.

An entry starts unresolved (name and repository only); its files and sizes come from the hub's listing
`{hub}/api/models/{repo}/tree/main`, filtered the way faster-whisper's own download filters them, and are fetched
from `{hub}/{repo}/resolve/main/{file}`. Large files are in LFS, whose object id is the file's sha256.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from ..stt.whisper import is_english_only, repo_id_for
from .entries import CatalogEntry, Kind, RemoteFile, is_safe_name

# faster_whisper.utils.download_model's allow_patterns: what a CTranslate2 Whisper folder needs.
MODEL_FILES = ("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*")
RHASSPY_INT8 = tuple(f"{size}{en}-int8" for size in ("tiny", "base", "small", "medium") for en in ("", ".en"))
ALIASES = frozenset({"large", "turbo"})  # faster-whisper's other names for large-v3 and large-v3-turbo


def whisper_names() -> list[str]:
    from faster_whisper.utils import available_models

    names = [name for name in available_models() if name not in ALIASES]
    return [*names, *RHASSPY_INT8]


def describe(name: str, repo: str) -> str:
    kind = "English only" if is_english_only(name) else "multilingual"
    if name.endswith("-int8"):
        kind += ", int8"
    if name.startswith("distil"):
        kind += ", distilled"
    return f"faster-whisper {name} ({kind}; {repo})"


def unresolved_entries(names: Iterable[str]) -> list[CatalogEntry]:
    entries = []
    for name in names:
        repo = repo_id_for(name)
        entries.append(
            CatalogEntry(
                kind=Kind.STT,
                name=name,
                description=describe(name, repo),
                languages=("en",) if is_english_only(name) else (),
                resolved=False,
                source=repo,
            )
        )
    return entries


def tree_url(hub: str, repo: str) -> str:
    return f"{hub.rstrip('/')}/api/models/{quote(repo, safe='/')}/tree/main"


def file_url(hub: str, repo: str, path: str) -> str:
    return f"{hub.rstrip('/')}/{quote(repo, safe='/')}/resolve/main/{quote(path)}"


def is_model_file(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in MODEL_FILES)


def resolved_entry(entry: CatalogEntry, tree: Any, hub: str) -> CatalogEntry:
    """The entry with its files, from the hub's tree listing (ValueError when it is not one or lacks model.bin)."""
    if not isinstance(tree, list):
        raise ValueError("the model listing is not a list")
    files: list[RemoteFile] = []
    for item in tree:
        if not isinstance(item, dict) or item.get("type") != "file":
            continue
        path = str(item.get("path", ""))
        if "/" in path or not is_safe_name(path) or not is_model_file(path):
            continue
        raw_lfs = item.get("lfs")
        lfs: dict[str, Any] = raw_lfs if isinstance(raw_lfs, dict) else {}
        size = lfs.get("size", item.get("size"))
        files.append(
            RemoteFile(
                name=path,
                url=file_url(hub, entry.source, path),
                size=int(size) if size is not None else None,
                sha256=str(lfs["oid"]).lower() if lfs.get("oid") else None,
            )
        )
    names = {f.name for f in files}
    if not {"model.bin", "config.json"} <= names:
        raise ValueError(f"{entry.source} has no model.bin and config.json")
    files.sort(key=lambda f: (f.name == "model.bin", f.name))  # the big one last: small ones fail fast
    return CatalogEntry(
        kind=entry.kind,
        name=entry.name,
        description=entry.description,
        languages=entry.languages,
        files=tuple(files),
        resolved=True,
        source=entry.source,
    )
