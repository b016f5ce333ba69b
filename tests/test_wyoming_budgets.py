"""What one client, or many, may cost the Wyoming services: memory, connections, idle sockets, turns of the loop.

Memory is measured with tracemalloc (numpy's buffers included) around the server, which runs in this process;
fairness is counted in events handled, not timed: the figures under load are in `script/bench attack`.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asr_helpers import asr_server, read_until
from conftest import ENGLISH, Speech, local_stt, normalise, wyoming_client, wyoming_server
from wyoming.info import Info

from wyoming_minerva.budget import AudioBudget
from wyoming_minerva.handlers.asr import AsrHandler
from wyoming_minerva.handlers.info import DescribingHandler
from wyoming_minerva.handlers.server import EventSink, WyomingServer
from wyoming_minerva.handlers.wake import WakeHandler
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings, ListenUri, WakeSettings, WyomingLimits
from wyoming_minerva.wake.service import WakeWords

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024
Header = dict[str, Any]


def frame(event_type: str, data: dict[str, object] | None = None, payload: bytes = b"") -> bytes:
    header: Header = {"type": event_type, "data": data or {}}
    if payload:
        header["payload_length"] = len(payload)
    return json.dumps(header).encode() + b"\n" + payload


async def read_header(reader: asyncio.StreamReader, timeout: float = 10) -> Header | None:
    """The next event (header + data merged, payload skipped); None when the server closed the connection."""
    async with asyncio.timeout(timeout):
        line = await reader.readline()
        if not line:
            return None
        header: Header = json.loads(line)
        extra = await reader.readexactly(header.get("data_length") or 0)
        await reader.readexactly(header.get("payload_length") or 0)
    header["data"] = {**(header.get("data") or {}), **(json.loads(extra) if extra else {})}
    return header


async def peak_traced(action: Callable[[], Awaitable[None]]) -> float:
    """Peak Python + numpy allocations (MiB) while `action` runs, above what was allocated before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await action()
        return (tracemalloc.get_traced_memory()[1] - base) / MIB
    finally:
        tracemalloc.stop()


@asynccontextmanager
async def wake_server() -> AsyncIterator[WyomingServer]:
    manager = ModelManager(workers=1, queue_size=4)
    wake = WakeWords(WakeSettings(models=("okay_nabu",)), manager)
    await wake.preload()
    try:
        async with wyoming_server("wake", lambda sink: WakeHandler(sink, wake)) as server:
            yield server
    finally:
        await wake.close()
        await manager.close()


@asynccontextmanager
async def limited_asr(limits: WyomingLimits, budget: AudioBudget) -> AsyncIterator[WyomingServer]:
    manager = ModelManager(workers=1, queue_size=8)
    settings = AsrSettings(models=ENGLISH)
    stt = local_stt(manager, settings)
    uri = ListenUri("tcp", "127.0.0.1", 0)
    server = WyomingServer("asr", uri, lambda sink: AsrHandler(sink, stt, settings, budget), limits, budget)
    await server.start()
    try:
        yield server
    finally:
        await server.stop_accepting()
        await server.close()
        await manager.close()


# ---- item 2: a chunk that inflates when converted ------------------------------------------------------------


async def test_asr_refuses_a_chunk_over_the_cap_by_its_declared_format_before_converting_it() -> None:
    payload = bytes(4 * MIB)  # declared 1 kHz, 8-bit: 70 minutes of audio, 256 MiB as 16 kHz floats
    async with asr_server() as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

        async def attack() -> None:
            writer.write(frame("audio-start", {"rate": 1000, "width": 1, "channels": 1}))
            writer.write(frame("audio-chunk", {"rate": 1000, "width": 1, "channels": 1}, payload))
            await writer.drain()
            error = await read_header(reader, timeout=30)
            assert error is not None and error["type"] == "error"
            assert error["data"]["code"] == "audio_too_long"

        peak = await peak_traced(attack)
        writer.close()
    assert peak < 40, f"{peak:.0f} MiB allocated for one refused chunk"


