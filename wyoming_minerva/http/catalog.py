"""What this server offers, in the shapes clients read: /v1/models (OpenAI), /v1/audio/models and
/v1/audio/voices (Open WebUI and other OpenAI-speech clients). Nothing here loads a model."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from .deps import Ctx, HttpContext
from .errors import ERROR_RESPONSES, ApiError, ErrorEnvelope
from .names import LOCAL_TTS_MODEL, OPENAI_STT_MODELS, OPENAI_TTS_MODELS, OPENAI_VOICES, choose_voice

router = APIRouter(tags=["models"])

OWNER = "wyoming-minerva"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNER
    root: str = Field(description="The local model (or voice) this name runs on")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AudioModel(BaseModel):
    id: str
    name: str


class AudioModels(BaseModel):
    models: list[AudioModel]


class Voice(BaseModel):
    id: str
    name: str
    languages: list[str] = Field(default_factory=list)
    speakers: list[str] = Field(default_factory=list)
    maps_to: str | None = Field(None, description="For OpenAI voice names: the local voice that speaks")


class Voices(BaseModel):
    voices: list[Voice]


def model_cards(ctx: HttpContext) -> list[ModelCard]:
    cards: list[ModelCard] = []
    created = ctx.created
    if ctx.engines.stt is not None:
        stt = ctx.engines.stt
        cards += [ModelCard(id=p.name, created=created, root=p.name) for p in stt.programs]
        cards += [ModelCard(id=name, created=created, root="router") for name in OPENAI_STT_MODELS]
    if ctx.engines.tts is not None:
        tts = ctx.engines.tts
        default = tts.default_voice
        cards += [ModelCard(id=name, created=created, root=default) for name in (*OPENAI_TTS_MODELS, LOCAL_TTS_MODEL)]
        cards += [ModelCard(id=voice.name, created=created, root=voice.name) for voice in tts.voices()]
    return cards


@router.get("/v1/models", summary="Speech-to-text models, speech models and voices (OpenAI list)")
async def list_models(ctx: Ctx) -> ModelList:
    return ModelList(data=model_cards(ctx))


@router.get(
    "/v1/models/{model_id}",
    summary="One model (OpenAI retrieve)",
    responses={**ERROR_RESPONSES, 404: {"model": ErrorEnvelope, "description": "No such model"}},
)
async def get_model(model_id: str, ctx: Ctx) -> ModelCard:
    for card in model_cards(ctx):
        if card.id == model_id:
            return card
    raise ApiError(404, f"the model {model_id!r} does not exist", "model_not_found", "model")


@router.get("/v1/audio/models", summary="Speech (TTS) models, for Open WebUI")
async def audio_models(ctx: Ctx) -> AudioModels:
    if ctx.engines.tts is None:
        return AudioModels(models=[])
    return AudioModels(models=[AudioModel(id=name, name=name) for name in (*OPENAI_TTS_MODELS, LOCAL_TTS_MODEL)])


@router.get("/v1/audio/voices", summary="Local voices and the OpenAI voice names mapped to them")
async def audio_voices(ctx: Ctx) -> Voices:
    tts = ctx.engines.tts
    if tts is None:
        return Voices(voices=[])
    infos = tts.voices()
    voices = [
        Voice(
            id=v.name,
            name=v.description or v.name,
            languages=list(v.languages),
            speakers=list(v.speakers),
            maps_to=None,
        )
        for v in infos
    ]
    default = tts.default_voice
    for name in OPENAI_VOICES:
        choice = choose_voice(name, ctx.http.voice_map)
        target = choice.voice or default
        if choice.speaker:
            target += f":{choice.speaker}"
        voices.append(Voice(id=name, name=f"{name} ({target})", maps_to=target))
    return Voices(voices=voices)
