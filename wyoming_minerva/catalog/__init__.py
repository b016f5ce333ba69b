"""The model and voice catalog: what can be installed (Piper voices from a piper-voices index, faster-whisper
models from their hub repositories, wake words from an operator's index), what is installed, and install jobs
that download with resume and checks and land atomically in the first data dir.

http/installs.py serves it (/v1/catalog, /v1/jobs); the engines re-scan through CatalogService.on_change.
The package root imports only light modules (settings.py may import CatalogSettings without a cycle); the service
is in `.service`, jobs in `.jobs`, usage in `.usage`.
"""

from .entries import CatalogEntry, Kind, RemoteFile, parse_entry_id
from .settings import HUGGING_FACE_URL, PIPER_VOICES_URL, CatalogSettings

__all__ = [
    "HUGGING_FACE_URL",
    "PIPER_VOICES_URL",
    "CatalogEntry",
    "CatalogSettings",
    "Kind",
    "RemoteFile",
    "parse_entry_id",
]
