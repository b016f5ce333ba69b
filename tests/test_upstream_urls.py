"""Upstream URLs from the operator: schemes, defaults, and keys that never show."""

from __future__ import annotations

import logging

import pytest

from wyoming_minerva.upstream import UpstreamKind, UpstreamSettings, parse_upstream_url
from wyoming_minerva.upstream.errors import UpstreamConfigError

KEY = "sk-very-secret-key"


def test_http_urls_are_openai_compatible_with_v1_by_default() -> None:
    url = parse_upstream_url("http://gpu.lan:10800", api_key=KEY)
    assert url.kind is UpstreamKind.OPENAI
    assert url.base_url == "http://gpu.lan:10800/v1"
    assert parse_upstream_url("https://api.example.com/openai/v1/").base_url == "https://api.example.com:443/openai/v1"
    assert parse_upstream_url("http://[::1]:8000/v1").label == "http://[::1]:8000/v1"
    assert parse_upstream_url("HTTP://Gpu.lan/v1").base_url == "http://gpu.lan:80/v1"


def test_tcp_urls_are_wyoming_and_need_a_port() -> None:
    url = parse_upstream_url("tcp://gpu.lan:10300", api_key=KEY)
    assert (url.kind, url.host, url.port, url.path) == (UpstreamKind.WYOMING, "gpu.lan", 10300, "")
    assert url.label == "tcp://gpu.lan:10300"
    with pytest.raises(UpstreamConfigError, match="needs a port"):
        parse_upstream_url("tcp://gpu.lan")
    with pytest.raises(UpstreamConfigError, match="no path"):
        parse_upstream_url("tcp://gpu.lan:10300/asr")


@pytest.mark.parametrize(
    "text",
    ["unix:///run/asr.sock", "ftp://x:21", "file:///etc/passwd", "ws://gpu:10800/v1", "gpu.lan:10300", "stdio://"],
)
def test_only_http_https_and_tcp_are_accepted(text: str) -> None:
    with pytest.raises(UpstreamConfigError, match=r"only http://, https://.*tcp://"):
        parse_upstream_url(text)


@pytest.mark.parametrize("text", ["http://:10800/v1", "tcp://:10300", "http://gpu:99999/v1", "http://gpu/v1?x=1"])
def test_malformed_urls_are_refused(text: str) -> None:
    with pytest.raises(UpstreamConfigError):
        parse_upstream_url(text)


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(UpstreamConfigError) as caught:
        parse_upstream_url(f"https://user:{KEY}@api.example.com/v1")
    assert KEY not in str(caught.value)
    assert "--upstream-api-key" in str(caught.value)


def test_the_key_never_shows_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    url = parse_upstream_url("https://api.example.com/v1", api_key=KEY)
    assert url.api_key == KEY
    settings = UpstreamSettings(stt=(url,))
    logging.getLogger("test").info("upstream %s %r %s", url, url, settings)
    for text in (str(url), repr(url), repr(settings), url.label, caplog.text):
        assert KEY not in text
    assert "api key set" in repr(url)


def test_the_key_is_only_for_http_upstreams() -> None:
    assert parse_upstream_url("tcp://gpu:10300", api_key=KEY).api_key is None
    assert parse_upstream_url("http://gpu:10800/v1", api_key="").api_key is None


def test_settings_validation() -> None:
    UpstreamSettings().validate()
    with pytest.raises(UpstreamConfigError, match="--no-local-fallback"):
        UpstreamSettings(local_fallback=False).validate()
    with pytest.raises(UpstreamConfigError, match="at least 1"):
        UpstreamSettings(failures=0).validate()
    with pytest.raises(UpstreamConfigError, match="positive"):
        UpstreamSettings(probe_timeout=0).validate()
