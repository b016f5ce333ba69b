"""The wake word service end to end: a real server on loopback, the bundled models, the wyoming client as peer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest
import soxr
from conftest import Speech, fixture_path, send_chunks, wyoming_client, wyoming_server
from test_wake_support import SteadySpeech
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.wake import Detect

from wyoming_minerva.audio import read_wav
from wyoming_minerva.handlers.server import WyomingServer
from wyoming_minerva.handlers.wake import WakeHandler
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import WakeSettings
from wyoming_minerva.wake.service import WakeWords

pytestmark = pytest.mark.timeout(120)

POSITIVES = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy")
MICRO = {"okay_nabu", "hey_jarvis", "alexa", "hey_mycroft"}  # built-ins that also exist as microWakeWord


@asynccontextmanager
async def wake_server(settings: WakeSettings | None = None) -> AsyncIterator[tuple[WyomingServer, WakeWords]]:
    manager = ModelManager(workers=2, queue_size=8)
    wake = WakeWords(settings or WakeSettings(), manager)
    try:
        async with wyoming_server("wake", lambda sink: WakeHandler(sink, wake)) as server:
            yield server, wake
    finally:
        await wake.close()
        await manager.close()


async def read_until(client: AsyncTcpClient, *types: str, timeout: float = 30.0) -> list[Event]:
    """Every event up to and including the first whose type is one of `types`."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await client.read_event()
            assert event is not None, f"connection closed; got {[e.type for e in events]}"
            events.append(event)
            if event.type in types:
                return events


async def detect(
    client: AsyncTcpClient,
    pcm: bytes,
    rate: int,
    names: list[str] | None = None,
    width: int = 2,
    channels: int = 1,
    send_detect: bool = True,
) -> list[Event]:
    """detect, audio-start, chunks, audio-stop; then a describe, whose info marks the end of the answer."""
    if send_detect:
        await client.write_event(Detect(names=names).event())
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    await send_chunks(client, pcm, rate, width, channels)
    await client.write_event(AudioStop().event())
    await client.write_event(Describe().event())
    events = await read_until(client, "info")
    return events[:-1]


def detections(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.data["name"], e.data["timestamp"]) for e in events if e.type == "detection"]


def fixture_pcm(name: str) -> tuple[bytes, int]:
    pcm, fmt = read_wav(fixture_path(f"wake/{name}.wav").read_bytes())
    assert (fmt.width, fmt.channels) == (2, 1)
    return pcm, fmt.rate


def phrase_end_seconds(pcm: bytes, rate: int) -> float:
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    return float(np.nonzero(samples > 500)[0][-1]) / rate


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# ---- info --------------------------------------------------------------------------------------


async def test_info_lists_every_model_with_phrase_and_languages_before_any_load() -> None:
    async with wake_server() as (server, wake), wyoming_client(server.port) as client:
        await client.write_event(Describe().event())
        info = (await read_until(client, "info", timeout=5))[-1].data
        assert wake.manager.stats().loaded == ()  # answered from the catalog, nothing loaded
    (program,) = info["wake"]
    assert program["installed"] and program["attribution"]["name"] and program["version"]
    models = {m["name"]: m for m in program["models"]}
    expected = set(POSITIVES) | {f"{name}_micro" for name in MICRO}
    assert set(models) == expected
    assert models["okay_nabu"]["phrase"] == "Okay Nabu" and models["okay_nabu"]["languages"] == ["en"]
    assert models["okay_nabu_micro"]["phrase"] == "Okay Nabu" and "en" in models["okay_nabu_micro"]["languages"]
    assert "microWakeWord" in models["alexa_micro"]["description"]
    assert all(m["installed"] for m in models.values())


# ---- the recordings ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", POSITIVES)
async def test_each_recording_gives_exactly_its_own_detection(name: str) -> None:
    pcm, rate = fixture_pcm(name)
    pcm += bytes(rate)  # the recordings end right after the word; a live stream would go on
    async with wake_server() as (server, wake):
        everything = [info.name for info in wake.models()]
        async with wyoming_client(server.port) as client:
            alone = detections(await detect(client, pcm, rate, names=[name]))
            together = detections(await detect(client, pcm, rate, names=everything))
    assert [n for n, _ in alone] == [name]
    own = {name, f"{name}_micro"} if name in MICRO else {name}
    assert sorted(n for n, _ in together) == sorted(own)  # each of its own models once, no other model


