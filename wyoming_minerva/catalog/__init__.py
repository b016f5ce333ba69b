"""The model and voice catalog: what can be installed (Piper voices from a piper-voices index, faster-whisper
models from their hub repositories, wake words from an operator's index), what is installed, and install jobs
that download with resume and checks and land atomically in the first data dir.

http/installs.py serves it (/v1/catalog, /v1/jobs); the engines re-scan through CatalogService.on_change.
"""

from .entries import CatalogEntry, Kind, RemoteFile, parse_entry_id
from .errors import CatalogError
from .installed import InstalledModel, scan_installed
from .jobs import Job, JobState, Phase
from .service import CatalogChange, CatalogService, ChangeHook
from .settings import HUGGING_FACE_URL, PIPER_VOICES_URL, CatalogSettings
from .usage import ManagerUsage, ModelUsage

__all__ = [
    "HUGGING_FACE_URL",
    "PIPER_VOICES_URL",
    "CatalogChange",
    "CatalogEntry",
    "CatalogError",
    "CatalogService",
    "CatalogSettings",
    "ChangeHook",
    "InstalledModel",
    "Job",
    "JobState",
    "Kind",
    "ManagerUsage",
    "ModelUsage",
    "Phase",
    "RemoteFile",
    "parse_entry_id",
    "scan_installed",
]
