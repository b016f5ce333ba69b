"""The web console: `GET /` (one page, its script and style from console_static/, no CDN, no build step) and
`GET /v1/console/status`, the JSON the page polls: services (address, zeroconf name, program and models, loaded
or not) and every figure of /metrics in JSON (histograms as count, sum, p50 and p95).

The page itself holds no secret and is served without the API key (create_app gives the guard PAGE_PATHS as
open paths); everything it shows comes from the API, with the key the browser keeps for the session.
"""

from __future__ import annotations

import hashlib
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel, Field

from .. import __version__
from ..discovery import instance_name
from ..settings import ListenUri, Service
from ..wake.service import WakeWords
from .deps import Ctx, HttpContext

STATIC = Path(__file__).with_name("console_static")
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/console/app.css": ("app.css", "text/css; charset=utf-8"),
}
PAGE_PATHS = frozenset(ASSETS)  # served without the API key (the guard's open paths)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)

page_router = APIRouter(include_in_schema=False)
status_router = APIRouter(tags=["console"])


class ModelState(BaseModel):
    name: str
    loaded: bool


class ServiceCard(BaseModel):
    service: str = Field(description="asr, tts, wake or http")
    address: str | None = Field(description="Where it listens (tcp://…, unix://…, http://…)")
    zeroconf: str | None = Field(description="Its zeroconf instance name, when advertised")
    program: str
    models: list[ModelState]
    running: bool


class ConsoleStatus(BaseModel):
    version: str
    uptime_seconds: float
    api_key: bool = Field(description="Whether the server asks for an API key")
    services: list[ServiceCard]
    metrics: dict[str, Any] = Field(description="Every /metrics family: name → {type, help, samples}")
    speakers: None = None  # speaker recognition: null until this build serves it
    upstreams: None = None  # upstream servers: null until this build serves them


ServiceDirectory = Callable[[HttpContext], list[ServiceCard]]


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@dataclass(frozen=True)
class Console:
    assets: dict[str, Asset]
    services: ServiceDirectory
    started: float


def install(app: FastAPI, services: ServiceDirectory | None = None, dependencies: Sequence[Any] = ()) -> None:
    """Serve the console on `app`. `services`: where the services really listen (the App knows bound ports and
    zeroconf names); without it they are read from the settings."""
    http = app.state.minerva
    assert isinstance(http, HttpContext)
    assets = {}
    for path, (name, media_type) in ASSETS.items():
        body = (STATIC / name).read_bytes()
        if path == "/" and http.http.api_key:  # the page asks for the key before its first request (no 401s)
            body = body.replace(b'<html lang="en">', b'<html lang="en" data-api-key="required">', 1)
        assets[path] = Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    app.state.minerva_console = Console(assets, services or services_from_settings, time.time())
    app.include_router(page_router)
    app.include_router(status_router, dependencies=list(dependencies))


