"""Live speech-to-text: audio streams in, utterances are found by webrtcvad, transcripts come out as they form.

- `LiveHub` (one per process): caps the number of sessions, owns the scheduler (live_scheduler.py) that shares
  the inference executor with every other service, and keeps the statistics (final latency for /metrics).
- `LiveSession`: one client stream. `feed()` raw PCM in the client's format (converted to 16 kHz mono, run through
  the VAD inline: microseconds per 30 ms frame); `commit()` ends the current utterance now; `finish()` ends the
  stream after the last final; `events()` yields SpeechStarted/SpeechStopped/Committed/Interim/Final/Failed/Notice.

Only speech reaches Whisper: an utterance exists once the VAD hears speech, and keeps `prefix_ms` before it.
While someone speaks, interim decodes of the utterance so far run when a worker is idle; at a short pause a
speculative decode runs the same way, and when the silence then ends the utterance with no new speech its result
is the final (no second decode: that is what makes the final quick). Every committed utterance gets a Final or a
Failed event, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from ..audio import AudioConverter, pcm16_to_float
from ..errors import MinervaError, QueueFullError
from ..settings import RealtimeSettings
from ..text import clean_transcript
from .base import TranscriptionInfo, TranscriptionOptions
from .live_scheduler import POLL_SECONDS, FinalJob, LiveScheduler
from .live_types import (
    BufferOverflowError,
    CommitEmptyError,
    Committed,
    Failed,
    Final,
    Interim,
    LiveEvent,
    LiveStats,
    Notice,
    OverflowPolicy,
    SessionLimitError,
    SessionOptions,
    SpeechStarted,
    SpeechStopped,
)
from .vad import FRAME_BYTES, FRAME_SAMPLES, EndpointConfig, Endpointer, EndpointEvent, Mark, WebRtcVad
from .whisper import SpeechToText

_LOGGER = logging.getLogger(__name__)

RATE = 16000
TRAILING_PAD_SAMPLES = RATE * 3 // 10  # a final keeps 300 ms after the last speech frame
LEADING_PAD_SAMPLES = RATE // 10  # silence put before every decode's audio
MIN_COMMIT_SAMPLES = RATE // 10  # a commit needs 100 ms of audio (as OpenAI's does)
PRE_SPEECH_KEEP_SAMPLES = RATE // 5  # kept beyond the prefix while waiting for speech to start
OUTBOX_LIMIT = 512  # events a client may leave unread (interims excluded: they replace each other)
FINAL_RETRY_SECONDS = 10.0  # a final the manager refuses (its queue filled by others) is retried this long
NO_END_MS = 10**9  # manual commit mode: silence never ends an utterance


def _ms(samples: int) -> int:
    return samples * 1000 // RATE


class Decode:
    """One Whisper run over an utterance's audio (everything up to `end_sample`), on the shared executor."""

    def __init__(self, stt: SpeechToText, audio: np.ndarray, options: TranscriptionOptions, end_sample: int) -> None:
        self.stt = stt
        self.end_sample = end_sample
        self.audio_seconds = len(audio) / RATE
        self.language = options.language
        self.error: BaseException | None = None
        self.decode_ms = 0.0
        self.finished = False
        self.gated = options.skip_silence  # Silero (inside faster-whisper) drops non-speech: fit for a final
        self.task: asyncio.Task[None] | None = None
        self._audio: np.ndarray | None = audio
        self._options = options
        self._texts: list[str] = []

    @property
    def text(self) -> str:
        return clean_transcript("".join(self._texts), heard_speech=True)

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(), name="live-decode")
        return self.task

    async def run(self) -> None:
        started = time.perf_counter()
        audio, self._audio = self._audio, None
        try:
            assert audio is not None, "a Decode runs once"
            async for item in self.stt.stream(audio, self._options):
                if isinstance(item, TranscriptionInfo):
                    self.language = item.language
                else:
                    self._texts.append(item.text)
        except Exception as err:
            self.error = err
        except asyncio.CancelledError as err:
            self.error = err
            raise
        finally:
            self.decode_ms = (time.perf_counter() - started) * 1000
            self.finished = True

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


