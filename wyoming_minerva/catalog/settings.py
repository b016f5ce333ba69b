"""Where the catalog comes from: the operator's settings only (a client never names a source URL)."""

from __future__ import annotations

from dataclasses import dataclass

# The upstream indexes. A mirror serves the same layout: voice files lie beside voices.json, model files under
# {hub}/{repo}/resolve/main/ and their listing under {hub}/api/models/{repo}/tree/main.
PIPER_VOICES_URL = "https://huggingface.co/rhasspy/piper-voices/resolve/main/voices.json"
HUGGING_FACE_URL = "https://huggingface.co"


@dataclass(frozen=True)
class CatalogSettings:
    voices_url: str = PIPER_VOICES_URL  # --catalog-url: a piper-voices voices.json
    whisper_hub_url: str = HUGGING_FACE_URL  # --whisper-hub-url: where faster-whisper repositories live
    wake_catalog_url: str | None = None  # --wake-catalog-url: a wake word index (docs/console.md); None = none
    refresh_seconds: float = 3600.0  # an index is fetched again after this long
    timeout_seconds: float = 30.0  # connect and read timeout of every request
    retries: int = 5  # reconnections (with Range) after a download is cut
    max_index_bytes: int = 16 * 1024 * 1024  # an index larger than this is refused
    max_file_bytes: int = 16 * 1024**3  # a file whose index gives no size is cut off here (large-v3 is ~3 GB)
    max_parallel_jobs: int = 2  # installs downloading at once; more wait in the `queued` phase

    def validate(self) -> None:
        from ..settings import ConfigError  # here, not at the top: settings.py may import this module

        sources = (
            ("--catalog-url", self.voices_url),
            ("--whisper-hub-url", self.whisper_hub_url),
            ("--wake-catalog-url", self.wake_catalog_url),
        )
        for flag, url in sources:
            if url is not None and not url.startswith(("http://", "https://")):
                raise ConfigError(f"{flag} {url!r}: only http:// and https:// URLs")
        if self.timeout_seconds <= 0 or self.retries < 0 or self.max_parallel_jobs < 1:
            raise ConfigError("catalog: timeout must be positive, retries >= 0, parallel jobs >= 1")
