"""POST /v1/audio/transcriptions and /v1/audio/translations (OpenAI multipart), on the shared SpeechToText."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from ..errors import BadRequestError, MinervaError
from ..stt.engine import Segment, TranscriptionInfo, TranscriptionOptions
from ..stt.service import SpeechToText
from ..untrusted import quote_name
from . import diarized, response_formats
from .codecs import DecodedAudio, decode_upload
from .deps import Ctx, HttpContext, cancel_on_disconnect
from .errors import ERROR_RESPONSES, ApiError, ErrorEnvelope, from_minerva
from .names import OPENAI_STT_MODELS, UnknownSttModel, stt_program_name
from .response_formats import Granularity, ResponseFormat, Transcript
from .speaker_fields import REFERENCE_FIELD_BYTES, speakers
from .streaming import SSE_HEADERS, SSE_MEDIA_TYPE, aclose, sse, sse_error

_LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["speech-to-text"])

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")

MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The transcript in `response_format`; with `stream=true`, server-sent events "
        "`transcript.text.delta` (one per decoded segment) then `transcript.text.done` (the whole text)",
        "content": {
            "application/json": {},
            "text/plain": {"schema": {"type": "string"}},
            "application/x-subrip": {"schema": {"type": "string"}},
            "text/vtt": {"schema": {"type": "string"}},
            SSE_MEDIA_TYPE: {"schema": {"type": "string"}},
        },
    },
    **ERROR_RESPONSES,
    404: {"model": ErrorEnvelope, "description": "Unknown model name"},
    415: {"model": ErrorEnvelope, "description": "The upload is not audio, or in a container that is not supported"},
    503: {"model": ErrorEnvelope, "description": "The speech-to-text model cannot be loaded"},
}

FileField = Annotated[
    UploadFile,
    File(description="Audio in any common container/codec: wav, mp3, ogg/opus, webm, flac, m4a/aac, …"),
]
ModelField = Annotated[
    str,
    Form(description=f"{', '.join(OPENAI_STT_MODELS)} or the local model's name: all mean the configured model"),
]
PromptField = Annotated[str | None, Form(description="Text that biases decoding (names, spelling)")]
FormatField = Annotated[ResponseFormat, Form(description="json, text, srt, verbose_json or vtt")]
TranscriptionFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
TemperatureField = Annotated[
    float | None,
    Form(ge=0.0, le=1.0, description="0 (or absent) = Whisper's fallback schedule; above 0 = that temperature"),
]


@router.post(
    "/v1/audio/transcriptions",
    summary="Transcribe audio (OpenAI-compatible)",
    description=f"`model={diarized.DIARIZE_MODEL}` with `response_format=diarized_json` splits the transcript by "
    "speaker (see docs/speakers.md).",
    responses=RESPONSES,
    response_class=JSONResponse,
    form_limits={"max_part_size": REFERENCE_FIELD_BYTES},  # known_speaker_references[] are data URLs
)
async def create_transcription(
    request: Request,
    file: FileField,
    ctx: Ctx,
    model: ModelField = "whisper-1",
    language: Annotated[
        str | None, Form(description="ISO-639-1 code (en, de…); absent = detect. English-only models use en")
    ] = None,
    prompt: PromptField = None,
    response_format: Annotated[
        TranscriptionFormat,
        Form(description=f"json, text, srt, verbose_json or vtt; diarized_json with {diarized.DIARIZE_MODEL}"),
    ] = "json",
    temperature: TemperatureField = None,
    timestamp_granularities: Annotated[
        list[Granularity] | None,
        Form(
            alias="timestamp_granularities[]",
            description="word and/or segment; needs response_format=verbose_json",
        ),
    ] = None,
    stream: Annotated[
        bool, Form(description="Server-sent events as segments are decoded (json, text and diarized_json)")
    ] = False,
    chunking_strategy: Annotated[
        str | None, Form(description='"auto" or a server_vad object (JSON); checked and accepted')
    ] = None,
    known_speaker_names: Annotated[
        list[str] | None, Form(alias="known_speaker_names[]", description="Up to 4 names for the references")
    ] = None,
    known_speaker_references: Annotated[
        list[str] | None,
        Form(alias="known_speaker_references[]", description="Data URLs of 1–30 s of each known speaker's speech"),
    ] = None,
) -> Response:
    stt = ctx.stt()
    program = _program(model, stt)
    granularities = tuple(dict.fromkeys(timestamp_granularities or ()))
    diarized.check_fields(model, response_format, prompt, granularities, stream)
    diarized.chunking_strategy(chunking_strategy, await request.form())
    if response_format == "diarized_json":
        service = speakers(ctx)
        options = stt.options(
            language=_language(language),
            model=program,
            temperature=temperature or None,
            timestamps=True,
            word_timestamps=True,  # diarization gives each word to its speaker
        )
        data = await file.read()
        names, references = known_speaker_names, known_speaker_references
        return await diarized.respond(request, ctx, service, data, options, names, references, stream)
    if granularities and response_format != "verbose_json":
        raise ApiError(
            400,
            "timestamp_granularities[] needs response_format=verbose_json",
            "invalid_value",
            "timestamp_granularities",
        )
    if stream and response_format not in ("json", "text"):
        raise ApiError(
            400, "stream=true works with response_format json, text or diarized_json", "invalid_value", "stream"
        )
    options = stt.options(
        language=_language(language),
        model=program,
        prompt=prompt,
        temperature=temperature or None,
        timestamps=response_format in ("srt", "vtt", "verbose_json"),
        word_timestamps="word" in granularities,
    )
    data = await file.read()
    if stream:
        return await _stream(request, ctx, data, options)
    result = await cancel_on_disconnect(request, _transcribe(ctx, data, options))
    return _respond(result, response_format, granularities)


@router.post(
    "/v1/audio/translations",
    summary="Translate speech into English text (OpenAI-compatible)",
    description="Needs a multilingual model; an English-only model (`*.en`) answers 400 `translation_unsupported`.",
    responses=RESPONSES,
    response_class=JSONResponse,
)
async def create_translation(
    request: Request,
    file: FileField,
    ctx: Ctx,
    model: ModelField = "whisper-1",
    prompt: PromptField = None,
    response_format: FormatField = "json",
    temperature: TemperatureField = None,
) -> Response:
    stt = ctx.stt()
    program = _program(model, stt)
    options = stt.options(
        model=program,
        prompt=prompt,
        task="translate",
        temperature=temperature or None,
        timestamps=response_format in ("srt", "vtt", "verbose_json"),
    )
    try:
        stt.plan(options)
    except BadRequestError as err:
        raise ApiError(400, str(err), "translation_unsupported", "model") from err
    data = await file.read()
    result = await cancel_on_disconnect(request, _transcribe(ctx, data, options))
    return _respond(result, response_format, ())


def _program(model: str, stt: SpeechToText) -> str | None:
    """The program `model` names (None: route by language); 404 for a local-looking name not installed."""
    try:
        return stt_program_name(model, [p.name for p in stt.programs])
    except UnknownSttModel as err:
        names = ", ".join((*(p.name for p in stt.programs), *OPENAI_STT_MODELS))
        raise ApiError(
            404,
            f"model {quote_name(model)} is not installed; this server transcribes with: {names}",
            "model_not_found",
            "model",
        ) from err


def _language(language: str | None) -> str | None:
    """'en', 'EN', 'en-US' → 'en'; something that is not a language code → 400."""
    if not language or not language.strip() or language.strip().lower() == "auto":
        return None
    value = language.strip()
    if not _LANGUAGE.match(value):
        raise ApiError(
            400, f"language {quote_name(language)} is not an ISO-639-1 code like 'en'", "invalid_value", "language"
        )
    return re.split(r"[-_]", value)[0].lower()


async def _decode(ctx: HttpContext, data: bytes) -> DecodedAudio:
    try:
        return await ctx.manager.run(
            decode_upload, data, ctx.http.max_audio_seconds, ctx.settings.asr.vad_aggressiveness
        )
    except BadRequestError as err:  # empty, not audio, corrupt, too long: all about the `file` field
        raise from_minerva(err, "file") from err


async def _transcribe(ctx: HttpContext, data: bytes, options: TranscriptionOptions) -> Transcript:
    started = time.perf_counter()
    audio = await _decode(ctx, data)
    decoded = time.perf_counter()
    language, duration, segments = options.language or "en", audio.seconds, []
    async for item in ctx.stt().stream(audio.samples, options):
        if isinstance(item, TranscriptionInfo):
            language, duration = item.language, item.duration
        else:
            segments.append(item)
    result = response_formats.build(segments, language, duration, audio.heard_speech, options.task, options.temperature)
    _LOGGER.info(
        "HTTP %s: %.2f s audio, file decode %.0f ms, model %.0f ms, %d chars",
        options.task,
        audio.seconds,
        (decoded - started) * 1000,
        (time.perf_counter() - decoded) * 1000,
        len(result.text),
    )
    return result


def _respond(result: Transcript, response_format: str, granularities: tuple[Granularity, ...]) -> Response:
    media_type = MEDIA_TYPES[response_format]
    if response_format == "json":
        return JSONResponse(response_formats.as_json(result))
    if response_format == "verbose_json":
        return JSONResponse(response_formats.as_verbose_json(result, granularities))
    if response_format == "srt":
        return PlainTextResponse(response_formats.as_srt(result), media_type=media_type)
    if response_format == "vtt":
        return PlainTextResponse(response_formats.as_vtt(result), media_type=media_type)
    return PlainTextResponse(result.text + "\n", media_type=media_type)


async def _stream(request: Request, ctx: HttpContext, data: bytes, options: TranscriptionOptions) -> Response:
    """Decode and start the model before answering, so a bad file or a full queue is a real status."""

    async def start() -> tuple[DecodedAudio, AsyncIterator[TranscriptionInfo | Segment], TranscriptionInfo]:
        audio = await _decode(ctx, data)
        items = ctx.stt().stream(audio.samples, options)
        try:
            first = await anext(items)
        except BaseException:
            await aclose(items)
            raise
        assert isinstance(first, TranscriptionInfo)
        return audio, items, first

    audio, items, info = await cancel_on_disconnect(request, start())
    return StreamingResponse(_events(items, audio, info), media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


async def _events(
    items: AsyncIterator[TranscriptionInfo | Segment], audio: DecodedAudio, info: TranscriptionInfo
) -> AsyncIterator[bytes]:
    """One delta per kept segment (the first without its leading space), then the whole cleaned text."""
    segments: list[Segment] = []
    sent = False
    try:
        async for item in items:
            if not isinstance(item, Segment):
                continue
            segments.append(item)
            for kept in response_formats.kept_segments([item], audio.heard_speech):
                delta = kept.text if sent else kept.text.lstrip()
                sent = True
                yield sse({"type": "transcript.text.delta", "delta": delta})
        result = response_formats.build(segments, info.language, info.duration, audio.heard_speech)
        yield sse({"type": "transcript.text.done", "text": result.text})
    except MinervaError as err:
        yield sse_error(err)
    finally:
        await aclose(items)