async def test_a_large_chunk_under_the_cap_is_converted_and_transcribed(speech: Speech) -> None:
    pcm = speech.say("Turn on the kitchen lights.")  # 22.05 kHz: one chunk of ~100 kB, converted off the loop
    async with asr_server() as (server, _), wyoming_client(server.port) as client:
        await client.write_event(json_event("transcribe", {"language": "en"}))
        await client.write_event(json_event("audio-start", {"rate": speech.rate, "width": 2, "channels": 1}))
        await client.write_event(json_event("audio-chunk", {"rate": speech.rate, "width": 2, "channels": 1}, pcm))
        await client.write_event(json_event("audio-stop"))
        events = await read_until(client, "transcript-stop")
    assert normalise(next(e.data["text"] for e in events if e.type == "transcript")) == "turn on the kitchen lights"


def json_event(event_type: str, data: dict[str, object] | None = None, payload: bytes | None = None) -> Any:
    from wyoming.event import Event

    return Event(event_type, data or {}, payload)


async def test_wake_converts_an_inflating_chunk_a_round_at_a_time() -> None:
    payload = bytes(MIB)  # 1 kHz 8-bit: 17 minutes of audio, over 200 MiB if converted at once
    async with wake_server() as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)

        async def attack() -> None:
            writer.write(frame("audio-start", {"rate": 1000, "width": 1, "channels": 1}))
            writer.write(frame("audio-chunk", {"rate": 1000, "width": 1, "channels": 1}, payload))
            await writer.drain()
            await asyncio.sleep(5)  # the worker chews on it meanwhile

        peak = await peak_traced(attack)
        writer.close()
    assert peak < 40, f"{peak:.0f} MiB allocated for one 1 MiB chunk"


async def test_wake_holds_little_of_a_stream_declaring_an_enormous_format() -> None:
    fmt = {"rate": 384_000, "width": 4, "channels": 32}  # 49 MB per second of audio
    payload = bytes(4 * MIB)
    async with wake_server() as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)

        async def attack() -> None:
            writer.write(frame("audio-start", fmt))
            await writer.drain()
            chunk = frame("audio-chunk", fmt, payload)
            for _ in range(40):  # 160 MiB offered; the server reads on only as fast as it processes
                writer.write(chunk)
                try:
                    async with asyncio.timeout(2):
                        await writer.drain()
                except TimeoutError:
                    break

        peak = await peak_traced(attack)
        writer.close()
    assert peak < 40, f"{peak:.0f} MiB allocated while the client raced ahead"


# ---- item 3: idle connections, too many connections, the buffered-audio budget ----------------------------------


def _info_factory(sink: EventSink) -> DescribingHandler:
    return DescribingHandler(sink, Info)


async def test_connections_without_a_request_are_closed_after_the_idle_timeout() -> None:
    limits = WyomingLimits(idle_timeout_seconds=0.5)
    budget = AudioBudget(limits.max_buffered_audio_bytes)
    async with limited_asr(limits, budget) as server:
        silent = await asyncio.open_connection("127.0.0.1", server.port)
        described = await asyncio.open_connection("127.0.0.1", server.port)
        partial = await asyncio.open_connection("127.0.0.1", server.port)
        working = await asyncio.open_connection("127.0.0.1", server.port)
        described[1].write(frame("describe"))
        partial[1].write(b'{"type": "descr')  # a header that never ends
        working[1].write(frame("transcribe") + frame("audio-start", {"rate": 16000, "width": 2, "channels": 1}))
        assert (await read_header(described[0]))["type"] == "info"  # type: ignore[index]
        for reader, _ in (silent, described, partial):
            assert await read_header(reader, timeout=10) is None  # closed by the server
        # A connection with an utterance under way is not idle, however long it pauses.
        await asyncio.sleep(1.5)
        working[1].write(frame("describe"))
        assert (await read_header(working[0]))["type"] == "info"  # type: ignore[index]
        working[1].write(frame("audio-stop"))
        types = [(await read_header(working[0]))["type"] for _ in range(3)]  # type: ignore[index]
        assert types == ["transcript-start", "transcript", "transcript-stop"]
        assert await read_header(working[0], timeout=10) is None  # answered, then idle: closed
        for _, writer in (silent, described, partial, working):
            writer.close()


