"""Diarized transcriptions: POST /v1/audio/transcriptions with model=gpt-4o-transcribe-diarize, in OpenAI's shape.

- `response_format=diarized_json`: `{"task", "duration", "text", "segments": [{"type": "transcript.text.segment",
  "id", "speaker", "start", "end", "text"}], "usage"}`; speakers named by `known_speaker_names[]` (with their
  references) or by enrolled voices, the others `A`, `B`, …; `stream=true` sends each segment as it is complete
  (`transcript.text.delta` with its `segment_id`, then `transcript.text.segment`), then `transcript.text.done`.
- `json` and `text` from the diarizing model are plain transcripts.
- As OpenAI answers: `prompt` and `timestamp_granularities[]` are refused with that model, and so are `srt`, `vtt`,
  `verbose_json`; `diarized_json` needs it. `chunking_strategy` (`auto` or a `server_vad` object) is checked and
  accepted; our own VAD places the boundaries.

Transcription (with word timestamps) and diarization run side by side on the inference executor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import MinervaError
from ..speakers.attribution import letter_label, speaker_blocks
from ..speakers.service import Diarization, SpeakerService, openai_segments, timed_items
from ..stt.engine import Segment, TranscriptionInfo, TranscriptionOptions
from . import response_formats
from .codecs import DecodedAudio
from .deps import HttpContext, cancel_on_disconnect
from .errors import ApiError
from .speaker_fields import decode_clip, known_speakers
from .streaming import SSE_HEADERS, SSE_MEDIA_TYPE, aclose, sse, sse_error

_LOGGER = logging.getLogger(__name__)

DIARIZE_MODEL = "gpt-4o-transcribe-diarize"
DIARIZE_FORMATS = ("json", "text", "diarized_json")
CHUNKING_FIELD = "chunking_strategy"
# server_vad's fields and their ranges (OpenAI's Realtime VAD settings)
_VAD_FIELDS: dict[str, tuple[type, float, float]] = {
    "prefix_padding_ms": (int, 0, 10_000),
    "silence_duration_ms": (int, 0, 10_000),
    "threshold": (float, 0.0, 1.0),
}


def is_diarize_model(model: str) -> bool:
    """gpt-4o-transcribe-diarize, dated variants included (routing by language still applies: names.py)."""
    return model.strip().lower().startswith(DIARIZE_MODEL)


def check_fields(
    model: str, response_format: str, prompt: str | None, granularities: Sequence[str], stream: bool
) -> None:
    """What OpenAI refuses with (or without) the diarizing model: 400 naming the field."""
    diarizing = is_diarize_model(model)
    if response_format == "diarized_json" and not diarizing:
        raise ApiError(
            400, f"response_format 'diarized_json' needs model '{DIARIZE_MODEL}'", "invalid_value", "response_format"
        )
    if not diarizing:
        return
    if prompt:
        raise _unsupported("prompt")
    if granularities:
        raise _unsupported("timestamp_granularities")
    if response_format not in DIARIZE_FORMATS:
        raise ApiError(
            400,
            f"response_format '{response_format}' is not compatible with model '{DIARIZE_MODEL}'. "
            "Use 'json', 'text' or 'diarized_json' instead.",
            "invalid_value",
            "response_format",
        )


def _unsupported(field: str) -> ApiError:
    return ApiError(
        400,
        f"Unsupported parameter: '{field}' is not supported with '{DIARIZE_MODEL}'.",
        "unsupported_parameter",
        field,
    )


def chunking_strategy(value: str | None, form: Mapping[str, Any]) -> str | dict[str, Any] | None:
    """`auto`, a server_vad object as JSON text, or the SDK's `chunking_strategy[type]=server_vad` form fields →
    the checked value (None when absent); anything else is 400."""
    nested = {key[len(CHUNKING_FIELD) + 1 : -1]: form[key] for key in form if key.startswith(CHUNKING_FIELD + "[")}
    if value is None and not nested:
        return None
    if value is not None and value.strip() == "auto" and not nested:
        return "auto"
    fields: object = nested
    if value is not None:
        try:
            fields = json.loads(value)
        except ValueError:
            fields = None
    if not isinstance(fields, dict) or (nested and value is not None):
        raise _bad_chunking('must be "auto" or a server_vad object')
    if fields.get("type") != "server_vad":
        raise _bad_chunking('an object needs "type": "server_vad"')
    checked: dict[str, Any] = {"type": "server_vad"}
    for key, raw in fields.items():
        if key == "type":
            continue
        if key not in _VAD_FIELDS:
            raise _bad_chunking(f"unknown field {key[:40]!r}")
        kind, low, high = _VAD_FIELDS[key]
        try:
            number = kind(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not low <= number <= high:
            raise _bad_chunking(f"{key} must be a number from {low:g} to {high:g}")
        checked[key] = number
    return checked


def _bad_chunking(reason: str) -> ApiError:
    return ApiError(400, f"chunking_strategy {reason}", "invalid_value", CHUNKING_FIELD)


def diarized_json(text: str, duration: float, segments: list[dict[str, object]]) -> dict[str, Any]:
    return {
        "task": "transcribe",
        "duration": round(duration, 3),
        "text": text,
        "segments": segments,
        "usage": response_formats.usage(duration),
    }


def _segments(found: Diarization, segments: Sequence[Segment]) -> list[dict[str, object]]:
    _, turns = found.labelled(letter_label)
    return openai_segments(speaker_blocks(timed_items(segments), turns))


async def respond(
    request: Request,
    ctx: HttpContext,
    service: SpeakerService,
    data: bytes,
    options: TranscriptionOptions,
    names: list[str] | None,
    references: list[str] | None,
    stream: bool,
) -> Response:
    """A diarized_json answer (or its event stream); every input checked before the status line."""
    if stream:
        return await _stream(request, ctx, service, data, options, names, references)

    async def work() -> dict[str, Any]:
        started = time.perf_counter()
        known = await known_speakers(ctx, service, names, references)
        audio = await decode_clip(ctx, data, ctx.http.max_audio_seconds, "file")
        (language, segments), found = await asyncio.gather(
            ctx.stt().transcribe(audio.samples, options), service.diarize_audio(audio.samples, known)
        )
        result = response_formats.build(segments, language, audio.seconds, audio.heard_speech)
        answer = diarized_json(result.text, audio.seconds, _segments(found, result.segments))
        _LOGGER.info(
            "HTTP diarized transcription: %.2f s audio, %d speakers, %d segments in %.0f ms",
            audio.seconds,
            len(found.speakers),
            len(answer["segments"]),
            (time.perf_counter() - started) * 1000,
        )
        return answer

    return JSONResponse(await cancel_on_disconnect(request, work()))


Started = tuple[
    DecodedAudio, AsyncIterator[TranscriptionInfo | Segment], TranscriptionInfo, asyncio.Future[Diarization]
]


async def _stream(
    request: Request,
    ctx: HttpContext,
    service: SpeakerService,
    data: bytes,
    options: TranscriptionOptions,
    names: list[str] | None,
    references: list[str] | None,
) -> Response:
    """References and file decoded, diarization and the model started before answering: errors are statuses."""

    async def start() -> Started:
        known = await known_speakers(ctx, service, names, references)
        audio = await decode_clip(ctx, data, ctx.http.max_audio_seconds, "file")
        diarizing = asyncio.ensure_future(service.diarize_audio(audio.samples, known))
        items = ctx.stt().stream(audio.samples, options)
        try:
            first = await anext(items)
        except BaseException:
            diarizing.cancel()
            await aclose(items)
            raise
        assert isinstance(first, TranscriptionInfo)
        return audio, items, first, diarizing

    audio, items, info, diarizing = await cancel_on_disconnect(request, start())
    events = _events(items, audio, info, diarizing)
    return StreamingResponse(events, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


async def _events(
    items: AsyncIterator[TranscriptionInfo | Segment],
    audio: DecodedAudio,
    info: TranscriptionInfo,
    diarizing: asyncio.Future[Diarization],
) -> AsyncIterator[bytes]:
    """Each speaker segment once it is complete (a later word may still extend the last one), then the text."""
    segments: list[Segment] = []
    sent = 0
    try:
        async for item in items:
            if not isinstance(item, Segment):
                continue
            segments.append(item)
            if diarizing.done():
                complete = _segments(diarizing.result(), response_formats.kept_segments(segments, audio.heard_speech))
                for event in _segment_events(complete[sent:-1], first=sent == 0):
                    yield event
                sent = max(sent, len(complete) - 1)
        found = await diarizing
        result = response_formats.build(segments, info.language, info.duration, audio.heard_speech)
        for event in _segment_events(_segments(found, result.segments)[sent:], first=sent == 0):
            yield event
        yield sse({"type": "transcript.text.done", "text": result.text})
    except MinervaError as err:
        yield sse_error(err)
    finally:
        diarizing.cancel()
        await aclose(items)


def _segment_events(segments: list[dict[str, object]], first: bool) -> list[bytes]:
    """A delta (with its segment_id, as OpenAI sends for this model) and the segment itself, for each one."""
    events = []
    for index, segment in enumerate(segments):
        text = str(segment["text"])
        delta = text if first and index == 0 else " " + text
        events.append(sse({"type": "transcript.text.delta", "delta": delta, "segment_id": segment["id"]}))
        events.append(sse(segment))
    return events
