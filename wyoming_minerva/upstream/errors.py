"""Errors of upstream speech servers, and the one a client sees when no backend can serve.

Failover turns on the class: every UpstreamError sends the same request to the next backend. Whether the error also
counts against the upstream's health is a property of the class: a refused connection, a reset, a timeout, a 5xx or a
busy/misconfigured answer (401, 403, 429) does; a 4xx about the request itself (400, 404, 413, 415, 422) does not:
no client can take an upstream out of rotation.
"""

from __future__ import annotations

from ..errors import BadRequestError, MinervaError


class UpstreamError(MinervaError):
    """An upstream could not answer this request; `backend` is its redacted label."""

    code = "upstream_failed"
    counts_as_failure = True

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.reason = message


class UpstreamUnavailable(UpstreamError):
    """Refused, reset, timed out, closed mid-answer, 5xx, busy or a wrong key: try elsewhere, count it."""

    code = "upstream_unavailable"


class UpstreamRejected(UpstreamError, BadRequestError):
    """The upstream is alive but refused this request (a 4xx about the input): try elsewhere, do not count it.

    When no backend is left, this is the answer the client gets (a bad request stays a bad request).
    """

    code = "upstream_rejected"
    counts_as_failure = False


class UpstreamConfigError(MinervaError):
    """An upstream flag that cannot work (reported before anything starts; never echoes a key)."""

    code = "config_error"


class ServiceUnavailableError(MinervaError):
    """No backend can serve now: HTTP 503 with Retry-After, Wyoming `error` with this code."""

    code = "service_unavailable"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (the form HTTP's Retry-After takes)."""
        return str(max(1, round(self.retry_after)))
