"""Speaker routes: a transcript split by speaker, and the household's enrolled voices.

- POST /v1/audio/transcribe-with-speakers (multipart `file`): words → speaker blocks, seed shape.
- POST /v1/speakers (multipart `name` + one or more `file`), GET /v1/speakers, DELETE /v1/speakers/{name}.
The OpenAI speaker fields (names + data-URL references) are in speaker_fields.py, shared with /v1/audio/transcriptions.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Request, UploadFile
from fastapi.responses import JSONResponse

from ..errors import BadRequestError
from ..speakers.attribution import Block, sequential_label, speaker_blocks
from ..speakers.service import MODEL_NAME, SpeakerService, timed_items
from ..speakers.store import EnrolledSpeaker, SpeakerStore
from .deps import Ctx, cancel_on_disconnect
from .errors import ERROR_RESPONSES, ApiError, ErrorEnvelope, from_minerva
from .response_formats import kept_segments
from .speaker_fields import MAX_CLIP_SECONDS, REFERENCE_FIELD_BYTES, Speakers, decode_clip, known_speakers
from .transcriptions import _language

router = APIRouter(tags=["speakers"])

MAX_ENROL_CLIPS = 10

RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    415: {"model": ErrorEnvelope, "description": "The upload is not audio"},
    503: {"model": ErrorEnvelope, "description": "Speaker recognition (or speech-to-text) is not available"},
}
ClipField = Annotated[
    UploadFile, File(description="Audio in any common container/codec: wav, mp3, ogg/opus, webm, flac, m4a/aac, …")
]


@router.post(
    "/v1/audio/transcribe-with-speakers",
    summary="Transcribe audio, split by speaker",
    description="Each word goes to the speaker turn holding its midpoint (else the one it overlaps most, else "
    "`Speaker_unknown`); one speaker's consecutive words form a segment, which also ends at a pause over 1.5 s. "
    "Enrolled voices (POST /v1/speakers) and the given references are named; other speakers are `Speaker_0`, … ",
    responses=RESPONSES,
    form_limits={"max_part_size": REFERENCE_FIELD_BYTES},
)
async def transcribe_with_speakers(
    request: Request,
    file: ClipField,
    ctx: Ctx,
    service: Speakers,
    language: Annotated[str | None, Form(description="ISO-639-1 code (en, de…); absent = detect")] = None,
    known_speaker_names: Annotated[list[str] | None, Form(alias="known_speaker_names[]")] = None,
    known_speaker_references: Annotated[list[str] | None, Form(alias="known_speaker_references[]")] = None,
) -> JSONResponse:
    stt = ctx.stt()
    options = stt.options(language=_language(language), timestamps=True, word_timestamps=True)
    data = await file.read()

    async def work() -> dict[str, Any]:
        known = await known_speakers(ctx, service, known_speaker_names, known_speaker_references)
        audio = await decode_clip(ctx, data, ctx.http.max_audio_seconds, "file")
        (language_used, segments), found = await asyncio.gather(
            stt.transcribe(audio.samples, options), service.diarize_audio(audio.samples, known)
        )
        labels, turns = found.labelled(sequential_label)
        blocks = speaker_blocks(timed_items(kept_segments(segments, audio.heard_speech)), turns)
        return seed_answer(audio.seconds, language_used, labels, blocks, stt.model_name)

    return JSONResponse(await cancel_on_disconnect(request, work()))


def seed_answer(
    duration: float, language: str, labels: list[str], blocks: list[Block], transcription_model: str
) -> dict[str, Any]:
    return {
        "duration": round(duration, 3),
        "language": language,
        "speakers_detected": labels,
        "segments": [
            {"start_ms": round(b.start * 1000), "end_ms": round(b.end * 1000), "speaker": b.speaker, "text": b.text}
            for b in blocks
        ],
        "models": {"transcription": transcription_model, "diarization": MODEL_NAME},
    }


@router.post("/v1/speakers", summary="Enrol a household voice", status_code=201, responses=RESPONSES)
async def enrol_speaker(
    request: Request,
    ctx: Ctx,
    service: Speakers,
    name: Annotated[str, Form(description="Display name: letters, digits, spaces, _ . ' -; at most 64 characters")],
    file: Annotated[list[UploadFile], File(description=f"1–{MAX_ENROL_CLIPS} clips, each 1–30 s of speech")],
    replace: Annotated[bool, Form(description="Forget the voice's earlier clips instead of adding to them")] = False,
) -> dict[str, Any]:
    _store(service)
    if not 1 <= len(file) <= MAX_ENROL_CLIPS:
        raise ApiError(400, f"send 1 to {MAX_ENROL_CLIPS} clips", "invalid_value", "file")
    clips = [await upload.read() for upload in file]

    async def work() -> EnrolledSpeaker:
        audio = [(await decode_clip(ctx, clip, MAX_CLIP_SECONDS, "file")).samples for clip in clips]
        try:
            return await service.enrol(name, audio, replace)
        except BadRequestError as err:
            raise from_minerva(err, "name" if err.code.startswith(("invalid_speaker", "too_many")) else "file") from err

    return speaker_card(await cancel_on_disconnect(request, work()))


@router.get("/v1/speakers", summary="List the enrolled voices", responses=RESPONSES)
async def list_speakers(service: Speakers) -> dict[str, Any]:
    return {"object": "list", "data": [speaker_card(s) for s in _store(service).all()]}


@router.delete("/v1/speakers/{name}", summary="Forget an enrolled voice", responses=RESPONSES)
async def delete_speaker(service: Speakers, name: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
    _store(service)
    if not await service.forget(name):
        raise ApiError(404, f"no enrolled voice is called {name!r}", "speaker_not_found", "name")
    return {"object": "speaker.deleted", "name": name, "deleted": True}


def speaker_card(speaker: EnrolledSpeaker) -> dict[str, Any]:
    return {
        "object": "speaker",
        "name": speaker.name,
        "clips": len(speaker.embeddings),
        "speech_seconds": speaker.speech_seconds,
        "created_at": speaker.created,
        "updated_at": speaker.updated,
    }


def _store(service: SpeakerService) -> SpeakerStore:
    if service.store is None:
        raise ApiError(503, "enrolling voices needs a data directory (--data-dir)", "service_unavailable")
    return service.store
