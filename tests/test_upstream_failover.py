"""Failover across upstreams and the local engine: exactly one answer, streams committed at their first audio,
503 with a Retry-After hint when nothing can serve — with scripted fakes, then with a real minerva process as the
upstream (SIGSTOP takes it out of rotation, SIGCONT brings it back)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from asr_helpers import asr_server
from conftest import Speech, normalise
from upstream_helpers import FAST, closed_port, fake_openai, float_audio

from wyoming_minerva.audio import AudioFormat, convert_pcm
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.stt.engine import Segment, TranscriptionInfo, TranscriptionOptions
from wyoming_minerva.upstream import (
    ServiceUnavailableError,
    TranscribingUpstream,
    UpstreamPool,
    UpstreamRejected,
    UpstreamUnavailable,
    parse_upstream_url,
    run_with_failover,
    stream_with_failover,
)
from wyoming_minerva.upstream.health import LOCAL, Outcome, State
from wyoming_minerva.upstream.openai import OpenAIUpstream
from wyoming_minerva.upstream.pools import stt_client
from wyoming_minerva.upstream.wyoming import WyomingUpstream

pytestmark = pytest.mark.timeout(180)

Answer = tuple[TranscriptionInfo, list[Segment]]
PCM = AudioFormat(24000, 2, 1)
AUDIO = np.zeros(16000, np.float32)


def answer(text: str) -> Answer:
    return TranscriptionInfo("en", 1.0), [Segment(0.0, 1.0, text)]


@dataclass
class Scripted:
    """A fake upstream: `behaviour` is "ok", "hang", or an exception to raise; streams can fail after `fail_after`."""

    label: str
    behaviour: str | Exception = "ok"
    fail_after: int | None = None  # pieces streamed before the failure
    calls: int = 0
    closed_streams: int = 0
    probe_hangs: bool = False

    async def probe(self) -> None:
        if self.probe_hangs:
            await asyncio.sleep(3600)

    async def aclose(self) -> None:
        return None

    async def transcribe(self, audio: np.ndarray, options: TranscriptionOptions) -> Answer:
        self.calls += 1
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        if isinstance(self.behaviour, Exception):
            raise self.behaviour
        return answer(f"from {self.label}")

    async def synthesize(
        self, text: str, voice: str | None = None, *, speaker: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[tuple[AudioFormat, bytes]]:
        self.calls += 1
        try:
            if isinstance(self.behaviour, Exception) and self.fail_after is None:
                raise self.behaviour
            for index in range(3):
                if self.fail_after is not None and index == self.fail_after:
                    assert isinstance(self.behaviour, Exception)
                    raise self.behaviour
                yield PCM, self.label.encode() + bytes([index])
        finally:
            self.closed_streams += 1


def down(label: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(label, "HTTP 503: overloaded")


async def local_answer() -> Answer:
    return answer("from local")


async def local_stream() -> AsyncIterator[tuple[AudioFormat, bytes]]:
    for index in range(2):
        yield PCM, b"local" + bytes([index])


def ask(client: TranscribingUpstream) -> Awaitable[Answer]:
    return client.transcribe(AUDIO, TranscriptionOptions())


def command(speech: Speech, text: str) -> np.ndarray:
    return float_audio(convert_pcm(speech.say(text) + speech.silence(0.3), AudioFormat(speech.rate)))


async def test_the_first_healthy_upstream_answers_and_failures_move_on() -> None:
    a, b = Scripted("tcp://a:1", down("tcp://a:1")), Scripted("tcp://b:1")
    pool = UpstreamPool("stt", [a, b], FAST)
    _, segments = await run_with_failover(pool, ask, local_answer)
    assert segments[0].text == "from tcp://b:1"
    assert (a.calls, b.calls) == (1, 1)
    a_stats, b_stats, local = (s.requests for s in pool.snapshot())
    assert (a_stats[Outcome.FAILED], b_stats[Outcome.OK], local[Outcome.OK]) == (1, 1, 0)


async def test_after_every_upstream_the_local_engine_answers_once() -> None:
    a, b = Scripted("tcp://a:1", down("tcp://a:1")), Scripted("tcp://b:1", down("tcp://b:1"))
    pool = UpstreamPool("stt", [a, b], FAST)
    local_calls = 0

    async def local() -> Answer:
        nonlocal local_calls
        local_calls += 1
        return answer("from local")

    _, segments = await run_with_failover(pool, ask, local)
    assert [s.text for s in segments] == ["from local"] and local_calls == 1
    assert pool.snapshot()[-1].backend == LOCAL and pool.local.requests[Outcome.OK] == 1


async def test_a_down_upstream_is_skipped() -> None:
    a, b = Scripted("tcp://a:1"), Scripted("tcp://b:1")
    pool = UpstreamPool("stt", [a, b], FAST)
    for _ in range(FAST.failures):
        pool.backends[0].failed(down(a.label))
    assert pool.backends[0].state is State.DOWN
    _, segments = await run_with_failover(pool, ask, local_answer)
    assert segments[0].text == "from tcp://b:1" and a.calls == 0


async def test_with_no_backend_left_the_answer_is_service_unavailable_with_retry_after() -> None:
    a = Scripted("tcp://a:1", down("tcp://a:1"))
    pool = UpstreamPool("stt", [a], replace(FAST, local_fallback=False))
    for _ in range(FAST.failures):
        with pytest.raises(ServiceUnavailableError) as caught:
            await run_with_failover(pool, ask, local_answer)
    assert caught.value.code == "service_unavailable"
    assert caught.value.retry_after >= 1 and caught.value.retry_after_header.isdigit()
    assert "--no-local-fallback" in str(caught.value)
    calls = a.calls
    with pytest.raises(ServiceUnavailableError):  # now out of rotation: not even tried
        await run_with_failover(pool, ask, local_answer)
    assert a.calls == calls


async def test_a_rejection_is_the_answer_when_nothing_else_can_serve() -> None:
    rejected = UpstreamRejected("tcp://a:1", "HTTP 400: not audio")
    pool = UpstreamPool("stt", [Scripted("tcp://a:1", rejected)], replace(FAST, local_fallback=False))
    with pytest.raises(UpstreamRejected, match="not audio") as caught:
        await run_with_failover(pool, ask)
    assert caught.value.code == "upstream_rejected"
    with_local = UpstreamPool("stt", [Scripted("tcp://a:1", rejected)], FAST)
    _, segments = await run_with_failover(with_local, ask, local_answer)
    assert segments[0].text == "from local"
    assert with_local.backends[0].state is not State.DOWN


async def test_a_request_in_flight_is_abandoned_when_its_upstream_leaves_the_rotation() -> None:
    hung = Scripted("tcp://hung:1", "hang")
    pool = UpstreamPool("stt", [hung], replace(FAST, timeout=3600))
    request = asyncio.create_task(run_with_failover(pool, ask, local_answer))
    await asyncio.sleep(0.2)
    assert not request.done()
    for _ in range(FAST.failures):
        pool.backends[0].failed(down(hung.label))  # as other requests or a probe would report it
    _, segments = await asyncio.wait_for(request, 5)
    assert segments[0].text == "from local"
    assert pool.backends[0].stats.requests[Outcome.FAILED] == FAST.failures + 1


async def test_a_request_slower_than_a_probe_gets_its_upstream_probed_at_once() -> None:
    hung = Scripted("tcp://hung:1", "hang")
    settings = replace(FAST, timeout=3600, probe_interval=3600, probe_timeout=0.5)
    pool = UpstreamPool("stt", [hung], settings)
    await pool.start()
    try:
        await until(lambda: pool.backends[0].state is State.UP, 5)
        hung.probe_hangs = True  # the next scheduled probe would come in an hour
        started = time.monotonic()
        _, segments = await asyncio.wait_for(run_with_failover(pool, ask, local_answer), 30)
        elapsed = time.monotonic() - started
    finally:
        await pool.close()
    assert segments[0].text == "from local"
    assert elapsed < 2 * settings.probe_timeout + 3, elapsed  # about two probe timeouts (with room for load)
    assert pool.backends[0].state is State.DOWN


# ---- streams --------------------------------------------------------------------------------------


async def collect(stream: AsyncIterator[tuple[AudioFormat, bytes]]) -> list[bytes]:
    return [pcm async for _, pcm in stream]


async def test_a_stream_fails_over_before_its_first_piece() -> None:
    a, b = Scripted("a", down("a")), Scripted("b")
    pool = UpstreamPool("tts", [a, b], FAST)
    pieces = await collect(stream_with_failover(pool, lambda c: c.synthesize("Hi."), local_stream))
    assert pieces == [b"b\x00", b"b\x01", b"b\x02"]
    assert (a.closed_streams, b.closed_streams) == (1, 1)
    assert pool.backends[1].stats.requests[Outcome.OK] == 1


async def test_after_the_first_piece_a_failure_ends_the_stream_without_failover() -> None:
    a = Scripted("a", down("a"), fail_after=1)
    pool = UpstreamPool("tts", [a], FAST)
    got: list[bytes] = []
    with pytest.raises(UpstreamUnavailable, match="overloaded"):
        async for _, pcm in stream_with_failover(pool, lambda c: c.synthesize("Hi."), local_stream):
            got.append(pcm)
    assert got == [b"a\x00"]  # no local audio appended to half an upstream answer
    assert pool.local.requests[Outcome.OK] == 0
    assert pool.backends[0].stats.requests[Outcome.FAILED] == 1


async def test_every_upstream_failing_before_audio_leaves_the_stream_to_the_local_engine() -> None:
    pool = UpstreamPool("tts", [Scripted("a", down("a")), Scripted("b", down("b"))], FAST)
    assert await collect(stream_with_failover(pool, lambda c: c.synthesize("Hi."), local_stream)) == [
        b"local\x00",
        b"local\x01",
    ]
    none_left = UpstreamPool("tts", [Scripted("a", down("a"))], replace(FAST, local_fallback=False))
    with pytest.raises(ServiceUnavailableError):
        await collect(stream_with_failover(none_left, lambda c: c.synthesize("Hi."), local_stream))


async def test_a_client_that_stops_listening_closes_the_upstream_stream() -> None:
    a = Scripted("a")
    pool = UpstreamPool("tts", [a], FAST)
    stream = stream_with_failover(pool, lambda c: c.synthesize("Hi."), local_stream)
    assert (await anext(stream))[1] == b"a\x00"
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    assert a.closed_streams == 1
    assert pool.backends[0].stats.requests[Outcome.CANCELLED] == 1


async def test_a_fake_upstream_closing_mid_answer_is_retried_locally_once() -> None:
    async with fake_openai(mode="close_mid") as fake:
        client = OpenAIUpstream(fake.url, FAST)
        pool: UpstreamPool[TranscribingUpstream] = UpstreamPool("stt", [client], FAST)
        try:
            _, segments = await run_with_failover(pool, ask, local_answer)
        finally:
            await pool.close()
    assert [s.text for s in segments] == ["from local"]
    assert len(fake.requests) == 1


# ---- a real minerva process as the upstream ------------------------------------------------------------------

REAL = replace(FAST, timeout=60, probe_interval=0.5, probe_timeout=3.0, failures=2, backoff_max=2.0)


def free_port() -> int:
    return closed_port()


@dataclass
class Upstream:
    proc: asyncio.subprocess.Process
    asr_port: int
    http_port: int
    log: Path

    def urls(self) -> list[str]:
        return [f"tcp://127.0.0.1:{self.asr_port}", f"http://127.0.0.1:{self.http_port}/v1"]


@pytest.fixture(scope="module")
async def upstream(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Upstream]:
    """`python -m wyoming_minerva` serving Wyoming ASR and the HTTP API; always continued and stopped by PID."""
    log = tmp_path_factory.mktemp("upstream") / "minerva.log"
    asr_port, http_port = free_port(), free_port()
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wyoming_minerva",
            "--no-zeroconf",
            "--asr-uri",
            f"tcp://127.0.0.1:{asr_port}",
            "--http",
            f"127.0.0.1:{http_port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=out,
        )
    served = Upstream(proc, asr_port, http_port, log)
    try:
        probe = WyomingUpstream(parse_upstream_url(served.urls()[0]), REAL, expect="asr")
        async with asyncio.timeout(90):
            while True:
                assert proc.returncode is None, log.read_text()
                with contextlib.suppress(UpstreamUnavailable):
                    await probe.probe()
                    break
                await asyncio.sleep(0.3)
        yield served
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def stopped(proc: asyncio.subprocess.Process) -> AsyncIterator[None]:
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


async def until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return time.monotonic() - started
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def local_stt() -> AsyncIterator[object]:
    """The local engine (SpeechToText on the bundled tiny.en), whatever its constructor takes."""
    manager = ModelManager(workers=1, queue_size=8)
    async with asr_server(manager) as (_, stt):
        yield stt
    await manager.close()


def pool_for(upstream: Upstream) -> UpstreamPool[TranscribingUpstream]:
    clients = [stt_client(parse_upstream_url(url), REAL) for url in upstream.urls()]
    return UpstreamPool("stt", clients, REAL)


def words(segments: list[Segment]) -> str:
    return normalise("".join(s.text for s in segments))


async def test_requests_follow_the_upstream_health_across_sigstop_and_sigcont(
    upstream: Upstream, local_stt: object, speech: Speech
) -> None:
    stt = local_stt
    audio = command(speech, "Turn on the kitchen lights.")

    async def local() -> Answer:
        options = stt.options(language="en")  # type: ignore[attr-defined]
        info, segments = None, []
        async for item in stt.stream(audio, options):  # type: ignore[attr-defined]
            if isinstance(item, TranscriptionInfo):
                info = item
            else:
                segments.append(item)
        assert info is not None
        return info, segments

    def op(client: TranscribingUpstream) -> Awaitable[Answer]:
        return client.transcribe(audio, TranscriptionOptions(language="en"))

    pool = pool_for(upstream)
    await pool.start()
    wyoming, http = pool.backends
    try:
        await until(lambda: wyoming.state is State.UP and http.state is State.UP, 20)
        _, segments = await run_with_failover(pool, op, local)
        assert "kitchen lights" in words(segments)
        assert wyoming.stats.requests[Outcome.OK] == 1 and pool.local.requests[Outcome.OK] == 0
        async with httpx.AsyncClient() as client:  # the upstream's own metrics counted the decode
            metrics = (await client.get(f"http://127.0.0.1:{upstream.http_port}/metrics")).text
        assert re.search(r'minerva_model_loaded\{model="stt:[^"]+"\} 1\.0', metrics), metrics

        async with stopped(upstream.proc):
            seconds = await until(lambda: not pool.in_rotation(), REAL.probe_interval + REAL.probe_timeout + 10)
            assert seconds < REAL.probe_interval + REAL.probe_timeout + 10
            started = time.monotonic()
            _, segments = await run_with_failover(pool, op, local)
            local_seconds = time.monotonic() - started
            assert "kitchen lights" in words(segments)
            assert pool.local.requests[Outcome.OK] == 1
            assert wyoming.stats.requests[Outcome.FAILED] == 0  # not even tried while down
        await until(lambda: wyoming.state is State.UP, REAL.backoff_max + REAL.probe_timeout + 20)
        _, segments = await run_with_failover(pool, op, local)
        assert "kitchen lights" in words(segments)
        assert wyoming.stats.requests[Outcome.OK] == 2 and pool.local.requests[Outcome.OK] == 1
        print(f"down noticed after {seconds:.2f} s; local answer in {local_seconds:.2f} s")
    finally:
        await pool.close()


async def test_a_request_sent_as_the_upstream_stops_is_answered_locally_within_the_probe_time(
    upstream: Upstream, speech: Speech
) -> None:
    audio = command(speech, "Open the garage door.")
    pool = pool_for(upstream)
    await pool.start()
    try:
        await until(lambda: all(b.state is State.UP for b in pool.backends), 20)
        async with stopped(upstream.proc):
            started = time.monotonic()
            _, segments = await run_with_failover(
                pool, lambda c: c.transcribe(audio, TranscriptionOptions(language="en")), local_answer
            )
            elapsed = time.monotonic() - started
        assert [s.text for s in segments] == ["from local"]
        # abandoned when the probe failed, long before the 60 s request timeout
        assert elapsed < 2 * (REAL.probe_interval + REAL.probe_timeout) + 10, elapsed
        assert pool.backends[0].stats.requests[Outcome.FAILED] == 1
    finally:
        await pool.close()


async def test_a_refused_upstream_fails_over_at_once() -> None:
    client = WyomingUpstream(parse_upstream_url(f"tcp://127.0.0.1:{closed_port()}"), FAST, expect="asr")
    pool: UpstreamPool[TranscribingUpstream] = UpstreamPool("stt", [client], FAST)
    started = time.monotonic()
    _, segments = await run_with_failover(pool, ask, local_answer)
    assert segments[0].text == "from local" and time.monotonic() - started < 2
