"""Operations: /health (alive, always open), /ready (models loadable, queue not saturated), /metrics."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from ..errors import ModelNotFoundError
from ..models.piper_voices import UnknownVoiceError
from ..models.whisper import resolve_model
from .deps import Ctx, HttpContext
from .errors import busy_headers, envelope

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


@router.get("/health", summary="Alive (no API key needed)")
async def health() -> Health:
    return Health()


def _stt_check(ctx: HttpContext) -> Check:
    stt = ctx.engines.stt
    assert stt is not None
    if ctx.manager.is_loaded(stt.key):
        return Check(ok=True, detail=f"{stt.model_name} loaded")
    try:
        resolve_model(stt.settings.model, stt.data_dirs, local_files_only=True)  # a lookup, never a download
    except ModelNotFoundError as err:
        if stt.local_files_only:
            return Check(ok=False, detail=str(err))
        return Check(ok=True, detail=f"{stt.model_name} will be downloaded on first use")
    return Check(ok=True, detail=f"{stt.model_name} installed")  # where is for the log, not for clients


def _tts_check(ctx: HttpContext) -> Check:
    tts = ctx.engines.tts
    assert tts is not None
    try:
        name, files = tts.choose()
    except UnknownVoiceError as err:
        return Check(ok=False, detail=str(err))
    if files is None:
        return Check(ok=True, detail=f"{name} will be downloaded on first use")
    return Check(ok=True, detail=f"{name} installed")


def readiness(ctx: HttpContext) -> Readiness:
    stats = ctx.manager.stats()
    checks = {
        "queue": Check(
            ok=stats.queue_depth < stats.capacity,
            detail=f"{stats.queue_depth} of {stats.capacity} inference slots in use",
        ),
        "http": Check(
            ok=ctx.gate.active < ctx.gate.limit,
            detail=f"{ctx.gate.active} of {ctx.gate.limit} audio requests in progress",
        ),
    }
    if ctx.engines.stt is not None:
        checks["speech_to_text"] = _stt_check(ctx)
    if ctx.engines.tts is not None:
        checks["text_to_speech"] = _tts_check(ctx)
    ready = all(check.ok for check in checks.values())
    return Readiness(status="ready" if ready else "not_ready", checks=checks)


@router.get(
    "/ready",
    summary="Ready: models loaded or loadable, queue not saturated (503 otherwise)",
    responses={503: {"model": Readiness, "description": "Not ready (see checks); body also has `error`"}},
)
async def ready(ctx: Ctx) -> Any:
    result = readiness(ctx)
    if result.status == "ready":
        return result
    failed = ", ".join(name for name, check in result.checks.items() if not check.ok)
    body = {**result.model_dump(), **envelope(503, f"not ready: {failed}", "not_ready")}
    return JSONResponse(body, status_code=503, headers=busy_headers())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(ctx: Ctx) -> Response:
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
