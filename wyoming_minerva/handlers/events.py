"""The one place where the fields of incoming Wyoming events are checked, by type, before any handler sees them.

Every event type we act on has a strict model (no coercion: `"16000"`, `16000.5` and `true` are not integers,
`5` is not a string). A wrong field is a `bad_request` naming the event and the field, never a traceback deep in a
handler. Unknown fields and unknown event types pass through untouched: newer clients send fields we do not know.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from wyoming.event import Event

from ..errors import BadRequestError


class _Fields(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class VoiceFields(_Fields):
    name: str | None = None
    language: str | None = None
    speaker: str | int | None = None  # a speaker name, or its id

    @field_validator("speaker")
    @classmethod
    def _speaker_as_text(cls, value: str | int | None) -> str | None:
        return None if value is None else str(value)


class SynthesizeFields(_Fields):
    text: str = ""
    voice: VoiceFields | None = None
    text_format: str | None = None
    context: dict[str, Any] | None = None


class SynthesizeStartFields(_Fields):
    voice: VoiceFields | None = None
    text_format: str | None = None
    context: dict[str, Any] | None = None


class SynthesizeChunkFields(_Fields):
    text: str = ""


class TranscribeFields(_Fields):
    name: str | None = None
    language: str | None = None
    context: dict[str, Any] | None = None
    vad_sensitivity: str | None = None
    transcript_names: list[str] | None = None
    transcript_terms: list[str] | None = None


class AudioFields(_Fields):
    """audio-start and audio-chunk: a missing format field falls back (audio-start's, or 16 kHz mono s16)."""

    rate: int | None = None
    width: int | None = None
    channels: int | None = None
    timestamp: int | None = None


class AudioStopFields(_Fields):
    timestamp: int | None = None


class DetectFields(_Fields):
    names: list[str] | None = None
    context: dict[str, Any] | None = None


class SelectProgramFields(_Fields):
    name: str


class PingFields(_Fields):
    text: str | None = None


SCHEMAS: dict[str, type[_Fields]] = {
    "synthesize": SynthesizeFields,
    "synthesize-start": SynthesizeStartFields,
    "synthesize-chunk": SynthesizeChunkFields,
    "transcribe": TranscribeFields,
    "audio-start": AudioFields,
    "audio-chunk": AudioFields,
    "audio-stop": AudioStopFields,
    "detect": DetectFields,
    "select-program": SelectProgramFields,
    "ping": PingFields,
}

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "missing": "present",
}


def validate_event(event: Event) -> Event:
    """The event with its known fields checked (nulls already dropped by the reader); BadRequestError otherwise."""
    schema = SCHEMAS.get(event.type)
    if schema is None:
        return event
    try:
        fields = schema.model_validate(event.data)
    except ValidationError as err:
        raise BadRequestError(_describe(event.type, err)) from None
    return Event(type=event.type, data=fields.model_dump(exclude_none=True), payload=event.payload)


def _describe(event_type: str, err: ValidationError) -> str:
    """A short message naming the field, never echoing the client's value (it may be huge)."""
    first = err.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"] if not _is_union_branch(part))
    if where.endswith("speaker"):
        expected = "a string or an integer"
    else:
        expected = _TYPE_NAMES.get(first["type"], "of the documented type")
    return f"{event_type}: '{where}' must be {expected}"


def _is_union_branch(part: object) -> bool:
    # pydantic names the union member it tried ("str", "int", "VoiceFields") inside the location
    return isinstance(part, str) and (part in ("str", "int") or part.endswith("Fields"))


__all__ = ["SCHEMAS", "validate_event"]
