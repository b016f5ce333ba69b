"""Wake word models from an operator's index (`--wake-catalog-url`); there is no upstream index of them.

The index is JSON: `{"models": [{"name", "engine": "openwakeword"|"microwakeword", "phrase", "languages",
"files": [{"name", "url", "size_bytes", "sha256" or "md5"}]}]}`; a relative `url` is relative to the index.
openWakeWord needs its `.tflite`; microWakeWord its `.tflite` and the `.json` config that names it (placed last,
so the model appears whole). Installed files go to `<first data dir>/wake/`. A microWakeWord entry is named as the
wake engine names it, with `_micro` (`wake:okay_house_micro`).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urljoin

from ..wake.catalog import MICRO_SUFFIX
from .entries import CatalogEntry, Kind, RemoteFile, is_safe_name

_LOGGER = logging.getLogger(__name__)

ENGINES = ("openwakeword", "microwakeword")
WAKE_FOLDER = "wake"


def wake_entries(index: Any, index_url: str) -> list[CatalogEntry]:
    models = index.get("models") if isinstance(index, dict) else None
    if not isinstance(models, list):
        raise ValueError("a wake word index is an object with a `models` list")
    entries: list[CatalogEntry] = []
    for model in models:
        try:
            entries.append(wake_entry(model, index_url))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            _LOGGER.debug("Skipping wake word %r of %s: %s", model, index_url, err)
    return sorted(entries, key=lambda entry: entry.name)


def wake_entry(model: dict[str, Any], index_url: str) -> CatalogEntry:
    name = str(model["name"])
    engine = str(model.get("engine", "openwakeword")).lower()
    if not is_safe_name(name) or engine not in ENGINES:
        raise ValueError("bad name or engine")
    files = [
        RemoteFile(
            name=str(item["name"]),
            url=urljoin(index_url, str(item["url"])),
            size=int(item["size_bytes"]) if item.get("size_bytes") is not None else None,
            sha256=str(item["sha256"]).lower() if item.get("sha256") else None,
            md5=str(item["md5"]).lower() if item.get("md5") else None,
        )
        for item in model["files"]
    ]
    suffixes = sorted(f.name.rsplit(".", 1)[-1] for f in files)
    if suffixes != (["json", "tflite"] if engine == "microwakeword" else ["tflite"]):
        raise ValueError(f"{engine} needs {'a .tflite and its .json' if engine == 'microwakeword' else 'a .tflite'}")
    files.sort(key=lambda f: f.name.endswith(".json"))
    phrase = str(model.get("phrase") or name.replace("_", " ").title())
    if engine == "microwakeword" and not name.endswith(MICRO_SUFFIX):
        name += MICRO_SUFFIX  # the wake engine's naming: unique across engines
    return CatalogEntry(
        kind=Kind.WAKE,
        name=name,
        description=f"{phrase} ({'microWakeWord' if engine == 'microwakeword' else 'openWakeWord'})",
        languages=tuple(str(x) for x in model.get("languages", ())),
        files=tuple(files),
        source=index_url,
        extra={"engine": engine, "phrase": phrase},
    )
