"""Every HTTP error in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.

Engine errors (MinervaError) map to a status by class; FastAPI's validation errors become 400 with the
offending parameter named, like OpenAI's own; unknown routes and methods get the envelope too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    AudioFormatError,
    AudioTooLongError,
    BadRequestError,
    InferenceError,
    MinervaError,
    ModelLoadError,
    ModelNotFoundError,
    QueueFullError,
)
from ..upstream import ServiceUnavailableError, UpstreamError

_LOGGER = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
CLIENT_CLOSED = 499  # nginx's status for "the client went away first"; never reaches the client


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """An error with its HTTP status, raised by routes and dependencies."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def envelope(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    code: str | None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(envelope(status, message, code, param), status_code=status, headers=dict(headers or {}))


def busy_headers(retry_after: str | None = None) -> dict[str, str]:
    return {"Retry-After": retry_after or str(RETRY_AFTER_SECONDS)}


def from_minerva(err: MinervaError, param: str | None = None) -> ApiError:
    """The HTTP form of an engine error (the message is the engine's, written for clients)."""
    if isinstance(err, QueueFullError):
        return ApiError(429, str(err), err.code, headers=busy_headers())
    if isinstance(err, ServiceUnavailableError):  # no upstream can serve and the local engine is off
        return ApiError(503, str(err), err.code, headers=busy_headers(err.retry_after_header))
    if isinstance(err, AudioTooLongError):
        return ApiError(413, str(err), err.code, param or "file")
    if isinstance(err, AudioFormatError):
        return ApiError(415, str(err), err.code, param or "file")
    if isinstance(err, BadRequestError):
        return ApiError(400, str(err), err.code, param)
    if isinstance(err, ModelNotFoundError):
        return ApiError(404, str(err), err.code, param)
    if isinstance(err, ModelLoadError):
        return ApiError(503, str(err), err.code, headers=busy_headers())
    if isinstance(err, InferenceError):
        return ApiError(500, str(err), err.code)
    if isinstance(err, UpstreamError):  # failed after its answer began (before, the request moved on)
        return ApiError(502, str(err), err.code)
    return ApiError(500, "internal error: see the server log", "internal_error")


def _note(request: Request, status: int, code: str | None) -> None:
    """Leave the code where the metrics middleware finds it (scope["state"], i.e. request.state)."""
    request.state.error_code = code or f"http_{status}"


def _respond(request: Request, err: ApiError) -> JSONResponse:
    _note(request, err.status, err.code)
    return error_response(err.status, err.message, err.code, err.param, err.headers)


def _param(loc: tuple[int | str, ...]) -> str | None:
    """The client's name for a failing field: ("body", "speed") → "speed"; the whole body → None."""
    names = [str(part) for part in loc if part not in ("body", "query", "path", "header", "form")]
    return ".".join(names) or None


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _respond(request, exc)

    async def minerva_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MinervaError)
        err = from_minerva(exc)
        if err.status >= 500:
            _LOGGER.warning("%s %s: %s (%s)", request.method, request.url.path, exc, exc.code)
        return _respond(request, err)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        first = errors[0] if errors else {}
        param = _param(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid request"))
        if first.get("type") == "missing":
            message = f"'{param}' is required" if param else "a request body is required"
        elif first.get("type") == "json_invalid":
            message = "the request body is not valid JSON"
        elif param:
            message = f"'{param}': {message}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return _respond(request, ApiError(400, message, "invalid_value" if param else "invalid_request", param))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        return _respond(request, ApiError(exc.status_code, message, code, headers=exc.headers))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        _LOGGER.exception("%s %s failed", request.method, request.url.path)
        return _respond(request, ApiError(500, "internal error: see the server log", "internal_error"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(MinervaError, minerva_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in {
        400: "Invalid request (a parameter is named in `error.param`)",
        401: "Missing or wrong API key",
        413: "Upload larger than --max-upload-mb, or audio longer than --http-max-audio-seconds",
        429: "Inference queue or HTTP concurrency limit full; retry after `Retry-After` seconds",
    }.items()
}