class _Utterance:
    """Everything about one utterance; replaced whole when the next begins."""

    def __init__(self, number: int, origin: int, endpointer: Endpointer, vad: bool) -> None:
        self.number = number
        self.origin = origin  # session sample of audio[0] (moves while waiting for speech: the buffer is trimmed)
        self.ep_origin = origin  # session sample where the endpointer started counting
        self.endpointer = endpointer
        self.vad = vad  # silence ends it (else only a commit does)
        self.audio = bytearray()  # 16 kHz mono s16
        self.started = False  # the VAD heard the start of speech
        self.confirmed = False  # and then enough of it (min_speech_ms) to be an utterance, not a click
        self.paused = False
        self.committed = False
        self.overflowed = False
        self.last_speech_wall = 0.0
        self.decode: Decode | None = None  # the latest interim or speculative decode
        self.idle_from = 0  # utterance sample when the last decode finished (interims wait interim_ms after it)
        self.last_interim = ""

    @property
    def samples(self) -> int:
        return len(self.audio) // 2

    def relative(self, endpointer_sample: int) -> int:
        """An endpointer sample as an index into this utterance's audio."""
        return self.ep_origin + endpointer_sample - self.origin

    @property
    def speech_end(self) -> int:
        return self.relative(self.endpointer.speech_end_sample)


class _PendingFinal:
    """A committed utterance's result to come (futures resolve in any order; they are published in order)."""

    def __init__(self, utterance: int, samples: int, end_wall: float) -> None:
        self.utterance = utterance
        self.samples = samples
        self.end_wall = end_wall
        self.result: asyncio.Future[Final | Failed] = asyncio.get_running_loop().create_future()
        self.job: FinalJob | None = None
        self.decode: Decode | None = None

    def resolve(self, event: Final | Failed) -> None:
        if not self.result.done():
            self.result.set_result(event)