def _asset(request: Request, path: str) -> Response:
    console = request.app.state.minerva_console
    assert isinstance(console, Console)
    asset = console.assets[path]
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if path == "/":
        headers |= {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@page_router.get("/")
async def page(request: Request) -> Response:
    return _asset(request, "/")


@page_router.get("/console/app.js")
async def script(request: Request) -> Response:
    return _asset(request, "/console/app.js")


@page_router.get("/console/app.css")
async def style(request: Request) -> Response:
    return _asset(request, "/console/app.css")


@status_router.get("/v1/console/status", summary="Services and live figures for the console (JSON twin of /metrics)")
async def status(request: Request, ctx: Ctx) -> ConsoleStatus:
    console = request.app.state.minerva_console
    assert isinstance(console, Console)
    return ConsoleStatus(
        version=__version__,
        uptime_seconds=round(time.time() - console.started, 1),
        api_key=bool(ctx.http.api_key),
        services=console.services(ctx),
        metrics=metrics_json(ctx.metrics.registry),
    )


# ---- services ----------------------------------------------------------------------------------


def services_from_settings(ctx: HttpContext) -> list[ServiceCard]:
    settings = ctx.settings
    uris = settings.services
    cards = [
        _asr(ctx, uris.get(Service.ASR)),
        _tts(ctx, uris.get(Service.TTS)),
        _wake(ctx, uris.get(Service.WAKE)),
    ]
    cards.append(ServiceCard(service="http", address=http_address(ctx.http.host, ctx.http.port), zeroconf=None,
                             program=f"wyoming-minerva {__version__}", models=[], running=True))  # fmt: skip
    return cards


def http_address(host: str, port: int | None) -> str | None:
    """The API's URL as a person would open it: the host name for a wildcard address, IPv6 in brackets."""
    if port is None:
        return None
    shown = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _zeroconf(ctx: HttpContext, service: Service, uri: ListenUri | None) -> str | None:
    discovery = ctx.settings.discovery
    if uri is None or uri.scheme != "tcp" or not discovery.enabled:
        return None
    return instance_name(discovery.name or socket.gethostname().split(".")[0], service)


def _card(
    ctx: HttpContext, service: Service, uri: ListenUri | None, program: str, models: list[ModelState]
) -> ServiceCard:
    return ServiceCard(
        service=service.value,
        address=str(uri) if uri else None,
        zeroconf=_zeroconf(ctx, service, uri),
        program=program,
        models=models,
        running=uri is not None,
    )


def _asr(ctx: HttpContext, uri: ListenUri | None) -> ServiceCard:
    stt = ctx.engines.stt
    if stt is None:
        return _card(ctx, Service.ASR, uri, "none", [])
    programs = getattr(stt, "programs", None)
    if programs:
        models = [ModelState(name=p.name, loaded=ctx.manager.is_loaded(f"stt:{p.name}")) for p in programs]
    else:
        models = [ModelState(name=stt.model_name, loaded=ctx.manager.is_loaded(stt.key))]
    return _card(ctx, Service.ASR, uri, "faster-whisper", models)


def _tts(ctx: HttpContext, uri: ListenUri | None) -> ServiceCard:
    tts = ctx.engines.tts
    if tts is None:
        return _card(ctx, Service.TTS, uri, "none", [])
    loaded = [key for key in ctx.manager.stats().loaded if key.startswith("piper:")]
    models = [
        ModelState(name=v.name, loaded=any(key.endswith(f"/{v.name}.onnx") for key in loaded)) for v in tts.voices()
    ]
    default = tts.default_voice
    models.sort(key=lambda m: (m.name != default, m.name))  # the default first
    return _card(ctx, Service.TTS, uri, "piper", models)


def _wake(ctx: HttpContext, uri: ListenUri | None) -> ServiceCard:
    wake = getattr(ctx.engines, "wake", None)  # EngineSet names only stt and tts
    if not isinstance(wake, WakeWords):
        return _card(ctx, Service.WAKE, uri, "none", [])
    default = wake.catalog.default
    infos = sorted(wake.models(), key=lambda i: (i.name != default, i.name))
    models = [ModelState(name=i.name, loaded=ctx.manager.is_loaded(i.key)) for i in infos]
    return _card(ctx, Service.WAKE, uri, "openWakeWord + microWakeWord", models)


# ---- /metrics as JSON --------------------------------------------------------------------------


def metrics_json(registry: CollectorRegistry) -> dict[str, Any]:
    families: dict[str, Any] = {}
    for family in registry.collect():
        if family.type == "histogram":
            samples = _histograms(family.samples)
        else:
            samples = [
                {"labels": dict(s.labels), "value": s.value} for s in family.samples if not s.name.endswith("_created")
            ]
        families[family.name] = {"type": family.type, "help": family.documentation, "samples": samples}
    return families


def _histograms(samples: Sequence[Any]) -> list[dict[str, Any]]:
    """Per label set: count, sum, and p50/p95 interpolated in the buckets (as Prometheus' histogram_quantile)."""
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for s in samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        entry = series.setdefault(tuple(sorted(labels.items())), {"labels": labels, "buckets": []})
        if s.name.endswith("_bucket"):
            entry["buckets"].append((float(s.labels["le"]), float(s.value)))
        elif s.name.endswith("_count"):
            entry["count"] = s.value
        elif s.name.endswith("_sum"):
            entry["sum"] = s.value
    out = []
    for entry in series.values():
        buckets = sorted(entry.pop("buckets"))
        entry.setdefault("count", buckets[-1][1] if buckets else 0)
        entry.setdefault("sum", 0.0)
        entry["p50"] = quantile(0.5, buckets)
        entry["p95"] = quantile(0.95, buckets)
        out.append(entry)
    return out


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """`buckets`: (upper bound, cumulative count), ascending, the last +Inf. None when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the largest finite bucket: its bound is all that is known
            return round(lower + (bound - lower) * (rank - below) / max(count - below, 1e-12), 4)
        lower, below = bound, count
    return lower