async def test_non_wake_audio_gives_not_detected_from_every_model(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    snowboy, rate = fixture_pcm("snowboy")
    command, command_fmt = read_wav(fixture_path("asr/turn_on_the_living_room_lamp.wav").read_bytes())
    async with wake_server() as (server, wake):
        everything = [info.name for info in wake.models()]
        async with wyoming_client(server.port) as client:
            for pcm, fmt in [
                (snowboy + bytes(rate), (rate, 2, 1)),
                (bytes(5 * 16000 * 2), (16000, 2, 1)),  # digital silence
                (command, (command_fmt.rate, command_fmt.width, command_fmt.channels)),  # 44.1 kHz stereo
                (steady.say("Turn on the kitchen lights.") + steady.silence(1.0), (steady.rate, 2, 1)),
                (steady.say("What's the weather like today?") + steady.silence(1.0), (steady.rate, 2, 1)),
            ]:
                events = await detect(client, pcm, fmt[0], everything, fmt[1], fmt[2])
                assert [e.type for e in events] == ["not-detected"]


async def test_44khz_stereo_input_is_converted(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    mono = np.frombuffer(steady.say("Hey Jarvis.") + steady.silence(1.0), dtype="<i2")
    resampled = soxr.resample(mono.astype(np.float32), steady.rate, 44100).astype("<i2")
    stereo = np.repeat(resampled, 2).tobytes()
    async with wake_server() as (server, _), wyoming_client(server.port) as client:
        found = detections(await detect(client, stereo, 44100, ["hey_jarvis"], channels=2))
    assert [n for n, _ in found] == ["hey_jarvis"]


# ---- synthesized speech and timestamps ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Okay Nabu.", "okay_nabu"),
        ("Hey Jarvis.", "hey_jarvis"),
        ("Hey Mycroft.", "hey_mycroft"),
        ("Okay Nabu.", "okay_nabu_micro"),
    ],
)
async def test_synthesized_phrase_in_silence_is_detected_near_its_end(speech: Speech, text: str, name: str) -> None:
    steady = SteadySpeech(speech)
    phrase = steady.say(text)
    lead = 3.0
    pcm = steady.silence(lead) + phrase + steady.silence(3.0)
    phrase_end = lead + phrase_end_seconds(phrase, steady.rate)
    async with wake_server() as (server, _), wyoming_client(server.port) as client:
        found = detections(await detect(client, pcm, steady.rate, [name]))
    assert len(found) == 1 and found[0][0] == name, found
    assert abs(found[0][1] / 1000 - phrase_end) <= 0.5, (found, phrase_end)


# ---- client sequences ---------------------------------------------------------------------------


async def test_home_assistant_flow_without_audio_stop_then_socket_closed(speech: Speech) -> None:
    """HA: detect, audio-start, endless chunks; takes the first detection and closes the socket."""
    steady = SteadySpeech(speech)
    pcm = steady.silence(1.0) + steady.say("Okay Nabu.") + steady.silence(1.0)
    async with wake_server() as (server, wake):
        async with wyoming_client(server.port) as client:
            await client.write_event(Detect(names=["okay_nabu"]).event())
            await client.write_event(AudioStart(rate=steady.rate, width=2, channels=1).event())
            await send_chunks(client, pcm, steady.rate)
            events = await read_until(client, "detection")
            assert events[-1].data["name"] == "okay_nabu"
            assert wake.active_streams == 1
        await wait_for(lambda: wake.active_streams == 0)  # the closed socket freed the stream


