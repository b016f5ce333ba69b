"""Hostile or malformed Wyoming input: every field checked by type, absurd JSON, and the error always said cleanly."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asr_helpers import asr_server
from conftest import wyoming_client
from tts_helpers import joe, read_answer, tts_server
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.tts import SynthesizeChunk, SynthesizeStop

from wyoming_minerva.handlers.events import validate_event
from wyoming_minerva.tts.piper import PiperSynthesizer

__all__ = ["joe"]  # the session fixture, imported for pytest

pytestmark = pytest.mark.timeout(120)

Header = dict[str, Any]


async def exchange(port: int, data: bytes, until: str | None = None, timeout: float = 15) -> list[Header]:
    """Send raw bytes; the events that came back (header + data merged) until `until` or the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    events: list[Header] = []
    try:
        async with asyncio.timeout(timeout):
            while line := await reader.readline():
                header = json.loads(line)
                extra = await reader.readexactly(header.get("data_length") or 0)
                await reader.readexactly(header.get("payload_length") or 0)
                header["data"] = {**(header.get("data") or {}), **(json.loads(extra) if extra else {})}
                events.append(header)
                if header["type"] == until:
                    break
    finally:
        writer.close()
    return events


def frame(event_type: str, data: object = None, raw_data: bytes | None = None) -> bytes:
    header: Header = {"type": event_type}
    if data is not None:
        header["data"] = data
    if raw_data is not None:
        header["data_length"] = len(raw_data)
    return json.dumps(header).encode() + b"\n" + (raw_data or b"")


async def still_answers_describe(port: int) -> None:
    async with wyoming_client(port) as client:
        await client.write_event(Describe().event())
        async with asyncio.timeout(5):
            while (event := await client.read_event()) is not None and event.type != "info":
                pass
        assert event is not None


# ---- item 10: numbers and nesting that Python's json refuses -------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "describe", "data": {"n": ' + b"9" * 5000 + b"}}\n",  # > 4300 digits: ValueError
        b'{"type": "describe", "data": {"n": ' + b"[" * 30000 + b"]" * 30000 + b"}}\n",  # RecursionError
        frame("transcribe", raw_data=b'{"n": ' + b"1" * 5000 + b"}"),
        frame("transcribe", raw_data=b'{"n": ' + b"[" * 30000 + b"]" * 30000 + b"}"),
    ],
    ids=["header-int", "header-nesting", "data-int", "data-nesting"],
)
async def test_absurd_json_is_a_protocol_error_and_others_are_served(raw: bytes) -> None:
    async with asr_server() as (server, _), wyoming_client(server.port) as bystander:
        events = await exchange(server.port, raw)
        assert [e["type"] for e in events] == ["error"]
        assert events[0]["data"]["code"] == "protocol_error"
        await bystander.write_event(Describe().event())
        assert (await bystander.read_event()) is not None
        await still_answers_describe(server.port)


# ---- item 9: every field of every event, by its type ----------------------------------------------------------


BAD_EVENTS: list[tuple[str, dict[str, object]]] = [
    ("synthesize", {"text": "Hello.", "text_format": 5}),
    ("synthesize", {"text": "Hello.", "text_format": True}),
    ("synthesize", {"text": "Hello.", "text_format": {}}),
    ("synthesize", {"text": "Hello.", "text_format": []}),
    ("synthesize", {"text": ["Hello."]}),
    ("synthesize", {"text": "Hello.", "voice": "joe"}),
    ("synthesize", {"text": "Hello.", "voice": {"name": ["joe"]}}),
    ("synthesize", {"text": "Hello.", "voice": {"speaker": True}}),
    ("synthesize-chunk", {"text": 7}),
    ("transcribe", {"language": 5}),
    ("transcribe", {"transcript_names": "Anna"}),
    ("audio-start", {"rate": "16000", "width": 2, "channels": 1}),
    ("audio-start", {"rate": 16000, "width": True, "channels": 1}),
    ("audio-chunk", {"rate": 16000.5, "width": 2, "channels": 1}),
    ("audio-stop", {"timestamp": "now"}),
    ("detect", {"names": "okay_nabu"}),
    ("detect", {"names": [1, 2]}),
    ("select-program", {"name": 3}),
]


@pytest.mark.parametrize(("event_type", "data"), BAD_EVENTS, ids=[f"{t}:{d}" for t, d in BAD_EVENTS])
def test_each_wrongly_typed_field_is_a_bad_request(event_type: str, data: dict[str, object]) -> None:
    from wyoming_minerva.errors import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        validate_event(Event(event_type, data))
    assert caught.value.code == "bad_request"
    assert len(str(caught.value)) < 300


def test_well_typed_events_pass_and_unknown_fields_are_kept() -> None:
    event = Event("synthesize", {"text": "Hi.", "voice": {"name": "joe", "speaker": 3}, "future": {"x": 1}})
    checked = validate_event(event)
    assert checked.data["voice"] == {"name": "joe", "speaker": "3"}
    assert checked.data["future"] == {"x": 1}
    assert validate_event(Event("something-new", {"anything": [1]})).data == {"anything": [1]}
    assert validate_event(Event("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, b"\0\0")).payload == b"\0\0"


@pytest.mark.parametrize("text_format", [5, True, {}, []])
async def test_synthesize_with_a_non_string_text_format_gets_a_clean_bad_request(
    joe: PiperSynthesizer, text_format: object, caplog: pytest.LogCaptureFixture
) -> None:
    async with tts_server(joe) as (server, _):
        events = await exchange(
            server.port, frame("synthesize", {"text": "Hello.", "text_format": text_format}), until="error"
        )
        assert [e["type"] for e in events] == ["error"]
        assert events[0]["data"]["code"] == "bad_request"
        assert "text_format" in events[0]["data"]["text"]
        await still_answers_describe(server.port)
    assert "Traceback" not in caplog.text and "AttributeError" not in caplog.text


# ---- item 11: synthesize-stopped always comes last -----------------------------------------------------------


@pytest.mark.parametrize("voice", ["joe", 5, {"name": {"x": 1}}])
async def test_a_stream_with_an_invalid_voice_gets_an_error_then_synthesize_stopped(
    joe: PiperSynthesizer, voice: object
) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Event("synthesize-start", {"voice": voice}))
        await client.write_event(SynthesizeChunk(text="Hello there.").event())
        await client.write_event(SynthesizeStop().event())
        answer = await read_answer(client, "synthesize-stopped", timeout=15)
        assert answer.types == ["error", "synthesize-stopped"]
        assert answer.events[0].data["code"] == "bad_request"
        # The chunks of the refused stream were not errors of their own, and the connection still works.
        await client.write_event(Describe().event())
        assert (await read_answer(client, "info", timeout=5)).types == ["info"]
