"""One frozen Settings object for the whole process (built by cli.py from flags and MINERVA_* env)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlparse

from .catalog import CatalogSettings
from .errors import MinervaError
from .speakers.store import validate_name
from .upstream import UpstreamSettings

DEFAULT_ASR_PORT = 10300
DEFAULT_TTS_PORT = 10200
DEFAULT_WAKE_PORT = 10400
DEFAULT_HTTP_PORT = 10800


def default_threads() -> int:
    """Inference workers and threads per decode: the CPU count, at most 4 (more only adds contention)."""
    return max(1, min(4, os.cpu_count() or 1))


class ConfigError(MinervaError):
    """Settings that cannot work together (reported before anything starts)."""

    code = "config_error"


class Service(StrEnum):
    ASR = "asr"
    TTS = "tts"
    WAKE = "wake"


@dataclass(frozen=True)
class ListenUri:
    """Where one Wyoming service listens: tcp://host:port, unix://path or stdio://."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    @staticmethod
    def parse(uri: str) -> ListenUri:
        parsed = urlparse(uri)
        if parsed.scheme == "tcp":
            if parsed.hostname is None or parsed.port is None:
                raise ConfigError(f"{uri!r}: a tcp:// URI needs a host and a port")
            return ListenUri("tcp", host=parsed.hostname, port=parsed.port)
        if parsed.scheme == "unix":
            path = parsed.netloc + parsed.path
            if not path:
                raise ConfigError(f"{uri!r}: a unix:// URI needs a path")
            return ListenUri("unix", path=path)
        if parsed.scheme == "stdio":
            return ListenUri("stdio")
        raise ConfigError(f"{uri!r}: only tcp://, unix:// and stdio:// are supported")

    def __str__(self) -> str:
        if self.scheme == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return "stdio://"


@dataclass(frozen=True)
class AsrSettings:
    # Speech-to-text programs in routing order (stt/programs.py): fast English first, multilingual base after it.
    models: tuple[str, ...] = ("tiny.en", "base")
    language: str | None = None  # server default when a request names none; None = route by detection
    beam_size: int = 1
    compute_type: str = "int8"
    device: str = "cpu"
    cpu_threads: int = field(default_factory=default_threads)  # 0 = let CTranslate2 decide
    initial_prompt: str | None = None
    endpointing: bool = True
    endpoint_silence_ms: int = 400
    vad_aggressiveness: int = 2
    max_audio_seconds: float = 60.0


@dataclass(frozen=True)
class TtsSettings:
    voice: str = "en_US-joe-medium"
    speaker: str | None = None
    length_scale: float | None = None  # None = the voice's own
    noise_scale: float | None = None
    noise_w: float | None = None
    volume: float = 1.0
    sentence_silence: float = 0.0
    sample_rate: int | None = None  # None = the voice's own rate
    cache_mb: float = 32.0
    max_text_chars: int = 10_000


@dataclass(frozen=True)
class WakeSettings:
    models: tuple[str, ...] = ()  # () = every built-in and custom model
    default_model: str = "okay_nabu"
    custom_model_dirs: tuple[Path, ...] = ()
    threshold: float = 0.5
    trigger_level: int = 1
    model_options: tuple[str, ...] = ()  # "NAME:threshold=0.6,trigger_level=2"
    refractory_seconds: float = 2.0
    threads: int = 0  # wake worker threads; 0 = CPU count, at most 2
    silence_gate: bool = True  # skip feature work on audio whose whole receptive field is silent
    speakers: tuple[str, ...] = ()  # --wake-speakers: only these enrolled voices wake; () = anyone


@dataclass(frozen=True)
class DiscoverySettings:
    enabled: bool = True
    name: str | None = None  # None = the host name
    host: str | None = None  # None = the machine's real addresses


@dataclass(frozen=True)
class HttpSettings:
    host: str = "0.0.0.0"
    port: int = DEFAULT_HTTP_PORT
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_upload_mb: float = 25.0
    max_audio_seconds: float = 600.0  # longest decoded upload for /v1/audio/transcriptions
    max_concurrency: int = 0  # audio requests in progress at once; 0 = workers + queue size
    voice_map: tuple[tuple[str, str], ...] = ()  # OpenAI voice name → "VOICE[:SPEAKER]"; unmapped = default voice
    body_timeout_seconds: float = 30.0  # a request body's time to arrive (+1 s per 64 KiB received); then 408
    header_timeout_seconds: float = 10.0  # a request's headers' time to arrive; then the connection is closed
    max_connections: int = 256  # open connections (WebSockets included); beyond: 503

    def validate(self) -> None:
        if self.max_upload_mb <= 0 or self.max_audio_seconds <= 0:
            raise ConfigError("--max-upload-mb and --http-max-audio-seconds must be positive")
        if self.max_concurrency < 0:
            raise ConfigError("--http-max-concurrency must not be negative")
        if self.body_timeout_seconds <= 0 or self.header_timeout_seconds <= 0:
            raise ConfigError("--http-body-timeout and --http-header-timeout must be positive")
        if self.max_connections < 1:
            raise ConfigError("--http-max-connections must be at least 1")


