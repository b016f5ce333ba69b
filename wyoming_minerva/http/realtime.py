"""`WS /v1/realtime?intent=transcription`: OpenAI's Realtime API, transcription sessions (current GA shape).

Client events: `session.update` (session.type "transcription"; audio.input.format audio/pcm at 24000 or
16000 Hz, or G.711 audio/pcmu / audio/pcma at 8 kHz; audio.input.transcription {model, language, prompt};
audio.input.turn_detection server_vad {silence_duration_ms, prefix_padding_ms, threshold} or null for manual
commits), `input_audio_buffer.append` (base64 audio), `input_audio_buffer.commit`, `input_audio_buffer.clear`.
The beta `transcription_session.update` (input_audio_format "pcm16" / "g711_ulaw" / "g711_alaw",
input_audio_transcription, turn_detection) is accepted too.

Server events: `session.created`, `session.updated`, `input_audio_buffer.speech_started` / `speech_stopped` /
`committed` / `cleared`, `conversation.item.input_audio_transcription.delta` (append-only: words two interim
guesses agree on, then the rest at the end) and `.completed` (the whole final transcript, authoritative),
`.failed` (queue_full, inference_failed), and `error` {type, code, message, param, event_id}.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, WebSocket

from ..audio import AudioFormat
from ..errors import BadRequestError, MinervaError
from ..stt.live.deltas import DeltaTracker
from ..stt.live.hub import (
    CommitEmptyError,
    Committed,
    Failed,
    Final,
    Interim,
    LiveEvent,
    LiveSession,
    Notice,
    SessionLimitError,
    SessionOptions,
    SpeechStarted,
    SpeechStopped,
)
from .stream_common import (
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAVAILABLE,
    Channel,
    Disconnected,
    InvalidDataError,
    UnknownMessageError,
    accept,
    decode_base64,
    parse_message,
    stream_context,
)
from .stream_g711 import CODECS as G711_CODECS
from .stream_g711 import G711_RATE, g711_to_pcm16

_LOGGER = logging.getLogger(__name__)

router = APIRouter()

DEFAULT_RATE = 24000  # OpenAI's pcm16
RATES = (16000, 24000)
SUBPROTOCOL = "realtime"  # browsers send ["realtime", "openai-insecure-api-key.KEY"]
SERVER_ERROR_CODES = frozenset({"session_limit", "queue_full", "inference_failed", "internal_error"})


def realtime_error(code: str, message: str, param: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    kind = "server_error" if code in SERVER_ERROR_CODES else "invalid_request_error"
    return {
        "type": "error",
        "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id},
    }


class InvalidValueError(BadRequestError):
    code = "invalid_value"

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# ---- session configuration ----------------------------------------------------------------------


class Config:
    """The session as the client sees it (echoed in session.created/updated) and as the engine runs it."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.codec = "audio/pcm"
        self.rate = DEFAULT_RATE
        self.language: str | None = None
        self.prompt: str | None = None
        self.turn_detection: dict[str, Any] | None = {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": None,  # filled with the server's --realtime-silence-ms
        }
        self.include: list[str] | None = None

    def options(self, default_silence_ms: int) -> SessionOptions:
        td = self.turn_detection
        if td is not None and td.get("silence_duration_ms") is None:
            td["silence_duration_ms"] = default_silence_ms
        return SessionOptions(
            format=AudioFormat(self.rate, 2, 1),
            language=self.language,
            prompt=self.prompt,
            vad=td is not None,
            silence_ms=td["silence_duration_ms"] if td else None,
            prefix_ms=td["prefix_padding_ms"] if td else 300,
            vad_aggressiveness=min(3, int(td["threshold"] * 4)) if td else None,  # 0.5 → webrtcvad's 2
        )

    def format(self) -> dict[str, Any]:
        return {"type": self.codec, "rate": self.rate} if self.codec == "audio/pcm" else {"type": self.codec}

    def describe(self, session_id: str) -> dict[str, Any]:
        return {
            "object": "realtime.transcription_session",
            "type": "transcription",
            "id": session_id,
            "audio": {
                "input": {
                    "format": {"type": self.codec, "rate": self.rate}
                    if self.codec == "audio/pcm"
                    else {"type": self.codec},
                    "transcription": {"model": self.model, "language": self.language, "prompt": self.prompt or ""},
                    "turn_detection": self.turn_detection,
                    "noise_reduction": None,  # not offered: accepted and ignored
                }
            },
            "include": self.include,
        }

    def update(self, session: dict[str, Any], beta: bool) -> None:
        """Apply the fields present (OpenAI semantics: absent = unchanged, null turn_detection = manual)."""
        if beta:
            session = _from_beta(session)
        kind = session.get("type", "transcription")
        if kind != "transcription":
            raise InvalidValueError(
                f"only transcription sessions are served here (session.type {kind!r})", "session.type"
            )
        audio_input = _object(_object(session.get("audio"), "session.audio").get("input"), "session.audio.input")
        if "format" in audio_input:
            self.codec, self.rate = _format(audio_input["format"])
        if "transcription" in audio_input and audio_input["transcription"] is not None:
            transcription = _object(audio_input["transcription"], "session.audio.input.transcription")
            self.model = _text(transcription, "model", self.model, "session.audio.input.transcription") or self.model
            if "language" in transcription:
                self.language = _text(transcription, "language", None, "session.audio.input.transcription")
            if "prompt" in transcription:
                self.prompt = _text(transcription, "prompt", None, "session.audio.input.transcription")
        if "turn_detection" in audio_input:
            self.turn_detection = _turn_detection(audio_input["turn_detection"], self.turn_detection)
        if "include" in session:
            include = session["include"]
            self.include = [str(i) for i in include] if isinstance(include, list) else None