async def test_connections_over_the_limit_are_refused_with_server_busy() -> None:
    limits = WyomingLimits(max_connections=3)
    uri = ListenUri("tcp", "127.0.0.1", 0)
    server = WyomingServer("tts", uri, _info_factory, limits)
    await server.start()
    try:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        for _, writer in held:
            writer.write(frame("describe"))
        for reader, _ in held:
            assert (await read_header(reader))["type"] == "info"  # type: ignore[index]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        refused = await read_header(reader)
        assert refused is not None and refused["data"]["code"] == "server_busy"
        assert await read_header(reader) is None
        writer.close()
        held.pop()[1].close()
        await asyncio.sleep(0.3)
        async with wyoming_client(server.port) as client:
            await client.write_event(json_event("describe"))
            assert (await read_until(client, "info", timeout=5))[-1].type == "info"
        assert server.refused_connections == 1
    finally:
        await server.stop_accepting()
        await server.close()


async def test_buffered_audio_beyond_the_process_budget_is_refused_and_given_back() -> None:
    limits = WyomingLimits(max_buffered_audio_mb=8)
    budget = AudioBudget(limits.max_buffered_audio_bytes)
    fifty_seconds = bytes(50 * 32000)  # 16 kHz s16 silence: 1.6 MB held by each utterance
    start = frame("transcribe") + frame("audio-start", {"rate": 16000, "width": 2, "channels": 1})
    async with limited_asr(limits, budget) as server:
        clients = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(6)]
        answers = []
        for reader, writer in clients:  # one after the other: each utterance is held before the next comes
            writer.write(start + frame("audio-chunk", {}, fifty_seconds) + frame("describe"))
            header = await read_header(reader)
            assert header is not None
            answers.append(header["data"].get("code", header["type"]))
            if header["type"] == "error":
                assert (await read_header(reader))["type"] == "info"  # type: ignore[index]
        assert answers == ["info"] * 4 + ["server_busy"] * 2  # 8 MiB hold four such utterances, not five
        assert 0 <= budget.used - 4 * len(fifty_seconds) < 64
        for _, writer in clients:
            writer.close()
        async with asyncio.timeout(10):
            while budget.used:  # noqa: ASYNC110 - polling the budget's own counter
                await asyncio.sleep(0.05)  # every lease given back when its connection ended


# ---- item 6: one connection's pipelined events must not starve the others --------------------------------------


async def test_a_flood_of_pipelined_describes_does_not_starve_another_client() -> None:
    handled: list[str] = []  # who was answered, in order

    def factory(sink: EventSink) -> DescribingHandler:
        def info() -> Info:
            handled.append(sink.peer)
            return Info()

        return DescribingHandler(sink, info)

    async with wyoming_server("tts", factory) as server:
        floods = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        me = f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
        await asyncio.sleep(0.2)  # every connection accepted and waiting for its first event
        for _, flood in floods:
            flood.write(frame("describe") * 2000)  # and never read the answers
        writer.write(frame("describe"))  # ours comes right after the flood
        assert (await read_header(reader, timeout=30))["type"] == "info"  # type: ignore[index]
        others = handled.index(me)
        assert others < 500, f"{others} describes of the flood were answered before ours"
        writer.close()
        for _, flood in floods:
            flood.close()


async def test_a_client_that_never_reads_its_answers_is_not_read_either() -> None:
    async with asr_server() as (server, _):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        tasks_before = len(asyncio.all_tasks())
        writer.write(frame("audio-stop") * 20000)  # 20,000 transcripts asked for, none read
        await asyncio.sleep(3)
        waiting = len(asyncio.all_tasks()) - tasks_before
        writer.close()
    assert waiting < 100, f"{waiting} answers queued for one client that reads nothing"
