"""Piper voices from a piper-voices `voices.json`: one entry per voice, its .onnx and .onnx.json beside the index.

voices.json maps a voice key (`en_US-lessac-medium`) to its language, quality, speakers and files (paths relative
to the index, each with `size_bytes` and `md5_digest`). Only the model and its config are installed (not the model
card); a voice whose entry is malformed or lacks either file is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urljoin

from .entries import CatalogEntry, Kind, RemoteFile, is_safe_name

_LOGGER = logging.getLogger(__name__)

MODEL_SUFFIX = ".onnx"
CONFIG_SUFFIX = ".onnx.json"


def voice_entries(index: Mapping[str, Any], index_url: str) -> list[CatalogEntry]:
    entries: list[CatalogEntry] = []
    for key, voice in index.items():
        try:
            entries.append(voice_entry(str(key), voice, index_url))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            _LOGGER.debug("Skipping voice %r of %s: %s", key, index_url, err)
    return sorted(entries, key=lambda entry: entry.name)


def voice_entry(key: str, voice: Mapping[str, Any], index_url: str) -> CatalogEntry:
    if not is_safe_name(key):
        raise ValueError("unsafe voice key")
    wanted = {key + MODEL_SUFFIX: 0, key + CONFIG_SUFFIX: 1}  # the config last: a voice exists once it lands
    files: list[RemoteFile] = []
    for path, meta in dict(voice["files"]).items():
        name = str(path).rsplit("/", 1)[-1]
        if name not in wanted:
            continue
        size = meta.get("size_bytes")
        files.append(
            RemoteFile(
                name=name,
                url=urljoin(index_url, quote(str(path), safe="/")),
                size=int(size) if size is not None else None,
                md5=(str(meta["md5_digest"]).lower() if meta.get("md5_digest") else None),
            )
        )
    if sorted(f.name for f in files) != sorted(wanted):
        raise ValueError("the model or its config is missing")
    files.sort(key=lambda f: wanted[f.name])
    language = voice.get("language") or {}
    quality = str(voice.get("quality") or "") or None
    place = ", ".join(str(x) for x in (language.get("name_english"), language.get("country_english")) if x)
    dataset = str(voice.get("name") or key).replace("_", " ").title()
    return CatalogEntry(
        kind=Kind.VOICE,
        name=key,
        description=f"{dataset} ({place})" if place else dataset,
        languages=(str(language["code"]),) if language.get("code") else (),
        quality=quality,
        speakers=int(voice.get("num_speakers") or 1),
        files=tuple(files),
        source=index_url,
    )
