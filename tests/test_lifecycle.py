"""The real `python -m wyoming_minerva` process: SIGTERM/SIGINT → graceful exit 0, port in use → one clear line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from asr_helpers import read_until, send_audio, send_chunks
from conftest import Speech, normalise, wyoming_client
from wyoming.asr import Transcribe
from wyoming.audio import AudioStop
from zeroconf_helpers import loopback_browser, unique_name

from wyoming_minerva.discovery import instance_name
from wyoming_minerva.health import Target, Unhealthy, check
from wyoming_minerva.settings import ListenUri, Service

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def refused(port: int, timeout: float = 10) -> None:
    """Until connecting to the port is refused (the listener is closed)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return
            writer.close()
            await asyncio.sleep(0.05)


class Minerva:
    """One server process we started, with its output collected."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    async def wait_ready(self, timeout: float = 60) -> None:
        target = Target(ListenUri("tcp", "127.0.0.1", self.port), Service.ASR)
        async with asyncio.timeout(timeout):
            while True:
                assert self.proc.returncode is None, "the server exited before it was ready"
                with contextlib.suppress(Unhealthy):
                    await check(target, timeout=1)
                    return
                await asyncio.sleep(0.2)

    async def stop(self, sig: signal.Signals, timeout: float = 30) -> tuple[int, str]:
        self.proc.send_signal(sig)
        return await self.wait(timeout)

    async def wait(self, timeout: float = 30) -> tuple[int, str]:
        _, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()


@asynccontextmanager
async def minerva(*args: str, port: int | None = None) -> AsyncIterator[Minerva]:
    port = port or free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wyoming_minerva",
        "--asr-uri",
        f"tcp://127.0.0.1:{port}",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Minerva(proc, port)
    finally:
        if proc.returncode is None:  # a failed test: do not leave it behind
            proc.kill()
            await proc.wait()


async def test_one_process_announces_each_service_and_withdraws_them_on_sigterm() -> None:
    name = unique_name()
    tts_port = free_port()
    asr, tts = instance_name(name, Service.ASR), instance_name(name, Service.TTS)
    async with (
        loopback_browser() as browser,
        minerva("--tts-uri", f"tcp://127.0.0.1:{tts_port}", "--zeroconf", name) as server,
    ):
        await server.wait_ready()
        await browser.wait_for({asr, tts}, timeout=15)
        assert await browser.resolve(asr) == (server.port, ["127.0.0.1"])
        assert await browser.resolve(tts) == (tts_port, ["127.0.0.1"])
        code, err = await server.stop(signal.SIGTERM)
        assert code == 0, err
        assert "Traceback" not in err
        await browser.wait_for({asr, tts}, gone=True, timeout=5)


async def test_sigint_exits_0_and_stops_listening() -> None:
    async with minerva("--no-zeroconf") as server:
        await server.wait_ready()
        code, err = await server.stop(signal.SIGINT)
        assert code == 0, err
        assert "Traceback" not in err
        await refused(server.port, timeout=0.1)


async def test_an_in_flight_transcription_finishes_after_sigterm(speech: Speech) -> None:
    async with minerva("--no-zeroconf", "--shutdown-grace", "30", "--stt-language", "en") as server:
        await server.wait_ready()
        async with wyoming_client(server.port) as client:
            await client.write_event(Transcribe(language="en").event())
            await send_audio(client, speech.say("Turn on the kitchen lights."), speech.rate)
            server.proc.send_signal(signal.SIGTERM)
            await refused(server.port)  # no new connections once stopping...
            # ...but the request already under way is answered.
            await send_chunks(client, speech.silence(1.0), speech.rate)
            await client.write_event(AudioStop().event())
            events = await read_until(client, "transcript")
            assert "kitchen lights" in normalise(events[-1].data["text"])
        code, err = await server.wait()
        assert code == 0, err


async def test_a_connection_left_open_is_closed_after_the_grace_time() -> None:
    async with minerva("--no-zeroconf", "--shutdown-grace", "1.5") as server:
        await server.wait_ready()
        async with wyoming_client(server.port):
            started = time.monotonic()
            code, err = await server.stop(signal.SIGTERM)
            elapsed = time.monotonic() - started
        assert code == 0, err
        assert 1.4 <= elapsed < 15, elapsed


async def test_port_in_use_gives_one_clear_line_and_a_nonzero_exit() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with minerva("--no-zeroconf", port=port) as server:
            code, err = await server.wait(timeout=60)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"127.0.0.1:{port}" in lines[0] and "address already in use" in lines[0].lower()
    assert "Traceback" not in err


async def test_the_app_builds_the_live_hub_the_routes_use_and_closes_it() -> None:
    from wyoming_minerva.app import App
    from wyoming_minerva.settings import AsrSettings, DiscoverySettings, HttpSettings, Settings
    from wyoming_minerva.stt.live.types import SessionOptions

    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0),
        asr=AsrSettings(models=("tiny.en",)),
        discovery=DiscoverySettings(enabled=False),
    )
    app = App(settings)
    await app.start()
    try:
        hub = app.engines.live
        assert hub is not None
        session = hub.open(SessionOptions(), peer="test")  # as the WebSocket routes open them
        assert hub.sessions == 1
    finally:
        await app.stop()
    assert app.engines.live is None and session.closed and hub.sessions == 0
