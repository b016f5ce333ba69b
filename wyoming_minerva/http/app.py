"""create_app(settings, engines, manager): the FastAPI app, one module per area of routes.

The app owns a model catalog (app.state.minerva_catalog, installs.py): whoever runs the app awaits its
`aclose()` once the server has stopped (App.stop does).

Middleware, outermost first: CORS (answers preflights itself), metrics (sees every status), the request
guard (API key, body cap and timeout, concurrency once the body is complete), then the routes.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .. import __version__
from ..runtime.manager import ModelManager
from ..settings import HttpSettings, Settings
from . import catalog, console, installs, ops, speakers_routes, speech, stream_routes, transcriptions
from .console import ServiceDirectory
from .deps import EngineSet, HttpContext, api_key_schemes, upstream_pools
from .errors import ErrorEnvelope, install_error_handlers
from .guard import Gate, RequestGuard
from .metrics import Metrics, MetricsMiddleware

BODY_SLACK_BYTES = 64 * 1024  # multipart boundaries and the small form fields beside the file

DESCRIPTION = """OpenAI-compatible speech-to-text and text-to-speech on local models (faster-whisper, Piper),
sharing one model manager with the Wyoming services of the same process.

Every error has OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}`."""


def create_app(
    settings: Settings, engines: EngineSet, manager: ModelManager, services: ServiceDirectory | None = None
) -> FastAPI:
    """`services`: where the services really listen, for the console (the App knows bound ports and zeroconf
    names); without it the console reads them from the settings."""
    http = settings.http or HttpSettings()
    app = FastAPI(
        title="wyoming-minerva",
        version=__version__,
        description=DESCRIPTION,
        debug=False,
    )
    metrics = Metrics(manager)
    metrics.watch_upstreams(upstream_pools(engines))  # minerva_backend_* (--stt-upstream, --tts-upstream)
    gate = Gate(limit=http.max_concurrency or manager.capacity)
    app.state.minerva = HttpContext(settings, http, engines, manager, metrics, gate, created=int(time.time()))

    install_error_handlers(app)
    protected = [Depends(api_key_schemes)] if http.api_key else []
    for module in (transcriptions, speech, catalog, speakers_routes):
        app.include_router(module.router, dependencies=protected)
    app.include_router(ops.router)
    stream_routes.install(app)  # WebSocket speech-to-text and speech, wake events (issue 7)
    models = installs.catalog_for(app.state.minerva, settings.catalog)
    models.on_change.append(installs.rescan_engines(engines))  # installed/removed models: in describe at once
    installs.install(app, models, protected)  # /v1/catalog, /v1/jobs (issue 14)
    console.install(app, services=services, dependencies=protected)  # GET / and /v1/console/status

    max_body = int(http.max_upload_mb * 1024 * 1024) + BODY_SLACK_BYTES
    app.add_middleware(
        RequestGuard,
        api_key=http.api_key,
        max_body_bytes=max_body,
        gate=gate,
        body_timeout=http.body_timeout_seconds,
        open_paths=console.PAGE_PATHS,  # the page asks for the key itself; it holds no data
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if http.cors_origins:
        wildcard = "*" in http.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=["*"] if wildcard else list(http.cors_origins),
            allow_credentials=not wildcard,  # browsers refuse "*" with credentials, and so do we
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],  # DELETE: catalog entries, jobs, speakers
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    _document_errors(app)
    return app


def _document_errors(app: FastAPI) -> None:
    """FastAPI documents validation failures as 422 HTTPValidationError; ours are 400 in the OpenAI envelope."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        envelope_ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {
                        "description": "Invalid request",
                        "content": {"application/json": {"schema": envelope_ref}},
                    }
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        components.setdefault(
            "ErrorEnvelope", ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