def _object(value: object, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidValueError(f"'{param}' must be an object", param)
    return value


def _text(data: dict[str, Any], key: str, default: str | None, parent: str) -> str | None:
    value = data.get(key, default)
    if value is not None and not isinstance(value, str):
        raise InvalidValueError(f"'{parent}.{key}' must be a string", f"{parent}.{key}")
    return value or None


def _format(fmt: object) -> tuple[str, int]:
    param = "session.audio.input.format"
    fmt = _object(fmt, param)
    kind = fmt.get("type", "audio/pcm")
    if kind in G711_CODECS:
        return str(kind), G711_RATE
    if kind != "audio/pcm":
        raise InvalidValueError(
            f"audio format {kind!r} is not supported (audio/pcm, audio/pcmu, audio/pcma)", f"{param}.type"
        )
    rate = fmt.get("rate", DEFAULT_RATE)
    if rate not in RATES or isinstance(rate, bool):
        raise InvalidValueError(f"rate {rate!r} is not supported (use 24000 or 16000)", f"{param}.rate")
    return "audio/pcm", int(rate)


def _turn_detection(value: object, current: dict[str, Any] | None) -> dict[str, Any] | None:
    param = "session.audio.input.turn_detection"
    if value is None:
        return None
    td = _object(value, param)
    kind = td.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise InvalidValueError(f"turn detection {kind!r} is not supported", f"{param}.type")
    base = dict(current or {"threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": None})
    if kind == "semantic_vad":  # no semantic model here: eagerness picks the silence instead
        silence = {"low": 800, "high": 250}.get(str(td.get("eagerness")))
        return {**base, "type": "server_vad", "silence_duration_ms": silence or base["silence_duration_ms"]}
    out = {**base, "type": "server_vad"}
    for key, low, high in (("silence_duration_ms", 90, 10_000), ("prefix_padding_ms", 0, 2000)):
        if key in td:
            v = td[key]
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise InvalidValueError(f"'{key}' must be an integer from {low} to {high}", f"{param}.{key}")
            out[key] = v
    if "threshold" in td:
        v = td["threshold"]
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v <= 1:
            raise InvalidValueError("'threshold' must be a number from 0 to 1", f"{param}.threshold")
        out["threshold"] = float(v)
    return out


def _from_beta(session: dict[str, Any]) -> dict[str, Any]:
    """transcription_session.update's flat fields in the GA shape."""
    audio_input: dict[str, Any] = {}
    fmt = session.get("input_audio_format")
    if fmt is not None:
        kinds = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
        if fmt not in kinds:
            message = f"input_audio_format {fmt!r} is not supported (pcm16, g711_ulaw, g711_alaw)"
            raise InvalidValueError(message, "input_audio_format")
        audio_input["format"] = {"type": kinds[fmt], "rate": DEFAULT_RATE}
    if "input_audio_transcription" in session:
        audio_input["transcription"] = session["input_audio_transcription"]
    if "turn_detection" in session:
        audio_input["turn_detection"] = session["turn_detection"]
    out: dict[str, Any] = {"type": "transcription", "audio": {"input": audio_input}}
    if "include" in session:
        out["include"] = session["include"]
    return out


# ---- the connection ----------------------------------------------------------------------------


class RealtimeConnection:
    def __init__(self, channel: Channel, session: LiveSession, config: Config, default_silence_ms: int) -> None:
        self.channel = channel
        self.session = session
        self.config = config
        self.default_silence_ms = default_silence_ms
        self._events = 0
        self._item_prefix = "item_" + session.id[5:17]
        self._previous_item: str | None = None
        self._deltas: dict[int, DeltaTracker] = {}

    def item_id(self, utterance: int) -> str:
        return f"{self._item_prefix}{utterance:04d}"

    async def send(self, data: dict[str, Any]) -> None:
        self._events += 1
        await self.channel.send_json({"event_id": f"event_{self._item_prefix[5:]}{self._events:05d}", **data})

    async def serve(self) -> None:
        await self.send({"type": "session.created", "session": self.config.describe(self.session.id)})
        writer = asyncio.create_task(self._write(), name=f"realtime-writer-{self.session.id}")
        try:
            while not writer.done():
                try:
                    message = await self.channel.receive()
                except MinervaError as err:
                    await self.send(realtime_error(err.code, str(err)))
                    continue
                await self._handle(message)
        except Disconnected:
            pass
        finally:
            await self.session.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _handle(self, message: str | bytes) -> None:
        event_id = None
        try:
            if isinstance(message, bytes):
                raise BadRequestError("binary messages are not part of this protocol: send input_audio_buffer.append")
            data = parse_message(message)
            event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
            await self._dispatch(data)
        except InvalidDataError as err:
            await self.channel.close_invalid(err, realtime_error(err.code, str(err)))
        except InvalidValueError as err:
            await self.send(realtime_error(err.code, str(err), err.param, event_id))
        except MinervaError as err:
            await self.send(realtime_error(err.code, str(err), None, event_id))

    async def _dispatch(self, data: dict[str, Any]) -> None:
        kind = data["type"]
        if kind == "input_audio_buffer.append":
            audio = decode_base64(data.get("audio"))
            self.session.feed(audio if self.config.codec == "audio/pcm" else g711_to_pcm16(audio, self.config.codec))
        elif kind in ("session.update", "transcription_session.update"):
            beta = kind == "transcription_session.update"
            self.config.update(_object(data.get("session"), "session"), beta)
            self.session.update(self.config.options(self.default_silence_ms))
            reply = "transcription_session.updated" if beta else "session.updated"
            await self.send({"type": reply, "session": self.config.describe(self.session.id)})
        elif kind == "input_audio_buffer.commit":
            if self.session.commit() is None:
                raise CommitEmptyError("nothing to commit: the input buffer holds no speech")
        elif kind == "input_audio_buffer.clear":
            self.session.clear()
            await self.send({"type": "input_audio_buffer.cleared"})
        else:
            raise UnknownMessageError(f"unknown event type {kind!r}")

    async def _write(self) -> None:
        async for event in self.session.events():
            await self._translate(event)
        if self.session.error is not None:
            err = self.session.error
            last = realtime_error(err.code, str(err))
            await self.channel.close(CLOSE_POLICY, err.code, last)

    async def _translate(self, event: LiveEvent) -> None:
        if isinstance(event, SpeechStarted | SpeechStopped) and self.config.turn_detection is None:
            return  # OpenAI sends VAD events only in server_vad mode
        if isinstance(event, SpeechStarted):
            await self.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": event.audio_ms,
                    "item_id": self.item_id(event.utterance),
                }
            )
        elif isinstance(event, SpeechStopped):
            await self.send(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": event.audio_ms,
                    "item_id": self.item_id(event.utterance),
                }
            )
        elif isinstance(event, Committed):
            item = self.item_id(event.utterance)
            await self.send(
                {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": self._previous_item}
            )
            self._previous_item = item
        elif isinstance(event, Interim):
            delta = self._deltas.setdefault(event.utterance, DeltaTracker()).interim(event.text)
            if delta:
                await self._delta(event.utterance, delta)
        elif isinstance(event, Final):
            delta = self._deltas.pop(event.utterance, DeltaTracker()).final(event.text)
            if delta:
                await self._delta(event.utterance, delta)
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": self.item_id(event.utterance),
                    "content_index": 0,
                    "transcript": event.text,
                    "usage": {"type": "duration", "seconds": round(event.audio_seconds, 3)},
                }
            )
        elif isinstance(event, Failed):
            self._deltas.pop(event.utterance, None)
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": self.item_id(event.utterance),
                    "content_index": 0,
                    "error": realtime_error(event.code, event.message)["error"],
                }
            )
        elif isinstance(event, Notice):
            await self.send(realtime_error(event.code, event.message))

    async def _delta(self, utterance: int, delta: str) -> None:
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": self.item_id(utterance),
                "content_index": 0,
                "delta": delta,
            }
        )


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, intent: str | None = None, model: str | None = None) -> None:
    """OpenAI Realtime API, transcription sessions only (`?intent=transcription`)."""
    ctx = stream_context(websocket)
    await accept(websocket, SUBPROTOCOL)
    channel = Channel(websocket, ctx.settings.max_frame_bytes)
    if intent not in (None, "transcription"):
        message = f"intent {intent!r} is not served here: only ?intent=transcription"
        await channel.close(CLOSE_POLICY, "unsupported intent", realtime_error("invalid_value", message, "intent"))
        return
    if ctx.hub is None:
        last = realtime_error("service_unavailable", "speech-to-text is not available on this server")
        await channel.close(CLOSE_UNAVAILABLE, "no speech-to-text", last)
        return
    config = Config(model or "whisper-1")
    try:
        session = ctx.hub.open(config.options(ctx.hub.silence_ms), peer=channel.peer)
    except SessionLimitError as err:
        await channel.close(CLOSE_TRY_AGAIN, err.code, realtime_error(err.code, str(err)))
        return
    _LOGGER.debug("Realtime %s: session %s", channel.peer, session.id)
    await RealtimeConnection(channel, session, config, ctx.hub.silence_ms).serve()
