"""The OpenAI speaker fields both transcription routes take, and the speaker service as a route dependency.

`known_speaker_names[]` + `known_speaker_references[]` (base64 data URLs of 1–30 s of speech, up to 4) become
voice prints; used by /v1/audio/transcriptions (diarized) and /v1/audio/transcribe-with-speakers.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated

import numpy as np
from fastapi import Depends

from ..errors import BadRequestError
from ..speakers.service import SpeakerService
from .codecs import DecodedAudio, decode_upload
from .deps import Ctx, HttpContext
from .errors import ApiError, from_minerva

MAX_REFERENCES = 4
REFERENCE_FIELD_BYTES = 8 * 1024 * 1024  # a data URL of 30 s of 44.1 kHz stereo WAV (Starlette's default: 1 MiB)
MAX_CLIP_SECONDS = 60.0  # decoded audio per reference or enrolment clip (its speech must be 1–30 s)
_DATA_URL = re.compile(
    r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,(?P<data>.*)$", re.S
)


def speakers(ctx: Ctx) -> SpeakerService:
    service = getattr(ctx.engines, "speakers", None)
    if not isinstance(service, SpeakerService):
        raise ApiError(503, "speaker recognition is not available on this server", "service_unavailable")
    return service


Speakers = Annotated[SpeakerService, Depends(speakers)]


async def known_speakers(
    ctx: HttpContext, service: SpeakerService, names: list[str] | None, references: list[str] | None
) -> dict[str, np.ndarray]:
    """OpenAI's known_speaker_names[] + known_speaker_references[] (data URLs of 1–30 s of speech) → voices."""
    names, references = names or [], references or []
    if len(names) != len(references):
        raise ApiError(
            400,
            f"{len(names)} known_speaker_names but {len(references)} known_speaker_references: give one each",
            "invalid_value",
            "known_speaker_references",
        )
    if len(names) > MAX_REFERENCES:
        raise ApiError(400, f"at most {MAX_REFERENCES} known speakers", "invalid_value", "known_speaker_names")
    if len({n.strip().casefold() for n in names}) != len(names) or not all(n.strip() for n in names):
        raise ApiError(
            400, "known_speaker_names must be distinct and not empty", "invalid_value", "known_speaker_names"
        )
    voices: dict[str, np.ndarray] = {}
    for name, reference in zip(names, references, strict=True):
        audio = await decode_clip(ctx, _data_url_bytes(reference), MAX_CLIP_SECONDS, "known_speaker_references")
        try:
            voices[name.strip()] = (await service.voice_print(audio.samples)).vector
        except BadRequestError as err:
            raise ApiError(400, f"reference for {name!r}: {err}", err.code, "known_speaker_references") from err
    return voices


def _data_url_bytes(reference: str) -> bytes:
    match = _DATA_URL.match(reference.strip())
    if match is None:
        raise ApiError(
            400,
            "known_speaker_references must be base64 data URLs (data:audio/wav;base64,…)",
            "invalid_value",
            "known_speaker_references",
        )
    try:
        return base64.b64decode(match["data"], validate=True)
    except binascii.Error as err:
        raise ApiError(
            400, "a known speaker reference is not valid base64", "invalid_value", "known_speaker_references"
        ) from err


async def decode_clip(ctx: HttpContext, data: bytes, max_seconds: float, param: str) -> DecodedAudio:
    try:
        return await ctx.manager.run(decode_upload, data, max_seconds, ctx.settings.asr.vad_aggressiveness)
    except BadRequestError as err:  # empty, not audio, corrupt, too long
        status_err = from_minerva(err, param)
        if param != "file":  # a reference that is not audio is a bad field, not an unsupported upload
            status_err.status = 400
        raise status_err from err