class _Outbox:
    """Events not yet taken by the client's writer; an unsent interim is replaced by a newer one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[LiveEvent] = deque()
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, event: LiveEvent) -> bool:
        """False when the client has left too many events unread."""
        if self.closed:
            return True
        if isinstance(event, Interim):
            for index, item in enumerate(self._items):
                if isinstance(item, Interim) and item.utterance == event.utterance:
                    del self._items[index]
                    break
        elif len(self._items) >= self.limit:
            return False
        self._items.append(event)
        self._ready.set()
        return True

    def close(self, flush: bool) -> None:
        if not flush:
            self._items.clear()
        self.closed = True
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[LiveEvent]:
        while True:
            while self._items:
                yield self._items.popleft()
            if self.closed:
                return
            self._ready.clear()
            await self._ready.wait()


class LiveSession:
    def __init__(self, hub: LiveHub, options: SessionOptions, peer: str) -> None:
        self.hub = hub
        self.id = "sess_" + secrets.token_hex(12)
        self.peer = peer
        self.error: MinervaError | None = None  # why the session ended on its own (e.g. an unread outbox)
        self.closed = False
        self._settings = hub.settings
        self._stats = hub.stats
        self._outbox = _Outbox(OUTBOX_LIMIT)
        self._pending: asyncio.Queue[_PendingFinal | None] = asyncio.Queue()
        self._unpublished: set[_PendingFinal] = set()  # committed, result not yet sent
        self._pending_samples = 0
        self._overflowing = False
        self._wanted = False
        self._finishing = False
        self._numbers = 0
        self._samples = 0  # 16 kHz samples received (the session's audio clock)
        self._leftover = b""
        self.options = options
        self._vad: WebRtcVad | None = None
        self._vad_level = -1
        self._converter = AudioConverter(options.format, RATE)
        self._stt_options = self._transcription_options(options)
        self._final_options = dataclasses.replace(self._stt_options, skip_silence=True)
        self._utt = self._new_utterance()
        self._publisher = asyncio.create_task(self._publish(), name=f"live-publish-{self.id}")

    # ---- configuration -----------------------------------------------------------------------

    def _transcription_options(self, options: SessionOptions) -> TranscriptionOptions:
        return self.hub.stt.options(language=options.language, prompt=options.prompt)

    def _endpointer(self) -> Endpointer:
        silence = self.options.silence_ms or self._settings.silence_ms
        aggressiveness = self.options.vad_aggressiveness
        if aggressiveness is None:
            aggressiveness = self._settings.vad_aggressiveness
        config = EndpointConfig(end_ms=silence if self.options.vad else NO_END_MS)
        if self._vad is None or self._vad_level != aggressiveness:
            # One VAD per session: webrtcvad adapts to the noise floor, and a fresh one takes noise for speech.
            self._vad, self._vad_level = WebRtcVad(aggressiveness), aggressiveness
        return Endpointer(self._vad, config)

    def _new_utterance(self) -> _Utterance:
        self._numbers += 1
        return _Utterance(self._numbers, self._samples, self._endpointer(), self.options.vad)

    def update(self, options: SessionOptions) -> None:
        """New options: the audio format at once; the rest for an utterance not yet begun, else for the next."""
        if options.format != self.options.format:
            self._push(self._converter.flush())
            self._converter = AudioConverter(options.format, RATE)
        self.options = options
        self._stt_options = self._transcription_options(options)
        self._final_options = dataclasses.replace(self._stt_options, skip_silence=True)
        utt = self._utt
        if not utt.started:
            utt.endpointer, utt.vad = self._endpointer(), options.vad
            utt.ep_origin = self._samples

    # ---- audio in ----------------------------------------------------------------------------

    def feed(self, pcm: bytes) -> None:
        """Audio in the session's format. Over the session's buffer limit the audio is dropped (a Notice says so)."""
        if self.closed or self._finishing:
            return
        if self._pending_samples > self._settings.max_buffer_seconds * RATE:
            if not self._overflowing:
                self._overflowing = True
                self._notice(
                    BufferOverflowError(
                        f"more than {self._settings.max_buffer_seconds:g} s of audio wait for transcription; "
                        "audio is dropped until they are done (send at real-time pace)"
                    )
                )
            return
        self._overflowing = False
        self._push(self._converter.convert(pcm))

    def _push(self, pcm16: bytes, pad: bool = False) -> None:
        """16 kHz audio into the VAD frame by frame; a partial frame waits (or, with `pad`, is padded now)."""
        data = self._leftover + pcm16
        if pad and len(data) % FRAME_BYTES:
            data += bytes(FRAME_BYTES - len(data) % FRAME_BYTES)
        usable = len(data) - len(data) % FRAME_BYTES
        self._leftover = data[usable:]
        for offset in range(0, usable, FRAME_BYTES):
            self._frame(data[offset : offset + FRAME_BYTES])

    def _frame(self, frame: bytes) -> None:
        utt = self._utt
        limit = int(self._settings.max_utterance_seconds * RATE)
        if not utt.vad and utt.samples >= limit:
            if not utt.overflowed:
                utt.overflowed = True
                self._notice(
                    BufferOverflowError(
                        f"the input buffer holds {self._settings.max_utterance_seconds:g} s; "
                        "audio is dropped until it is committed"
                    )
                )
            return
        self._samples += FRAME_SAMPLES
        utt.audio += frame
        before = utt.endpointer.speech_end_sample
        for mark in utt.endpointer.feed(frame):
            self._on_mark(utt, mark)
        if utt is not self._utt:
            return  # the frame ended the utterance
        if utt.endpointer.speech_end_sample != before:
            utt.last_speech_wall = time.monotonic()
        if utt.started and not utt.confirmed and not self._confirm(utt):
            return
        if not utt.started:
            self._trim(utt)
        elif utt.vad and utt.samples >= limit:
            self._commit(utt, "limit")
        else:
            self._maybe_want(utt)

    def _trim(self, utt: _Utterance) -> None:
        """Before speech, keep only what a start of speech could still need (the prefix and a little more)."""
        keep = _samples_of(self.options.prefix_ms) + PRE_SPEECH_KEEP_SAMPLES
        excess = utt.samples - keep
        if excess > 0:
            del utt.audio[: excess * 2]
            utt.origin += excess

    def _confirm(self, utt: _Utterance) -> bool:
        """Enough speech makes an utterance (SpeechStarted goes out); a click or the onset of steady noise
        (webrtcvad calls ~90 ms of it speech) followed by silence is forgotten. False while unconfirmed."""
        endpointer = utt.endpointer
        if endpointer.speech_ms >= endpointer.config.min_speech_ms:
            utt.confirmed = True
            utt.idle_from = utt.samples
            self._emit(SpeechStarted(utt.number, _ms(utt.origin)))
            return True
        silence = _ms(endpointer.samples - endpointer.speech_end_sample)
        if utt.vad and silence >= (self.options.silence_ms or self._settings.silence_ms):
            self._utt = _Utterance(utt.number, self._samples, self._endpointer(), utt.vad)
        return False

    def _on_mark(self, utt: _Utterance, mark: Mark) -> None:
        if mark.event is EndpointEvent.SPEECH_STARTED:
            start = max(0, utt.relative(mark.sample) - _samples_of(self.options.prefix_ms))
            del utt.audio[: start * 2]
            utt.origin += start
            utt.started = True
        elif mark.event is EndpointEvent.PAUSED:
            utt.paused = True
            self._maybe_want(utt)
        elif mark.event is EndpointEvent.RESUMED:
            utt.paused = False
        elif mark.event is EndpointEvent.ENDED:
            if not utt.confirmed:
                self._confirm(utt)  # the endpointer ends only utterances with min_speech_ms of speech
            self._emit(SpeechStopped(utt.number, _ms(utt.ep_origin + mark.sample)))
            self._commit(utt, "vad")

    # ---- interim and speculative decodes -----------------------------------------------------

    @staticmethod
    def _final_ready(utt: _Utterance, decode: Decode | None) -> bool:
        """Whether a decode can be this utterance's final: gated, not failed, and covering all its speech."""
        return decode is not None and decode.gated and decode.error is None and decode.end_sample >= utt.speech_end

    def _maybe_want(self, utt: _Utterance) -> None:
        if self._wanted or utt.committed or not utt.confirmed or utt is not self._utt:
            return
        decode = utt.decode
        if utt.paused:
            # Speculate: the pause may be the end. A running decode that misses the last words is replaced.
            if not self._final_ready(utt, decode):
                self._wanted = True
                self.hub.scheduler.want(self, self._start_decode, urgent=True)
            return
        if decode is not None and not decode.finished:
            return
        # Interims leave the worker idle for as long as interim_ms of audio between runs, so a speculative
        # decode at the next pause seldom finds one still busy.
        interval = _samples_of(self._settings.interim_ms)
        if self.options.interim and interval and utt.samples - utt.idle_from >= interval:
            self._wanted = True
            self.hub.scheduler.want(self, self._start_decode)

    def _unwant(self) -> None:
        if self._wanted:
            self._wanted = False
            self.hub.scheduler.unwant(self)

    def _start_decode(self) -> None:
        """Called by the scheduler when a worker is idle: decode the utterance so far."""
        self._wanted = False
        utt = self._utt
        if self.closed or utt.committed or not utt.confirmed:
            return
        if utt.decode is not None and not utt.decode.finished:
            utt.decode.cancel()  # an interim that misses the last words: the speculative decode replaces it
        # A speculative decode may become the final, so it is gated like one; interims are not (cheaper, quieter).
        options = self._final_options if utt.paused else self._stt_options
        decode = Decode(self.hub.stt, _padded(utt, utt.samples), options, utt.samples)
        utt.decode = decode
        task = decode.start()
        self.hub.scheduler.track(task)
        task.add_done_callback(lambda _: self._on_decode_done(utt, decode))

    def _on_decode_done(self, utt: _Utterance, decode: Decode) -> None:
        if self.closed or utt.committed or utt is not self._utt or decode is not utt.decode:
            return  # a final uses it (or nobody does)
        utt.idle_from = utt.samples
        if decode.error is None:
            self._stats.interims += 1
            text = decode.text
            if text and text != utt.last_interim:
                utt.last_interim = text
                self._emit(Interim(utt.number, text))
        self._maybe_want(utt)

    # ---- utterance end -----------------------------------------------------------------------

    def commit(self) -> int | None:
        """End the current utterance now (OpenAI commit, native finalize); its number, or None when nothing to do.

        In manual mode (vad off) an almost empty buffer is a CommitEmptyError; with the VAD on, a commit while
        nobody speaks does nothing.
        """
        self._push(b"", pad=True)  # every byte received so far belongs to this utterance
        utt = self._utt
        if not utt.started and (utt.vad or utt.samples < MIN_COMMIT_SAMPLES):
            if utt.vad:
                return None
            raise CommitEmptyError(
                f"the input buffer holds {_ms(utt.samples)} ms of audio; at least {_ms(MIN_COMMIT_SAMPLES)} ms needed"
            )
        self._commit(utt, "client")
        return utt.number

    def clear(self) -> None:
        """Drop the current utterance's audio (finals already committed still come)."""
        utt = self._utt
        self._unwant()
        if utt.decode is not None:
            utt.decode.cancel()
        utt.committed = True
        self._leftover = b""
        self._utt = self._new_utterance()

    def _commit(self, utt: _Utterance, reason: str) -> None:
        utt.committed = True
        self._unwant()
        self._utt = self._new_utterance()
        if utt.vad and reason == "vad":
            end = min(utt.samples, utt.speech_end + TRAILING_PAD_SAMPLES)
            end_wall = utt.last_speech_wall or time.monotonic()
        else:
            end = utt.samples
            end_wall = time.monotonic()
        pending = _PendingFinal(utt.number, end, end_wall)
        self._pending_samples += end
        self._emit(Committed(utt.number, _ms(utt.samples), reason))
        decode = utt.decode
        if not utt.started:
            # The VAD heard no speech: nothing goes to Whisper.
            pending.resolve(Final(utt.number, "", self._stt_options.language, end / RATE, 0.0, 0.0, False))
        elif self._final_ready(utt, decode):
            assert decode is not None
            pending.decode = decode  # speculation that came true: reuse it
            if decode.finished:
                self._resolve_reused(pending, utt, decode, end)
            else:
                assert decode.task is not None
                decode.task.add_done_callback(lambda _: self._resolve_reused(pending, utt, decode, end))
        else:
            if decode is not None:
                decode.cancel()  # stale: free its worker for the final
            self._submit(pending, _padded(utt, end))
        self._unpublished.add(pending)
        self._pending.put_nowait(pending)

    def _resolve_reused(self, pending: _PendingFinal, utt: _Utterance, decode: Decode, end: int) -> None:
        if self.closed:
            return
        if decode.error is not None:  # e.g. refused by a full queue: decode again as a real final
            self._submit(pending, _padded(utt, end))
            return
        pending.resolve(self._final(pending, decode, reused=True))

    def _submit(self, pending: _PendingFinal, audio: np.ndarray) -> None:

        async def run() -> None:
            deadline = time.monotonic() + FINAL_RETRY_SECONDS
            while True:
                decode = Decode(self.hub.stt, audio, self._final_options, pending.samples)
                pending.decode = decode
                await decode.run()
                if not isinstance(decode.error, QueueFullError) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(POLL_SECONDS)  # other services filled the manager: our turn comes
            if decode.error is None:
                pending.resolve(self._final(pending, decode, reused=False))
            else:
                pending.resolve(self._failed(pending.utterance, decode.error))

        def refuse(err: QueueFullError) -> None:
            pending.resolve(self._failed(pending.utterance, err))

        pending.job = FinalJob(run, refuse)
        self.hub.scheduler.submit(pending.job)

    def _final(self, pending: _PendingFinal, decode: Decode, reused: bool) -> Final:
        return Final(
            utterance=pending.utterance,
            text=decode.text,
            language=decode.language,
            audio_seconds=pending.samples / RATE,
            latency_ms=0.0,  # set when published
            decode_ms=decode.decode_ms,
            reused=reused,
        )

    def _failed(self, utterance: int, err: BaseException) -> Failed:
        code = err.code if isinstance(err, MinervaError) else "inference_failed"
        if not isinstance(err, MinervaError):
            _LOGGER.error("Live %s: transcription failed: %s", self.peer, err)
        return Failed(utterance, code, str(err) or type(err).__name__)

    async def _publish(self) -> None:
        """Results in utterance order, each as soon as it and all before it are ready."""
        while (pending := await self._pending.get()) is not None:
            event = await pending.result
            self._unpublished.discard(pending)
            self._pending_samples -= pending.samples
            if isinstance(event, Final):
                latency = time.monotonic() - pending.end_wall
                event = dataclasses.replace(event, latency_ms=latency * 1000)
                if event.decode_ms > 0:  # Whisper ran (not an utterance without speech)
                    self._stats.finals += 1
                    self._stats.finals_reused += event.reused
                    self._stats.latency.observe(latency)
                _LOGGER.info(
                    "Live %s #%d: %.2f s audio, decode %.0f ms%s, end of speech → final %.0f ms, %d chars",
                    self.peer,
                    event.utterance,
                    event.audio_seconds,
                    event.decode_ms,
                    " (speculative)" if event.reused else "",
                    event.latency_ms,
                    len(event.text),
                )
            else:
                self._stats.failed(event.code)
            self._emit(event)
        self._outbox.close(flush=True)

    # ---- events out --------------------------------------------------------------------------

    def _emit(self, event: LiveEvent) -> None:
        if not self._outbox.put(event):
            self._fail(BufferOverflowError(f"the client left more than {OUTBOX_LIMIT} events unread"))

    def _notice(self, err: MinervaError) -> None:
        self._stats.overflows += 1
        self._emit(Notice(err.code, str(err)))

    def _fail(self, err: MinervaError) -> None:
        _LOGGER.warning("Live %s: %s", self.peer, err)
        self.error = err
        self._outbox.close(flush=False)
        self._close_now()

    def events(self) -> AsyncIterator[LiveEvent]:
        """Every event until the session ends (finish() then the last final, close(), or an error: see .error)."""
        return self._outbox.__aiter__()

    # ---- ending ------------------------------------------------------------------------------

    def finish(self) -> None:
        """No more audio: commit what is spoken, then end the events after the last final."""
        if self.closed or self._finishing:
            return
        self._push(self._converter.flush(), pad=True)
        utt = self._utt
        if utt.confirmed or (utt.started and not utt.vad):
            self._commit(utt, "stop")
        self._finishing = True
        self._pending.put_nowait(None)

    async def close(self) -> None:
        """The client is gone (or the server stops): cancel every decode and queued final at once."""
        if self.closed:
            return
        self._close_now()
        with contextlib.suppress(asyncio.CancelledError):
            await self._publisher

    def _close_now(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._unwant()
        if self._utt.decode is not None:
            self._utt.decode.cancel()
        for pending in self._unpublished:
            if pending.job is not None:
                self.hub.scheduler.withdraw(pending.job)
            if pending.decode is not None:
                pending.decode.cancel()
        self._publisher.cancel()
        self._outbox.close(flush=False)
        self.hub._forget(self)


def _samples_of(ms: int) -> int:
    return ms * RATE // 1000


def _padded(utt: _Utterance, end: int) -> np.ndarray:
    """The utterance's audio up to `end` with digital silence around it: 100 ms before, and after it as much
    as the 300 ms past the last speech that the audio does not have yet (a speculative decode starts 60 ms
    after the speech). Whisper is surer of the first and last words with that silence (as in handlers/asr.py)."""
    missing = max(0, utt.speech_end + TRAILING_PAD_SAMPLES - end) if utt.started else 0
    audio = pcm16_to_float(bytes(utt.audio[: end * 2]))
    return np.concatenate((np.zeros(LEADING_PAD_SAMPLES, np.float32), audio, np.zeros(missing, np.float32)))


class LiveHub:
    """Live transcription for every WebSocket front end; one per process, passed explicitly."""

    def __init__(self, stt: SpeechToText, settings: RealtimeSettings) -> None:
        self.stt = stt
        self.settings = settings
        self.stats = LiveStats()
        self.scheduler = LiveScheduler(stt.manager, settings.queue_size, OverflowPolicy(settings.overflow), self.stats)
        self._sessions: set[LiveSession] = set()

    def open(self, options: SessionOptions, peer: str = "") -> LiveSession:
        """A new session; SessionLimitError when --realtime-max-sessions are open."""
        if len(self._sessions) >= self.settings.max_sessions:
            self.stats.sessions_rejected += 1
            raise SessionLimitError(
                f"{self.settings.max_sessions} live sessions are open (--realtime-max-sessions); try again later"
            )
        options.format.validate()
        session = LiveSession(self, options, peer)
        self._sessions.add(session)
        self.stats.sessions = len(self._sessions)
        self.stats.sessions_total += 1
        return session

    def _forget(self, session: LiveSession) -> None:
        self._sessions.discard(session)
        self.stats.sessions = len(self._sessions)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    async def close(self) -> None:
        for session in list(self._sessions):
            await session.close()
        await self.scheduler.close()


__all__ = [
    "BufferOverflowError",
    "CommitEmptyError",
    "Committed",
    "Decode",
    "Failed",
    "Final",
    "Interim",
    "LiveEvent",
    "LiveHub",
    "LiveSession",
    "Notice",
    "SessionLimitError",
    "SessionOptions",
    "SpeechStarted",
    "SpeechStopped",
]
