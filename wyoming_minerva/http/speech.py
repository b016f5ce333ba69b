"""POST /v1/audio/speech (OpenAI JSON): text → audio on the shared TextToSpeech, streamed piece by piece.

Everything that can fail for a client reason fails before the status line: the body is validated, the voice
chosen and loaded, and the first piece synthesized (a full queue is a 429 then, not a broken stream).
All formats are 24 kHz mono like OpenAI's (`pcm` is raw s16le), so clients that hard-code the rate play right.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import MinervaError
from ..tts.piper import SpeechOptions, TextToSpeech
from ..tts.voices import UnknownSpeakerError, UnknownVoiceError
from ..untrusted import is_plain_name, quote_name
from .codecs import SPEECH_FORMATS, SpeechEncoder
from .deps import Ctx, HttpContext, cancel_on_disconnect
from .errors import ERROR_RESPONSES, ApiError, ErrorEnvelope
from .names import OPENAI_TTS_MODELS, OPENAI_VOICES, VoiceChoice, choose_voice, is_tts_model
from .streaming import SSE_HEADERS, SSE_MEDIA_TYPE, aclose, sse, sse_error

_LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["text-to-speech"])

OUTPUT_RATE = 24000
SpeechFormatName = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class VoiceId(BaseModel):
    id: str = Field(description="A voice name (OpenAI's custom-voice object shape)")


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        "tts-1",
        description=f"{', '.join(OPENAI_TTS_MODELS)} or piper: all mean Piper; a local voice name also works "
        "(it is then the voice unless `voice` names a local voice)",
    )
    input: str = Field(description="The text to speak (markdown is read as a person would; limit --max-text-chars)")
    voice: str | VoiceId | None = Field(
        None,
        description=f"An OpenAI voice ({', '.join(OPENAI_VOICES)}; mapped with --openai-voice, else the default "
        "voice) or a local Piper voice name (en_US-lessac-medium, lessac…); absent = the default voice",
    )
    response_format: SpeechFormatName = Field("mp3", description="Audio format; pcm is raw 24 kHz s16le mono")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="0.25 to 4.0; 1.0 = the voice's own pace")
    instructions: str | None = Field(None, description="Accepted for compatibility; Piper voices ignore it")
    stream_format: Literal["audio", "sse"] = Field(
        "audio",
        description="audio: the file, streamed as it is made; sse: `speech.audio.delta` events (base64 audio "
        "in response_format) then `speech.audio.done`",
    )


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Audio in `response_format`, sent sentence by sentence as it is synthesized; or server-sent "
        "events with `stream_format=sse`",
        "content": {
            **{f.media_type: {"schema": {"type": "string", "format": "binary"}} for f in SPEECH_FORMATS.values()},
            SSE_MEDIA_TYPE: {"schema": {"type": "string"}},
        },
    },
    **ERROR_RESPONSES,
    404: {"model": ErrorEnvelope, "description": "Unknown model name"},
    503: {"model": ErrorEnvelope, "description": "The voice cannot be loaded"},
}


@router.post(
    "/v1/audio/speech",
    summary="Synthesize speech (OpenAI-compatible)",
    responses=RESPONSES,
    response_class=StreamingResponse,
)
async def create_speech(
    request: Request,
    body: Annotated[SpeechRequest, Body()],
    ctx: Ctx,
) -> Response:
    started = time.perf_counter()
    tts = ctx.tts()
    requested = body.voice.id if isinstance(body.voice, VoiceId) else body.voice
    choice = _model_voice(body.model, choose_voice(requested, ctx.http.voice_map), tts)
    tts.check_text(body.input)
    options = SpeechOptions(length_scale=_length_scale(body.speed, ctx), sample_rate=OUTPUT_RATE)

    async def start() -> tuple[AsyncIterator[bytes], bytes]:
        try:
            speech = await tts.open(choice.voice, speaker=choice.speaker, options=options)
        except (UnknownVoiceError, UnknownSpeakerError) as err:
            raise ApiError(400, str(err), "voice_not_found", "voice") from err
        pieces = speech.stream(body.input)
        try:
            first = await anext(pieces)
        except BaseException:
            await aclose(pieces)
            raise
        return pieces, first

    pieces, first = await cancel_on_disconnect(request, start())
    encoder = SpeechEncoder(body.response_format, OUTPUT_RATE)
    progress = _Progress(started, f"{body.response_format}/{body.stream_format}", time.perf_counter() - started)
    if body.stream_format == "sse":
        events = _events(pieces, first, encoder, progress)
        return StreamingResponse(events, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
    media_type = SPEECH_FORMATS[body.response_format].media_type
    audio = _audio(pieces, first, encoder, progress)
    return StreamingResponse(audio, media_type=media_type, headers={"Cache-Control": "no-cache"})


@dataclass
class _Progress:
    """What the log line of one answer says (never the text)."""

    started: float
    label: str
    first_seconds: float  # request → first piece synthesized (the audio starts right after)
    pcm_bytes: int = 0
    complete: bool = False

    def log(self) -> None:
        _LOGGER.info(
            "HTTP speech %s: %.2f s audio, first audio %.0f ms, total %.0f ms%s",
            self.label,
            self.pcm_bytes / 2 / OUTPUT_RATE,
            self.first_seconds * 1000,
            (time.perf_counter() - self.started) * 1000,
            "" if self.complete else " (ended early)",
        )


def _model_voice(model: str, choice: VoiceChoice, tts: TextToSpeech) -> VoiceChoice:
    """A local voice name as the model is the voice when `voice` is not; any other model name (tts-1, gpt-tts,
    kokoro, …) speaks with the requested or default voice."""
    if not is_tts_model(model):
        raise ApiError(400, "model must not be empty", "invalid_value", "model")
    if not is_plain_name(model):  # a path is never a model: the file is not opened, nor echoed
        raise ApiError(404, f"unknown model {quote_name(model)}", "model_not_found", "model")
    if choice.voice is not None:
        return choice
    try:
        tts.choose(model)
    except (UnknownVoiceError, MinervaError):
        return choice
    return VoiceChoice(model)


def _length_scale(speed: float, ctx: HttpContext) -> float | None:
    """OpenAI speed s → Piper length_scale base/s; 1.0 keeps the server's (or the voice's) own pace."""
    if speed == 1.0:
        return None
    return (ctx.settings.tts.length_scale or 1.0) / speed


async def _encoded(
    pieces: AsyncIterator[bytes], first: bytes, encoder: SpeechEncoder, progress: _Progress
) -> AsyncIterator[bytes]:
    """Encoded bytes per piece; the encoding (mp3 costs ~10 ms a second of audio) runs off the event loop."""
    run = asyncio.to_thread if encoder.format.container is not None else _inline
    try:
        progress.pcm_bytes += len(first)
        chunk = await run(encoder.encode, first)
        if chunk:
            yield chunk
        async for pcm in pieces:
            progress.pcm_bytes += len(pcm)
            chunk = await run(encoder.encode, pcm)
            if chunk:
                yield chunk
        tail = await run(encoder.finish)
        progress.complete = True
        if tail:
            yield tail
    finally:
        await aclose(pieces)
        encoder.close()
        progress.log()


async def _inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


async def _audio(
    pieces: AsyncIterator[bytes], first: bytes, encoder: SpeechEncoder, progress: _Progress
) -> AsyncIterator[bytes]:
    try:
        async for chunk in _encoded(pieces, first, encoder, progress):
            yield chunk
    except MinervaError as err:  # the status is sent: all we can do is end the audio early
        _LOGGER.warning("Speech stream ended early: %s (%s)", err, err.code)


async def _events(
    pieces: AsyncIterator[bytes], first: bytes, encoder: SpeechEncoder, progress: _Progress
) -> AsyncIterator[bytes]:
    try:
        async for chunk in _encoded(pieces, first, encoder, progress):
            yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})
        yield sse({"type": "speech.audio.done"})
    except MinervaError as err:
        yield sse_error(err)
