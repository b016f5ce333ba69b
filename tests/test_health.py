"""The health command against live servers on loopback: exit 0 only when the expected program answers in time."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from wyoming_minerva.app import App
from wyoming_minerva.health import Target, Unhealthy, check, targets_from_settings
from wyoming_minerva.settings import DiscoverySettings, ListenUri, Service, Settings

pytestmark = pytest.mark.timeout(90)


async def health(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run `python -m wyoming_minerva.health ARGS` as Docker would; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wyoming_minerva.health",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@asynccontextmanager
async def live_asr() -> AsyncIterator[int]:
    """The real app with its ASR service on 127.0.0.1, port 0 (describe needs no model load)."""
    app = App(Settings(asr_uri=ListenUri("tcp", "127.0.0.1", 0), discovery=DiscoverySettings(enabled=False)))
    await app.start()
    try:
        yield app.port(Service.ASR)
    finally:
        await app.stop()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never answers: a hung service."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_expected_program_answering_exits_0() -> None:
    async with live_asr() as port:
        code, out, err = await health(f"tcp://127.0.0.1:{port}", "--expect", "asr")
    assert code == 0, err
    assert out.strip() == f"ok: asr at tcp://127.0.0.1:{port}: tiny.en, base"  # one program per model


async def test_another_program_answering_exits_1() -> None:
    async with live_asr() as port:
        code, out, err = await health(f"tcp://127.0.0.1:{port}", "--expect", "tts")
    assert code == 1
    assert out == ""
    assert "no installed tts program" in err


async def test_nothing_listening_exits_1_with_the_reason() -> None:
    async with live_asr() as port:
        pass  # the port was just closed: nothing listens there now
    code, _, err = await health(f"tcp://127.0.0.1:{port}", "--expect", "asr", "--timeout", "2")
    assert code == 1
    assert "Connection refused" in err


async def test_a_hung_service_fails_within_the_timeout() -> None:
    async with silent_server() as port:
        started = time.monotonic()
        with pytest.raises(Unhealthy, match=r"no answer to describe within 0\.5 s"):
            await check(Target(ListenUri("tcp", "127.0.0.1", port), Service.ASR), timeout=0.5)
        assert time.monotonic() - started < 3
        code, _, err = await health(f"tcp://127.0.0.1:{port}", "--expect", "wake", "--timeout", "1")
    assert code == 1
    assert "within 1 s" in err


async def test_unix_socket_service(tmp_path: Path) -> None:
    path = tmp_path / "asr.sock"
    app = App(Settings(asr_uri=ListenUri("unix", path=str(path)), discovery=DiscoverySettings(enabled=False)))
    await app.start()
    try:
        code, out, err = await health(f"unix://{path}", "--expect", "asr")
    finally:
        await app.stop()
    assert code == 0, err
    assert "tiny.en" in out


async def test_usage_errors_exit_2() -> None:
    code, _, err = await health("tcp://127.0.0.1:1")
    assert code == 2 and "--expect" in err
    code, _, err = await health("--expect", "asr")
    assert code == 2 and "URI" in err


def test_targets_from_settings_reach_wildcard_binds_over_loopback_and_skip_stdio() -> None:
    settings = Settings(
        asr_uri=ListenUri("tcp", "0.0.0.0", 10300),
        tts_uri=ListenUri("tcp", "::", 10200),
        wake_uri=ListenUri("tcp", "192.168.1.5", 10400),
    )
    assert [(str(t.uri), t.expect) for t in targets_from_settings(settings)] == [
        ("tcp://127.0.0.1:10300", Service.ASR),
        ("tcp://[::1]:10200", Service.TTS),
        ("tcp://192.168.1.5:10400", Service.WAKE),
    ]
    assert targets_from_settings(Settings(asr_uri=ListenUri("stdio"))) == []


async def test_without_uri_checks_the_services_the_environment_configures() -> None:
    async with live_asr() as port:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wyoming_minerva.health",
            env={"MINERVA_ASR_URI": f"tcp://0.0.0.0:{port}", "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == f"ok: asr at tcp://127.0.0.1:{port}: tiny.en, base"
