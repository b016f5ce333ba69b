"""Operator upstream URLs: `http(s)://host:port/v1` (OpenAI-compatible) or `tcp://host:port` (Wyoming).

Upstreams come from flags and the environment only, never from a client. The API key travels beside the URL
and never appears in a repr, a log line, a metric label or /ready: everything prints `label`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import UpstreamConfigError

DEFAULT_HTTP_PATH = "/v1"


class UpstreamKind(enum.Enum):
    OPENAI = "openai"  # an OpenAI-compatible HTTP API (another minerva, speaches, LocalAI, OpenAI itself…)
    WYOMING = "wyoming"  # a Wyoming server (another minerva, wyoming-faster-whisper, wyoming-piper…)


_KINDS = {"http": UpstreamKind.OPENAI, "https": UpstreamKind.OPENAI, "tcp": UpstreamKind.WYOMING}


@dataclass(frozen=True)
class UpstreamUrl:
    kind: UpstreamKind
    scheme: str
    host: str
    port: int
    path: str = ""  # the API base path for HTTP ("/v1"); empty for Wyoming
    api_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        """What logs, metrics and /ready show: the URL without any secret."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + self.path

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        key = ", api key set" if self.api_key else ""
        return f"UpstreamUrl({self.label}{key})"


def parse_upstream_url(text: str, api_key: str | None = None) -> UpstreamUrl:
    """UpstreamConfigError (naming the problem, never the key) for anything but http, https or tcp with a host.

    HTTP without a path gets `/v1`; the key is used only for http(s) upstreams. Credentials, queries and fragments
    in the URL are refused: a key in a URL ends up in shell history and process listings.
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as err:
        raise UpstreamConfigError(f"upstream {_shown(text)!r}: {err}") from err
    kind = _KINDS.get(parts.scheme.lower())
    if kind is None:
        raise UpstreamConfigError(
            f"upstream {_shown(text)!r}: only http://, https:// (OpenAI-compatible) and tcp:// (Wyoming) are supported"
        )
    if parts.username is not None or parts.password is not None:
        raise UpstreamConfigError(
            f"upstream {_shown(text)!r}: no credentials in the URL; use --upstream-api-key or MINERVA_UPSTREAM_API_KEY"
        )
    if parts.query or parts.fragment:
        raise UpstreamConfigError(f"upstream {_shown(text)!r}: a query or fragment is not allowed")
    if not parts.hostname:
        raise UpstreamConfigError(f"upstream {_shown(text)!r}: needs a host")
    scheme = parts.scheme.lower()
    if kind is UpstreamKind.WYOMING:
        if port is None:
            raise UpstreamConfigError(
                f"upstream {_shown(text)!r}: a tcp:// upstream needs a port (ASR 10300, TTS 10200)"
            )
        if parts.path not in ("", "/"):
            raise UpstreamConfigError(f"upstream {_shown(text)!r}: a tcp:// upstream has no path")
        return UpstreamUrl(kind, scheme, parts.hostname, port)
    path = parts.path.rstrip("/") or DEFAULT_HTTP_PATH
    default_port = 443 if scheme == "https" else 80
    return UpstreamUrl(kind, scheme, parts.hostname, port or default_port, path, api_key or None)


def _shown(text: str) -> str:
    """The URL as given, with any userinfo cut out (an error message must not echo a password)."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        return text.strip()[:200]
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}://{authority}{slash}{tail}"[:200]
