"""Live transcription engine with a fake Transcriber (timing, load, limits) and its pure text logic."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import Speech
from live_helpers import EventLog, FakeTranscriber, collect, fake_hub, feed

from wyoming_minerva.audio import AudioFormat
from wyoming_minerva.stt.live.deltas import DeltaTracker
from wyoming_minerva.stt.live.hub import (
    CommitEmptyError,
    Committed,
    Failed,
    Final,
    Interim,
    Notice,
    SessionLimitError,
    SessionOptions,
    SpeechStarted,
    SpeechStopped,
)

pytestmark = pytest.mark.timeout(60)

LONG = "Turn on the living room lights and set them to fifty percent brightness please."
SHORT = "What time is it?"


def options(speech: Speech, **extra: object) -> SessionOptions:
    return SessionOptions(format=AudioFormat(speech.rate, 2, 1), **extra)  # type: ignore[arg-type]


def utterance(speech: Speech, text: str, after: float = 1.0) -> bytes:
    return speech.silence(0.3) + speech.say(text) + speech.silence(after)


# ---- pure text logic ---------------------------------------------------------------------------


def test_delta_tracker_sends_only_words_two_guesses_agree_on() -> None:
    tracker = DeltaTracker()
    assert tracker.interim("Turn on.") == ""  # one guess: nothing agreed yet
    assert tracker.interim("Turn on the living.") == "Turn on"  # "on." = "on"; "living." may be cut off
    assert tracker.interim("Turn on the living room lights") == " the living"
    assert tracker.interim("Turn off the living room lights and") == ""  # contradicts what was sent: wait
    assert tracker.final("Turn on the living room lights and set them to 50%.") == " room lights and set them to 50%."
    assert tracker.text == "Turn on the living room lights and set them to 50%."


def test_delta_tracker_never_retracts() -> None:
    tracker = DeltaTracker()
    tracker.interim("Hello there my")
    assert tracker.interim("Hello there my friend") == "Hello there my"
    assert tracker.final("Yellow chair, my friend.") == ""  # disagrees: .completed carries the truth
    assert tracker.text == "Hello there my"


# ---- sessions ----------------------------------------------------------------------------------


async def test_utterances_come_out_in_order_with_their_vad_events(speech: Speech) -> None:
    fake = FakeTranscriber()
    hub, manager = await fake_hub(fake)
    try:
        session = hub.open(options(speech))
        # The first (long) utterance decodes slower than the second: results still come in utterance order.
        fake.delay = 0.3
        await feed(session, utterance(speech, LONG) + utterance(speech, SHORT), speech.rate)
        fake.delay = 0.0
        session.finish()
        events = await collect(session)
    finally:
        await hub.close()
        await manager.close()
    for number in (1, 2):
        mine = [type(e) for e in events if getattr(e, "utterance", None) == number and not isinstance(e, Interim)]
        assert mine == [SpeechStarted, SpeechStopped, Committed, Final]
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.utterance for f in finals] == [1, 2]
    assert finals[0].audio_seconds > 3 > finals[1].audio_seconds > 0.8
    assert finals[0].text.endswith("seconds of audio")
    starts = [e.audio_ms for e in events if isinstance(e, SpeechStarted)]
    stops = [e.audio_ms for e in events if isinstance(e, SpeechStopped)]
    assert starts[0] < stops[0] < starts[1] < stops[1]
    assert all(f.latency_ms >= 0 for f in finals)
    assert hub.stats.latency.count == 2


async def test_silence_and_noise_never_reach_the_model(speech: Speech) -> None:
    fake = FakeTranscriber()
    hub, manager = await fake_hub(fake)
    try:
        session = hub.open(SessionOptions())
        rng = np.random.default_rng(7)
        noise = (rng.normal(0, 120, 16000 * 3)).astype("<i2").tobytes()
        await feed(session, bytes(16000 * 2 * 3) + noise, 16000)
        session.finish()
        events = await collect(session)
    finally:
        await hub.close()
        await manager.close()
    assert events == []
    assert fake.calls == []


async def test_interims_refresh_while_speaking_when_a_worker_is_idle(speech: Speech) -> None:
    fake = FakeTranscriber(delay=0.02)
    hub, manager = await fake_hub(fake, workers=1, interim_ms=300)
    try:
        session = hub.open(options(speech))
        log = EventLog(session)  # a client that reads: unread interims would replace each other
        await feed(session, utterance(speech, LONG), speech.rate, pace=3.0)
        session.finish()
        events = await log.done()
    finally:
        await hub.close()
        await manager.close()
    interims = [e for e in events if isinstance(e, Interim)]
    final = next(e for e in events if isinstance(e, Final))
    assert len(interims) >= 3
    assert len({i.text for i in interims}) == len(interims)  # an unchanged guess is not sent again
    assert events.index(interims[-1]) < events.index(final)
    assert final.reused  # the decode at the pause became the final: no second decode
    assert fake.max_running == 1


async def test_interims_are_dropped_under_load_but_the_final_comes(speech: Speech) -> None:
    fake = FakeTranscriber()
    hub, manager = await fake_hub(fake, workers=1, interim_ms=300)
    try:
        other = asyncio.create_task(manager.run(__import__("time").sleep, 2.0))  # another service holds the worker
        await asyncio.sleep(0.05)
        session = hub.open(options(speech))
        await feed(session, utterance(speech, LONG), speech.rate, pace=3.0)
        session.finish()
        events = await collect(session)
        await other
    finally:
        await hub.close()
        await manager.close()
    assert not [e for e in events if isinstance(e, Interim)]
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 1 and finals[0].text
    assert hub.stats.interims_skipped >= 1
    assert len(fake.calls) == 1  # only the final reached the model


@pytest.mark.parametrize("policy", ["reject", "drop_oldest"])
async def test_overflow_policy_when_the_final_queue_is_full(speech: Speech, policy: str) -> None:
    fake = FakeTranscriber()
    fake.gate.clear()  # the worker is stuck on the first final
    hub, manager = await fake_hub(fake, workers=1, queue_size=1, overflow=policy)
    try:
        sessions = [hub.open(options(speech)) for _ in range(3)]
        for session in sessions:
            await feed(session, utterance(speech, SHORT), speech.rate)
            session.finish()
            await asyncio.sleep(0.05)  # let the scheduler place each final before the next arrives
        collectors = [asyncio.create_task(collect(s)) for s in sessions]
        await asyncio.sleep(0.2)
        assert hub.stats.queued == 1
        fake.gate.set()
        results = [[e for e in await c if isinstance(e, Final | Failed)] for c in collectors]
    finally:
        fake.gate.set()
        await hub.close()
        await manager.close()
    outcome = [type(r[0]).__name__ for r in results]
    # Session 1 runs; session 2 waits in the queue of one; session 3 arrives at a full queue.
    assert outcome == (["Final", "Final", "Failed"] if policy == "reject" else ["Final", "Failed", "Final"])
    failed = next(r[0] for r in results if isinstance(r[0], Failed))
    assert failed.code == "queue_full"
    assert hub.stats.finals_failed == {"queue_full": 1}


async def test_session_limit(speech: Speech) -> None:
    hub, manager = await fake_hub(FakeTranscriber(), max_sessions=2)
    try:
        first, _ = hub.open(SessionOptions()), hub.open(SessionOptions())
        with pytest.raises(SessionLimitError) as caught:
            hub.open(SessionOptions())
        assert caught.value.code == "session_limit"
        await first.close()
        hub.open(SessionOptions())
        assert hub.sessions == 2 and hub.stats.sessions_rejected == 1
    finally:
        await hub.close()
        await manager.close()
    assert hub.sessions == 0


async def test_buffer_overflow_when_finals_wait_too_long(speech: Speech) -> None:
    fake = FakeTranscriber()
    fake.gate.clear()
    hub, manager = await fake_hub(fake, workers=1, max_buffer_seconds=2.0)
    try:
        session = hub.open(options(speech))
        log = EventLog(session)
        await feed(session, utterance(speech, LONG, after=0.6), speech.rate)  # > 2 s waits for its final
        await feed(session, utterance(speech, SHORT), speech.rate)  # dropped: buffer full
        fake.gate.set()
        await log.wait(Final)
        await feed(session, utterance(speech, SHORT), speech.rate)  # accepted again
        session.finish()
        events = await log.done()
    finally:
        fake.gate.set()
        await hub.close()
        await manager.close()
    notices = [e for e in events if isinstance(e, Notice)]
    assert [n.code for n in notices] == ["buffer_overflow"]
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 2 and finals[0].audio_seconds > 3 > finals[1].audio_seconds


async def test_manual_commit_mode(speech: Speech) -> None:
    fake = FakeTranscriber()
    hub, manager = await fake_hub(fake)
    try:
        session = hub.open(options(speech, vad=False))
        log = EventLog(session)
        with pytest.raises(CommitEmptyError):
            session.commit()
        await feed(session, utterance(speech, SHORT, after=2.0), speech.rate)  # long silence: no auto commit
        await asyncio.sleep(0.2)
        assert not [e for e in log.events if isinstance(e, Committed | Final)]
        assert session.commit() == 1
        session.finish()
        events = await log.done()
    finally:
        await hub.close()
        await manager.close()
    assert not [e for e in events if isinstance(e, SpeechStopped)]
    committed = next(e for e in events if isinstance(e, Committed))
    assert committed.reason == "client"
    final = next(e for e in events if isinstance(e, Final))
    assert final.utterance == 1 and final.text


async def test_close_mid_utterance_cancels_every_task(speech: Speech) -> None:
    fake = FakeTranscriber()
    fake.gate.clear()
    hub, manager = await fake_hub(fake, workers=1)
    try:
        sessions = [hub.open(options(speech)) for _ in range(2)]
        for session in sessions:
            await feed(session, utterance(speech, SHORT) + speech.say(LONG)[: speech.rate], speech.rate)
        await asyncio.sleep(0.1)
        assert hub.stats.queued == 1  # the second session's final waits
        for session in sessions:
            await session.close()
        assert hub.sessions == 0 and hub.stats.queued == 0
        fake.gate.set()
        await asyncio.sleep(0.2)
        left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("live-", "stt-decode"))]
        assert left == []
    finally:
        fake.gate.set()
        await hub.close()
        await manager.close()


def test_realtime_flags_and_environment() -> None:
    from wyoming_minerva.cli import parse_settings
    from wyoming_minerva.settings import ConfigError

    settings = parse_settings(
        ["--http", "127.0.0.1:0", "--realtime-max-sessions", "3", "--realtime-overflow", "drop_oldest"],
        env={"MINERVA_ENDPOINT_SILENCE_MS": "500", "MINERVA_REALTIME_INTERIM_MS": "0"},
    )
    rt = settings.realtime
    assert (rt.max_sessions, rt.overflow, rt.interim_ms) == (3, "drop_oldest", 0)
    assert settings.asr.endpoint_silence_ms == 500  # one silence for Wyoming ASR and live sessions
    with pytest.raises(ConfigError):
        parse_settings(["--http", "127.0.0.1:0", "--vad-aggressiveness", "4"], env={})
    with pytest.raises(ConfigError):
        parse_settings(["--http", "127.0.0.1:0", "--endpoint-silence-ms", "30"], env={})
    with pytest.raises(SystemExit):
        parse_settings(["--http", "127.0.0.1:0", "--realtime-overflow", "newest"], env={})


def test_g711_tables_match_the_standard() -> None:
    audioop = pytest.importorskip("audioop")  # the reference (gone from Python 3.13)
    from wyoming_minerva.http.stream_g711 import g711_to_pcm16

    codes = bytes(range(256))
    assert g711_to_pcm16(codes, "audio/pcmu") == audioop.ulaw2lin(codes, 2)
    assert g711_to_pcm16(codes, "audio/pcma") == audioop.alaw2lin(codes, 2)


async def test_a_client_that_never_reads_ends_its_session(speech: Speech) -> None:
    fake = FakeTranscriber()
    hub, manager = await fake_hub(fake, max_buffer_seconds=10_000)
    try:
        session = hub.open(options(speech))
        one = speech.silence(0.2) + speech.say("Turn it off.") + speech.silence(0.6)
        for _ in range(150):  # ~4 events each, nobody reading: past the 512 the outbox holds
            await feed(session, one, speech.rate)
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)
        assert session.closed and session.error is not None and session.error.code == "buffer_overflow"
        assert hub.sessions == 0
        assert [e async for e in session.events()] == []  # ended, the backlog dropped
    finally:
        await hub.close()
        await manager.close()
