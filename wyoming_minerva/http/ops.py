"""Operations: /health (alive, always open), /ready (models loadable, queue not saturated, upstreams), /metrics."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from ..errors import ModelNotFoundError
from ..tts.voices import UnknownVoiceError
from ..upstream import UpstreamPool
from .deps import Ctx, HttpContext, upstream_pools
from .errors import busy_headers, envelope

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    detail: str


class BackendState(BaseModel):
    """One backend of an upstream pool (--stt-upstream, --tts-upstream), or `local` while it is the fallback."""

    service: Literal["stt", "tts"]
    backend: str  # the URL without any secret, or "local"
    state: Literal["unknown", "up", "down"]
    reason: str  # why it is down (or its last failure); "" when fine
    consecutive_failures: int
    seconds_in_state: float
    last_probe_ms: float | None
    requests: dict[str, int]  # by outcome: ok, failed, rejected, cancelled


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]
    backends: list[BackendState] = Field(default_factory=list)


@router.get("/health", summary="Alive (no API key needed)")
async def health() -> Health:
    return Health()


def _stt_check(ctx: HttpContext) -> Check:
    """Every program: loaded, or found locally (a lookup, never a download or an assembly)."""
    stt = ctx.engines.stt
    assert stt is not None
    details: list[str] = []
    for program in stt.programs:
        if stt.is_loaded(program):
            details.append(f"{program.name} loaded")
            continue
        try:
            stt.check_program(program)
        except ModelNotFoundError as err:
            return Check(ok=False, detail=str(err))
        details.append(f"{program.name} available")
    return Check(ok=True, detail="; ".join(details))


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


_SERVICE_NAMES = {"stt": "speech_to_text", "tts": "text_to_speech"}


def _upstream_check(pool: UpstreamPool[Any]) -> Check:
    """Ready while an upstream is in rotation, or the local engine stands behind them (a down upstream is not a
    reason to leave a load balancer while the local models answer)."""
    serving = [backend.label for backend in pool.in_rotation()]
    detail = f"in rotation: {', '.join(serving) or 'none'}"
    if pool.local_fallback:
        return Check(ok=True, detail=f"{detail}; the local engine answers when none can")
    return Check(ok=bool(serving), detail=f"{detail}; no local fallback (--no-local-fallback)")


def _backends(pool: UpstreamPool[Any]) -> list[BackendState]:
    return [
        BackendState(
            service=snap.service,  # type: ignore[arg-type]
            backend=snap.backend,
            state=snap.state.value,
            reason=snap.reason,
            consecutive_failures=snap.consecutive_failures,
            seconds_in_state=round(snap.seconds_in_state, 3),
            last_probe_ms=None if snap.last_probe_ms is None else round(snap.last_probe_ms, 1),
            requests={outcome.value: count for outcome, count in snap.requests.items()},
        )
        for snap in pool.snapshot()
    ]


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
    backends: list[BackendState] = []
    for pool in upstream_pools(ctx.engines):
        checks[f"{_SERVICE_NAMES.get(pool.service, pool.service)}_upstreams"] = _upstream_check(pool)
        backends += _backends(pool)
    ready = all(check.ok for check in checks.values())
    return Readiness(status="ready" if ready else "not_ready", checks=checks, backends=backends)


@router.get(
    "/ready",
    summary="Ready: models loaded or loadable, queue not saturated, an upstream or the local engine to answer "
    "(503 otherwise); lists every upstream backend with its state",
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