@dataclass(frozen=True)
class RealtimeSettings:
    """Live speech-to-text over WebSocket (http/realtime.py, http/stream_stt.py; engine in stt/live/hub.py)."""

    max_sessions: int = 16  # live sessions at once; more get `session_limit`
    overflow: str = "reject"  # a final arriving at a full queue: "reject" it or "drop_oldest" waiting one
    queue_size: int = 16  # finals waiting for an inference worker, over all live sessions
    interim_ms: int = 600  # new audio between interim refreshes; 0 = no interims
    max_utterance_seconds: float = 30.0  # longer speech is cut into utterances of this length
    max_buffer_seconds: float = 60.0  # audio a session may have waiting for its finals; beyond: buffer_overflow
    max_frame_bytes: int = 1024 * 1024  # one WebSocket message; larger ones are refused

    def validate(self) -> None:
        if self.overflow not in ("reject", "drop_oldest"):
            raise ConfigError("--realtime-overflow must be reject or drop_oldest")
        if self.max_sessions < 1 or self.queue_size < 1:
            raise ConfigError("--realtime-max-sessions and --realtime-queue-size must be at least 1")
        if self.interim_ms < 0 or self.max_utterance_seconds < 1:
            raise ConfigError("--realtime-interim-ms >= 0 and --realtime-max-utterance-seconds >= 1")


@dataclass(frozen=True)
class WyomingLimits:
    """What one client (or many) may hold on the Wyoming services; defaults far above a home's needs."""

    max_connections: int = 100  # open at once, per service; more are answered server_busy and closed
    idle_timeout_seconds: float = 120.0  # a connection with no request under way that sends nothing; 0 = never
    max_buffered_audio_mb: float = 64.0  # all connections together: payloads being read, utterances collected

    @property
    def max_buffered_audio_bytes(self) -> int:
        return int(self.max_buffered_audio_mb * 1024 * 1024)

    def validate(self) -> None:
        if self.max_connections < 1:
            raise ConfigError("--wyoming-max-connections must be at least 1")
        if self.idle_timeout_seconds < 0:
            raise ConfigError("--wyoming-idle-timeout must not be negative (0 = no timeout)")
        if self.max_buffered_audio_mb < 8:
            raise ConfigError("--max-buffered-audio-mb must be at least 8 (one audio chunk may be 4 MiB)")


@dataclass(frozen=True)
class Settings:
    asr_uri: ListenUri | None = None
    tts_uri: ListenUri | None = None
    wake_uri: ListenUri | None = None
    http: HttpSettings | None = None
    data_dirs: tuple[Path, ...] = field(default_factory=tuple)
    local_files_only: bool = False
    debug: bool = False
    log_format: str = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    workers: int = field(default_factory=default_threads)
    queue_size: int = 16
    preload: bool = False
    idle_unload_seconds: float = 0.0  # 0 = keep models loaded
    shutdown_grace_seconds: float = 5.0
    asr: AsrSettings = field(default_factory=AsrSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    wake: WakeSettings = field(default_factory=WakeSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)
    wyoming: WyomingLimits = field(default_factory=WyomingLimits)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)  # where installable models come from
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)  # other speech servers to prefer

    @property
    def services(self) -> dict[Service, ListenUri]:
        pairs = (
            (Service.ASR, self.asr_uri),
            (Service.TTS, self.tts_uri),
            (Service.WAKE, self.wake_uri),
        )
        return {service: uri for service, uri in pairs if uri is not None}

    @property
    def download_dir(self) -> Path | None:
        """Where downloaded models go: the first data dir."""
        return self.data_dirs[0] if self.data_dirs else None

    def validate(self) -> None:
        services = self.services
        if not services and self.http is None:
            raise ConfigError("no service enabled: give --asr-uri, --tts-uri, --wake-uri or --http")
        stdio = [s.value for s, uri in services.items() if uri.scheme == "stdio"]
        if stdio and (len(services) > 1 or self.http is not None):
            raise ConfigError("stdio:// works only when exactly one service runs (and no --http)")
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if self.queue_size < 0:
            raise ConfigError("--queue-size must not be negative")
        if self.http is not None:
            self.http.validate()
        if self.wake.threads < 0:
            raise ConfigError("--wake-threads must not be negative")
        if self.wake.speakers and not self.data_dirs:
            raise ConfigError("--wake-speakers needs a data directory (--data-dir): enrolled voices are kept there")
        for name in self.wake.speakers:
            try:
                validate_name(name)
            except MinervaError as err:
                raise ConfigError(f"--wake-speakers: {err}") from err
        self.catalog.validate()
        self.upstream.validate()
        if not 0 <= self.asr.vad_aggressiveness <= 3:
            raise ConfigError("--vad-aggressiveness must be 0, 1, 2 or 3")
        if self.asr.endpoint_silence_ms < 90:
            raise ConfigError("--endpoint-silence-ms must be at least 90")
        self.realtime.validate()
        self.wyoming.validate()