async def test_satellite_flow_two_wake_ups_on_one_connection(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    first = steady.silence(0.5) + steady.say("Hey Jarvis.") + steady.silence(1.0)
    second = steady.silence(2.0) + steady.say("Hey Jarvis.") + steady.silence(1.0)
    second_end = 2.0 + phrase_end_seconds(steady.say("Hey Jarvis."), steady.rate)
    async with wake_server() as (server, wake), wyoming_client(server.port) as client:
        for pcm in (first, second):  # no audio-stop in between: detect + audio-start again
            await client.write_event(Detect(names=["hey_jarvis"]).event())
            await client.write_event(AudioStart(rate=steady.rate, width=2, channels=1).event())
            await send_chunks(client, pcm, steady.rate)
            events = await read_until(client, "detection")
            assert [e.type for e in events] == ["detection"]
        # Timestamps restart at the second audio-start.
        assert abs(events[-1].data["timestamp"] / 1000 - second_end) <= 0.5
        await client.write_event(Describe().event())
        events = await read_until(client, "info")
        assert "detection" not in [e.type for e in events]  # one detection per wake word
        await wait_for(lambda: wake.active_streams == 1)  # the first stream was replaced, not leaked


async def test_several_detections_on_one_stream_respect_refractory_audio_time(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    word = steady.say("Okay Nabu.")
    pcm = steady.silence(0.5) + word + steady.silence(2.5) + word + steady.silence(1.0)
    async with wake_server() as (server, _), wyoming_client(server.port) as client:
        found = detections(await detect(client, pcm, steady.rate, ["okay_nabu"]))
    assert [n for n, _ in found] == ["okay_nabu", "okay_nabu"]
    assert found[1][1] - found[0][1] > 2000


async def test_client_without_detect_gets_the_default_model(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    pcm = steady.silence(0.5) + steady.say("Okay Nabu.") + steady.silence(1.0)
    async with wake_server() as (server, _), wyoming_client(server.port) as client:
        found = detections(await detect(client, pcm, steady.rate, send_detect=False))
        assert [n for n, _ in found] == ["okay_nabu"]
        found = detections(
            await detect(client, steady.say("Hey Jarvis.") + steady.silence(1.0), steady.rate, send_detect=False)
        )
        assert found == []  # the default model only


async def test_detection_carries_the_name_as_the_client_spelled_it(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    pcm = steady.silence(0.5) + steady.say("Okay Nabu.") + steady.silence(1.0)
    async with wake_server() as (server, _), wyoming_client(server.port) as client:
        found = detections(await detect(client, pcm, steady.rate, ["ok_nabu"]))
    assert [n for n, _ in found] == ["ok_nabu"]


# ---- errors -------------------------------------------------------------------------------------


async def test_unknown_name_is_an_error_listing_known_models_and_connection_survives(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    async with wake_server() as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Detect(names=["hey_siri"]).event())
        error = (await read_until(client, "error"))[-1].data
        assert error["code"] == "model_not_found"
        assert "hey_siri" in error["text"] and "okay_nabu" in error["text"] and "alexa_micro" in error["text"]
        await client.write_event(Detect(names="okay_nabu").event())  # type: ignore[arg-type]
        assert (await read_until(client, "error"))[-1].data["code"] == "bad_request"
        found = detections(
            await detect(client, steady.say("Hey Jarvis.") + steady.silence(1.0), steady.rate, ["hey_jarvis"])
        )
        assert [n for n, _ in found] == ["hey_jarvis"]


async def test_bad_input_gets_error_and_other_streams_are_unaffected(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    pcm = steady.silence(1.0) + steady.say("Alexa.") + steady.silence(1.0)
    async with wake_server() as (server, _), wyoming_client(server.port) as good:
        await good.write_event(Detect(names=["alexa"]).event())
        await good.write_event(AudioStart(rate=steady.rate, width=2, channels=1).event())
        half = len(pcm) // 2 - (len(pcm) // 2) % 2
        await send_chunks(good, pcm[:half], steady.rate)
        # A client announcing an impossible format, then one sending a broken header.
        async with wyoming_client(server.port) as odd:
            await odd.write_event(AudioStart(rate=16000, width=5, channels=1).event())
            assert (await read_until(odd, "error"))[-1].data["code"] == "unsupported_audio"
            await odd.write_event(AudioChunk(rate=16000, width=2, channels=0, audio=bytes(640)).event())
            assert (await read_until(odd, "error"))[-1].data["code"] == "unsupported_audio"
            assert odd._writer is not None
            odd._writer.write(b"{this is not json\n")
            await odd._writer.drain()
            assert (await read_until(odd, "error"))[-1].data["code"] == "protocol_error"
        await send_chunks(good, pcm[half:], steady.rate)
        events = await read_until(good, "detection")
        assert events[-1].data["name"] == "alexa"


async def test_fast_client_does_not_delay_a_real_time_one(speech: Speech) -> None:
    """One client pushes minutes of speech as fast as it can; a real-time client's wake word is answered first."""
    steady = SteadySpeech(speech)
    talk = np.frombuffer(steady.say("Turn on the kitchen lights and tell me the weather for today."), "<i2")
    talk16 = soxr.resample(talk.astype(np.float32), steady.rate, 16000).astype("<i2").tobytes()
    flood = talk16 * max(1, int(240 * 16000 * 2 / len(talk16)))  # four minutes
    wake_word = steady.silence(1.0) + steady.say("Hey Mycroft.") + steady.silence(1.0)
    finished: dict[str, float] = {}

    async def flooding(client: AsyncTcpClient) -> None:
        events = await detect(client, flood, 16000, ["okay_nabu", "hey_jarvis", "alexa"])
        assert [e.type for e in events] == ["not-detected"]
        finished["fast"] = time.monotonic()

    async with (
        wake_server() as (server, _),
        wyoming_client(server.port) as fast,
        wyoming_client(server.port) as live,
    ):
        task = asyncio.create_task(flooding(fast))
        await asyncio.sleep(0.3)
        await live.write_event(Detect(names=["hey_mycroft"]).event())
        await live.write_event(AudioStart(rate=steady.rate, width=2, channels=1).event())
        await send_chunks(live, wake_word, steady.rate, pace=1.0)
        events = await read_until(live, "detection", timeout=10)
        finished["live"] = time.monotonic()
        assert events[-1].data["name"] == "hey_mycroft"
        await asyncio.wait_for(task, 60)
    assert finished["live"] < finished["fast"], "the real-time client waited for the fast one"


# ---- broadcast ----------------------------------------------------------------------------------


async def test_subscribers_receive_every_detection(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    pcm = steady.silence(0.5) + steady.say("Hey Jarvis.") + steady.silence(1.0)
    async with wake_server() as (server, wake), wake.subscribe() as events, wyoming_client(server.port) as client:
        found = detections(await detect(client, pcm, steady.rate, ["hey_jarvis", "hey_jarvis_micro"]))
        received = [await asyncio.wait_for(anext(events), 5) for _ in found]
    assert (
        sorted(e.detection.name for e in received) == sorted(n for n, _ in found) == ["hey_jarvis", "hey_jarvis_micro"]
    )
    assert all(e.peer.startswith("127.0.0.1:") and e.stream_id >= 1 for e in received)
