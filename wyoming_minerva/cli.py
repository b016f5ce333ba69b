"""Command line: flags, each also settable as a MINERVA_* environment variable, into Settings."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import __version__
from .catalog import HUGGING_FACE_URL, PIPER_VOICES_URL, CatalogSettings
from .http.names import parse_voice_map
from .settings import (
    DEFAULT_ASR_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_TTS_PORT,
    DEFAULT_WAKE_PORT,
    AsrSettings,
    ConfigError,
    DiscoverySettings,
    HttpSettings,
    ListenUri,
    RealtimeSettings,
    Settings,
    TtsSettings,
    WakeSettings,
    WyomingLimits,
    default_threads,
)
from .upstream import UpstreamSettings, parse_upstream_url

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wyoming-minerva"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wyoming-minerva",
        description="Local wake word, speech-to-text and text-to-speech: Wyoming services + HTTP API. "
        "Every flag can also be set as MINERVA_<FLAG> (e.g. MINERVA_STT_MODEL=base-int8).",
    )
    p.add_argument("--version", action="version", version=__version__)

    g = p.add_argument_group("services (with none of these, every service runs on its standard port)")
    g.add_argument("--asr-uri", help=f"speech-to-text service (default tcp://0.0.0.0:{DEFAULT_ASR_PORT})")
    g.add_argument("--tts-uri", help=f"text-to-speech service (default tcp://0.0.0.0:{DEFAULT_TTS_PORT})")
    g.add_argument("--wake-uri", help=f"wake word service (default tcp://0.0.0.0:{DEFAULT_WAKE_PORT})")
    g.add_argument(
        "--http",
        metavar="HOST:PORT",
        help=f"HTTP API address, or 'off' (default 0.0.0.0:{DEFAULT_HTTP_PORT} when no service flag is given)",
    )

    wy = WyomingLimits
    g = p.add_argument_group("Wyoming connection limits")
    g.add_argument(
        "--wyoming-max-connections",
        type=int,
        metavar="N",
        default=wy.max_connections,
        help=f"connections open at once per service; more are answered server_busy (default {wy.max_connections})",
    )
    g.add_argument(
        "--wyoming-idle-timeout",
        type=float,
        default=wy.idle_timeout_seconds,
        metavar="SECONDS",
        help="close a connection with no request under way that sends nothing for this long "
        f"(default {wy.idle_timeout_seconds:g}; 0 = never)",
    )
    g.add_argument(
        "--max-buffered-audio-mb",
        type=float,
        metavar="MB",
        default=wy.max_buffered_audio_mb,
        help="audio all Wyoming connections together may hold in memory; beyond it requests get server_busy "
        f"(default {wy.max_buffered_audio_mb:g})",
    )

    g = p.add_argument_group("models and resources")
    g.add_argument(
        "--data-dir",
        action="append",
        type=Path,
        help="where models are looked up (repeatable; the first also receives downloads)",
    )
    g.add_argument("--local-files-only", action="store_true", help="never download a model")
    g.add_argument(
        "--workers",
        type=int,
        default=default_threads(),
        help="inference threads shared by every service (default: CPU count, at most 4)",
    )
    g.add_argument(
        "--queue-size",
        type=int,
        default=Settings.queue_size,
        help="inference jobs that may wait for a worker before requests are refused with queue_full (default 16)",
    )
    g.add_argument(
        "--preload",
        action="store_true",
        help="load the default models at start instead of on first use",
    )
    g.add_argument(
        "--idle-unload",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="unload a model unused for this long (default 0 = never)",
    )
    g.add_argument(
        "--shutdown-grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long in-flight requests may finish on SIGINT/SIGTERM (default 5)",
    )

    g = p.add_argument_group("speech-to-text (faster-whisper)")
    g.add_argument(
        "--stt-model",
        action="append",
        help="a speech-to-text program: model name (tiny.en, base, small-int8, HF id) or local CTranslate2 folder; "
        "repeatable, the first is the default and a language goes to the first program that has it "
        f"(default: {' + '.join(AsrSettings.models)}, both bundled)",
    )
    g.add_argument("--stt-language", help="language code, or 'auto' (default auto; English-only models use en)")
    g.add_argument("--stt-beam-size", type=int, default=AsrSettings.beam_size, help="beam size (default 1)")
    g.add_argument(
        "--stt-compute-type",
        default=AsrSettings.compute_type,
        help="CTranslate2 compute type (default int8)",
    )
    g.add_argument("--stt-device", default=AsrSettings.device, help="cpu, cuda or auto (default cpu)")
    g.add_argument(
        "--stt-cpu-threads",
        type=int,
        default=default_threads(),
        help="CTranslate2 threads per decode (default: CPU count, at most 4; 0 = CTranslate2's choice)",
    )
    g.add_argument("--stt-initial-prompt", help="text that biases decoding (names, spelling)")
    g.add_argument(
        "--endpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="find the end of speech on the server and answer before audio-stop (default on)",
    )
    g.add_argument(
        "--endpoint-silence-ms",
        type=int,
        default=AsrSettings.endpoint_silence_ms,
        help="silence after speech that ends an utterance, in ms (Wyoming ASR and live sessions; default 400)",
    )
    g.add_argument(
        "--vad-aggressiveness",
        type=int,
        default=AsrSettings.vad_aggressiveness,
        help="webrtcvad aggressiveness 0-3, for Wyoming ASR, live sessions and uploads (default 2)",
    )
    g.add_argument(
        "--max-audio-seconds",
        type=float,
        default=AsrSettings.max_audio_seconds,
        help="longest audio accepted for one transcription (default 60)",
    )

    g = p.add_argument_group("text-to-speech (Piper)")
    g.add_argument(
        "--voice",
        default=TtsSettings.voice,
        help="voice name or path to .onnx (default: bundled en_US-joe-medium)",
    )
    g.add_argument("--speaker", help="default speaker (name or id) for multi-speaker voices")
    g.add_argument(
        "--length-scale",
        type=float,
        help="speaking speed: >1 slower, <1 faster (default: the voice's)",
    )
    g.add_argument("--noise-scale", type=float, help="generator noise (default: the voice's)")
    g.add_argument("--noise-w", type=float, help="phoneme width noise (default: the voice's)")
    g.add_argument(
        "--volume",
        type=float,
        default=TtsSettings.volume,
        help="output volume multiplier (default 1.0)",
    )
    g.add_argument(
        "--sentence-silence",
        type=float,
        default=TtsSettings.sentence_silence,
        help="seconds of silence after each sentence (default 0)",
    )
    g.add_argument("--tts-sample-rate", type=int, help="output sample rate (default: the voice's)")
    g.add_argument(
        "--tts-cache-mb",
        type=float,
        default=TtsSettings.cache_mb,
        help="memory for cached audio of repeated phrases (default 32, 0 = off)",
    )
    g.add_argument(
        "--max-text-chars",
        type=int,
        default=TtsSettings.max_text_chars,
        help="longest text accepted for one synthesis (default 10000)",
    )

    g = p.add_argument_group("wake word (openWakeWord, microWakeWord)")
    g.add_argument(
        "--wake-model",
        action="append",
        help="model to offer (repeatable; default: all built-in and custom)",
    )
    g.add_argument(
        "--default-wake-model",
        default=WakeSettings.default_model,
        help="model used when a client names none (default okay_nabu)",
    )
    g.add_argument(
        "--custom-model-dir",
        action="append",
        type=Path,
        help="folder with custom .tflite / microWakeWord .json models (repeatable)",
    )
    g.add_argument(
        "--wake-threshold",
        type=float,
        default=WakeSettings.threshold,
        help="probability that counts as an activation for openWakeWord models (default 0.5; "
        "microWakeWord models use the cutoff in their JSON unless --wake-model-option sets one)",
    )
    g.add_argument(
        "--wake-trigger-level",
        type=int,
        default=WakeSettings.trigger_level,
        help="activations in a row needed to detect (default 1)",
    )
    g.add_argument(
        "--wake-model-option",
        action="append",
        metavar="NAME:KEY=VALUE,...",
        help="per-model override of threshold, trigger_level, refractory_seconds (repeatable), "
        "e.g. okay_nabu:threshold=0.6,trigger_level=2",
    )
    g.add_argument(
        "--refractory-seconds",
        type=float,
        default=WakeSettings.refractory_seconds,
        help="audio seconds after a detection in which the same model stays quiet (default 2)",
    )
    g.add_argument(
        "--wake-threads",
        type=int,
        default=WakeSettings.threads,
        help="wake word worker threads, each batching its streams (default 0 = CPU count, at most 2)",
    )
    g.add_argument(
        "--wake-silence-gate",
        action=argparse.BooleanOptionalAction,
        default=WakeSettings.silence_gate,
        help="skip openWakeWord feature work while the last ~2 s of a stream held no speech (default on)",
    )
    g.add_argument(
        "--wake-speakers",
        metavar="NAME,...",
        help="deliver a detection only when the wake phrase is said by one of these enrolled voices "
        "(POST /v1/speakers; see docs/speakers.md); default off: anyone wakes",
    )

    g = p.add_argument_group("discovery (zeroconf)")
    g.add_argument(
        "--zeroconf",
        nargs="?",
        const="",
        metavar="NAME",
        help="advertise services as _wyoming._tcp (default on for TCP; NAME defaults to the host name)",
    )
    g.add_argument("--no-zeroconf", action="store_true", help="do not advertise")
    g.add_argument("--zeroconf-host", help="address to advertise instead of the machine's own")

    g = p.add_argument_group("HTTP API")
    g.add_argument("--api-key", help="require this key (Authorization: Bearer or X-API-Key) on the HTTP API")
    g.add_argument("--cors-origin", action="append", help="allowed CORS origin (repeatable; default none)")
    g.add_argument(
        "--max-upload-mb",
        type=float,
        default=HttpSettings.max_upload_mb,
        help="largest accepted request body in MiB (default 25); larger ones get 413 before they are read",
    )
    g.add_argument(
        "--http-max-audio-seconds",
        type=float,
        default=HttpSettings.max_audio_seconds,
        help="longest decoded audio for /v1/audio/transcriptions (default 600)",
    )
    g.add_argument(
        "--http-max-concurrency",
        type=int,
        default=HttpSettings.max_concurrency,
        help="audio requests (uploads, syntheses) in progress at once; more get 429 (default 0 = workers + queue size)",
    )
    g.add_argument(
        "--http-body-timeout",
        type=float,
        default=HttpSettings.body_timeout_seconds,
        metavar="SECONDS",
        help="time a request body has to arrive, plus 1 s per 64 KiB received; slower ones get 408 (default 30)",
    )
    g.add_argument(
        "--http-header-timeout",
        type=float,
        default=HttpSettings.header_timeout_seconds,
        metavar="SECONDS",
        help="time a request's headers have to arrive; then the connection is closed (default 10)",
    )
    g.add_argument(
        "--http-max-connections",
        type=int,
        default=HttpSettings.max_connections,
        help="open HTTP connections, WebSockets included; more get 503 (default 256)",
    )
    g.add_argument(
        "--openai-voice",
        action="append",
        metavar="NAME=VOICE[:SPEAKER]",
        help="local voice for an OpenAI voice name (alloy, echo, nova…; repeatable; unmapped names use --voice)",
    )

    g = p.add_argument_group("model catalog (installs from the web console and /v1/catalog)")
    g.add_argument(
        "--catalog-url",
        default=PIPER_VOICES_URL,
        metavar="URL",
        help="the piper-voices voices.json that lists installable voices; a mirror keeps its layout "
        "(default: Hugging Face's rhasspy/piper-voices)",
    )
    g.add_argument(
        "--whisper-hub-url",
        default=HUGGING_FACE_URL,
        metavar="URL",
        help=f"where faster-whisper model repositories are listed and fetched (default {HUGGING_FACE_URL})",
    )
    g.add_argument(
        "--wake-catalog-url",
        metavar="URL",
        help="a wake word index (JSON, see docs/console.md); default none: only installed wake words are listed",
    )

    up = UpstreamSettings
    g = p.add_argument_group("upstreams (other speech servers preferred while healthy; see docs/upstream.md)")
    g.add_argument(
        "--stt-upstream",
        action="append",
        metavar="URL",
        help="a speech-to-text upstream: http(s)://HOST:PORT/v1 (OpenAI-compatible) or tcp://HOST:PORT (Wyoming); "
        "repeatable, tried in the order given, the local model last (default none)",
    )
    g.add_argument(
        "--tts-upstream",
        action="append",
        metavar="URL",
        help="a text-to-speech upstream, as --stt-upstream (default none)",
    )
    g.add_argument(
        "--upstream-api-key",
        metavar="KEY",
        help="sent as Authorization: Bearer KEY to http(s) upstreams; never logged (prefer MINERVA_UPSTREAM_API_KEY)",
    )
    g.add_argument(
        "--no-local-fallback",
        action="store_true",
        help="a pure proxy: when no upstream can serve, answer 503 / service_unavailable instead of local models",
    )
    g.add_argument(
        "--upstream-timeout",
        type=float,
        default=up.timeout,
        metavar="SECONDS",
        help=f"longest wait for an upstream's answer, or its next audio (default {up.timeout:g})",
    )
    g.add_argument(
        "--upstream-probe-interval",
        type=float,
        default=up.probe_interval,
        metavar="SECONDS",
        help=f"between health probes of a healthy upstream (default {up.probe_interval:g})",
    )
    g.add_argument(
        "--upstream-probe-timeout",
        type=float,
        default=up.probe_timeout,
        metavar="SECONDS",
        help=f"a probe's limit, also every upstream connect's (default {up.probe_timeout:g})",
    )
    g.add_argument(
        "--upstream-failures",
        type=int,
        default=up.failures,
        metavar="N",
        help=f"consecutive failed requests that take an upstream out of rotation (default {up.failures})",
    )

    g = p.add_argument_group("real-time streaming (WebSocket live speech-to-text)")
    rt = RealtimeSettings
    g.add_argument(
        "--realtime-max-sessions",
        type=int,
        default=rt.max_sessions,
        help=f"live sessions at once; more get session_limit (default {rt.max_sessions})",
    )
    g.add_argument(
        "--realtime-overflow",
        choices=("reject", "drop_oldest"),
        default=rt.overflow,
        help="a final that finds the live queue full: reject it, or drop the oldest waiting one (default reject)",
    )
    g.add_argument(
        "--realtime-queue-size",
        type=int,
        default=rt.queue_size,
        help=f"finals that may wait for an inference worker, all sessions together (default {rt.queue_size})",
    )
    g.add_argument(
        "--realtime-interim-ms",
        type=int,
        default=rt.interim_ms,
        help=f"new audio between interim refreshes; 0 = no interims (default {rt.interim_ms})",
    )
    g.add_argument(
        "--realtime-max-utterance-seconds",
        type=float,
        default=rt.max_utterance_seconds,
        help=f"longer speech is cut into utterances of this length (default {rt.max_utterance_seconds:g})",
    )
    g.add_argument(
        "--realtime-max-buffer-seconds",
        type=float,
        default=rt.max_buffer_seconds,
        help=f"audio a session may have waiting for finals before buffer_overflow (default {rt.max_buffer_seconds:g})",
    )
    g.add_argument(
        "--realtime-max-frame-bytes",
        type=int,
        default=rt.max_frame_bytes,
        help=f"largest WebSocket message accepted (default {rt.max_frame_bytes})",
    )

    g = p.add_argument_group("logging")
    g.add_argument("--debug", action="store_true", help="log at DEBUG level")
    g.add_argument("--log-format", default=Settings.log_format, help="logging format string")
    return p


def env_argv(parser: argparse.ArgumentParser, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Turn MINERVA_* variables into flags placed before argv, so the command line wins."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    extra: list[str] = []
    for action in parser._actions:
        # The first long name: "--x" of a --x/--no-x pair, "--no-zeroconf" when that is the only one.
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in ("help", "version"):
            continue
        flag = longs[0]
        value = env.get("MINERVA_" + flag[2:].upper().replace("-", "_"))
        if value is None or any(o in given for o in action.option_strings):
            continue
        if action.nargs == 0:  # store_true / BooleanOptionalAction
            if value.lower() in _TRUE:
                extra.append(flag)
            elif value.lower() in _FALSE:
                if isinstance(action, argparse.BooleanOptionalAction):
                    extra.append("--no-" + flag[2:])
            else:
                raise ConfigError(f"MINERVA_{flag[2:].upper().replace('-', '_')}={value!r} is not a boolean")
        elif isinstance(action, argparse._AppendAction):
            for item in value.split(","):
                if item.strip():
                    extra += [flag, item.strip()]
        else:
            extra += [flag, value]
    return extra + list(argv)


def _http(value: str | None, any_service: bool, args: argparse.Namespace) -> HttpSettings | None:
    common = {
        "api_key": args.api_key or None,
        "cors_origins": tuple(args.cors_origin or ()),
        "max_upload_mb": args.max_upload_mb,
        "max_audio_seconds": args.http_max_audio_seconds,
        "max_concurrency": args.http_max_concurrency,
        "body_timeout_seconds": args.http_body_timeout,
        "header_timeout_seconds": args.http_header_timeout,
        "max_connections": args.http_max_connections,
        "voice_map": parse_voice_map(args.openai_voice or ()),
    }
    if value is None:
        return None if any_service else HttpSettings(**common)
    if value.lower() in _FALSE:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--http {value!r}: expected HOST:PORT or 'off'")
    return HttpSettings(host=host.strip("[]") or "0.0.0.0", port=int(port), **common)


def _upstream(args: argparse.Namespace) -> UpstreamSettings:
    """Upstream URLs (only http, https, tcp; the key never in an error) and their health settings."""
    key = args.upstream_api_key or None
    return UpstreamSettings(
        stt=tuple(parse_upstream_url(url, key) for url in args.stt_upstream or ()),
        tts=tuple(parse_upstream_url(url, key) for url in args.tts_upstream or ()),
        local_fallback=not args.no_local_fallback,
        timeout=args.upstream_timeout,
        probe_interval=args.upstream_probe_interval,
        probe_timeout=args.upstream_probe_timeout,
        failures=args.upstream_failures,
    )


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(env_argv(parser, argv, os.environ if env is None else env))

    uris = {name: getattr(args, f"{name}_uri") for name in ("asr", "tts", "wake")}
    any_service = any(uris.values()) or args.http is not None
    if not any_service:
        uris = {
            "asr": f"tcp://0.0.0.0:{DEFAULT_ASR_PORT}",
            "tts": f"tcp://0.0.0.0:{DEFAULT_TTS_PORT}",
            "wake": f"tcp://0.0.0.0:{DEFAULT_WAKE_PORT}",
        }
    language = args.stt_language
    settings = Settings(
        asr_uri=ListenUri.parse(uris["asr"]) if uris["asr"] else None,
        tts_uri=ListenUri.parse(uris["tts"]) if uris["tts"] else None,
        wake_uri=ListenUri.parse(uris["wake"]) if uris["wake"] else None,
        http=_http(args.http, any_service, args),
        data_dirs=tuple(args.data_dir or (default_data_dir(),)),
        local_files_only=args.local_files_only,
        debug=args.debug,
        log_format=args.log_format,
        workers=args.workers,
        queue_size=args.queue_size,
        preload=args.preload,
        idle_unload_seconds=args.idle_unload,
        shutdown_grace_seconds=args.shutdown_grace,
        wyoming=WyomingLimits(
            max_connections=args.wyoming_max_connections,
            idle_timeout_seconds=args.wyoming_idle_timeout,
            max_buffered_audio_mb=args.max_buffered_audio_mb,
        ),
        asr=AsrSettings(
            models=tuple(args.stt_model or AsrSettings.models),
            language=None if not language or language == "auto" else language,
            beam_size=args.stt_beam_size,
            compute_type=args.stt_compute_type,
            device=args.stt_device,
            cpu_threads=args.stt_cpu_threads,
            initial_prompt=args.stt_initial_prompt,
            endpointing=args.endpointing,
            endpoint_silence_ms=args.endpoint_silence_ms,
            vad_aggressiveness=args.vad_aggressiveness,
            max_audio_seconds=args.max_audio_seconds,
        ),
        tts=TtsSettings(
            voice=args.voice,
            speaker=args.speaker,
            length_scale=args.length_scale,
            noise_scale=args.noise_scale,
            noise_w=args.noise_w,
            volume=args.volume,
            sentence_silence=args.sentence_silence,
            sample_rate=args.tts_sample_rate,
            cache_mb=args.tts_cache_mb,
            max_text_chars=args.max_text_chars,
        ),
        wake=WakeSettings(
            models=tuple(args.wake_model or ()),
            default_model=args.default_wake_model,
            custom_model_dirs=tuple(args.custom_model_dir or ()),
            threshold=args.wake_threshold,
            trigger_level=args.wake_trigger_level,
            model_options=tuple(args.wake_model_option or ()),
            refractory_seconds=args.refractory_seconds,
            threads=args.wake_threads,
            silence_gate=args.wake_silence_gate,
            speakers=tuple(name.strip() for name in (args.wake_speakers or "").split(",") if name.strip()),
        ),
        discovery=DiscoverySettings(
            # MINERVA_ZEROCONF=off|on works like the boolean flags; any other value is the NAME.
            enabled=not args.no_zeroconf and (args.zeroconf or "").lower() not in _FALSE,
            name=None if (args.zeroconf or "").lower() in _TRUE | _FALSE else args.zeroconf or None,
            host=args.zeroconf_host,
        ),
        catalog=CatalogSettings(
            voices_url=args.catalog_url,
            whisper_hub_url=args.whisper_hub_url,
            wake_catalog_url=args.wake_catalog_url or None,
        ),
        upstream=_upstream(args),
        realtime=RealtimeSettings(
            max_sessions=args.realtime_max_sessions,
            overflow=args.realtime_overflow,
            queue_size=args.realtime_queue_size,
            interim_ms=args.realtime_interim_ms,
            max_utterance_seconds=args.realtime_max_utterance_seconds,
            max_buffer_seconds=args.realtime_max_buffer_seconds,
            max_frame_bytes=args.realtime_max_frame_bytes,
        ),
    )
    settings.validate()
    return settings
