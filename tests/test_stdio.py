"""stdio:// : one service on stdin/stdout, answering a piped request and exiting when stdin ends."""

from __future__ import annotations

import asyncio
import io
import sys

from conftest import Speech, normalise
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import read_event, write_event
from wyoming.info import Describe


async def test_piped_asr_request_is_answered_then_the_process_exits(speech: Speech) -> None:
    pcm = speech.say("Turn on the kitchen lights.")
    request = io.BytesIO()
    for event in (
        Describe().event(),
        Transcribe(language="en").event(),
        AudioStart(rate=speech.rate, width=2, channels=1).event(),
        AudioChunk(rate=speech.rate, width=2, channels=1, audio=pcm).event(),
        AudioStop().event(),
    ):
        write_event(event, request)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wyoming_minerva",
        "--asr-uri",
        "stdio://",
        "--no-zeroconf",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(request.getvalue()), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    answer = io.BytesIO(out)
    events = []
    while (event := read_event(answer)) is not None:
        events.append(event)
    assert events[0].type == "info"
    assert [e.type for e in events][-2:] == ["transcript", "transcript-stop"]
    assert normalise(events[-2].data["text"]) == "turn on the kitchen lights"
