"""Live speech-to-text: audio streams in, utterances are found by webrtcvad, transcripts come out as they form.

- `LiveHub` (one per process): caps the number of sessions, owns the scheduler (scheduler.py) that shares
  the inference executor with every other service, and keeps the statistics (final latency for /metrics).
- `LiveSession`: one client stream. `feed()` raw PCM in the client's format (converted to 16 kHz mono, run through
  the VAD inline: microseconds per 30 ms frame); `commit()` ends the current utterance now; `finish()` ends the
  stream after the last final; `events()` yields SpeechStarted/SpeechStopped/Committed/Interim/Final/Failed/Notice.

Only speech reaches Whisper: an utterance exists once the VAD has heard 240 ms of speech (a click or the onset of
steady noise is forgotten), keeps `prefix_ms` before it, and its final decode also runs Silero (faster-whisper).
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
from collections.abc import AsyncIterator

import numpy as np

from ...audio import AudioConverter
from ...errors import MinervaError, QueueFullError
from ...settings import RealtimeSettings
from ..decode import RATE, TRAILING_PAD_SAMPLES, Decode
from ..endpointing import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    NO_END_MS,
    EndpointConfig,
    Endpointer,
    EndpointEvent,
    Mark,
    WebRtcVad,
)
from ..engine import TranscriptionOptions
from ..service import SpeechToText
from .parts import Outbox, PendingFinal, Utterance, ms, padded_utterance, samples_of
from .scheduler import POLL_SECONDS, FinalJob, LiveScheduler
from .types import (
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

_LOGGER = logging.getLogger(__name__)

MIN_COMMIT_SAMPLES = RATE // 10  # a commit needs 100 ms of audio (as OpenAI's does)
PRE_SPEECH_KEEP_SAMPLES = RATE // 5  # kept beyond the prefix while waiting for speech to start
OUTBOX_LIMIT = 512  # events a client may leave unread (interims excluded: they replace each other)
FINAL_RETRY_SECONDS = 10.0  # a final the manager refuses (its queue filled by others) is retried this long


class LiveSession:
    def __init__(self, hub: LiveHub, options: SessionOptions, peer: str) -> None:
        self.hub = hub
        self.id = "sess_" + secrets.token_hex(12)
        self.peer = peer
        self.error: MinervaError | None = None  # why the session ended on its own (e.g. an unread outbox)
        self.closed = False
        self._settings = hub.settings
        self._stats = hub.stats
        self._outbox = Outbox(OUTBOX_LIMIT)
        self._pending: asyncio.Queue[PendingFinal | None] = asyncio.Queue()
        self._unpublished: set[PendingFinal] = set()  # committed, result not yet sent
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
        # Local only: interims re-decode the growing utterance several times a second, and a network hop on each
        # would cost more than a bigger upstream model gains (README: Upstream servers and fleets).
        return self.hub.stt.options(language=options.language, prompt=options.prompt, local_only=True)

    def _endpointer(self) -> Endpointer:
        silence = self.options.silence_ms or self.hub.silence_ms
        aggressiveness = self.options.vad_aggressiveness
        if aggressiveness is None:
            aggressiveness = self.hub.stt.settings.vad_aggressiveness
        config = EndpointConfig(end_ms=silence if self.options.vad else NO_END_MS)
        if self._vad is None or self._vad_level != aggressiveness:
            # One VAD per session: webrtcvad adapts to the noise floor, and a fresh one takes noise for speech.
            self._vad, self._vad_level = WebRtcVad(aggressiveness), aggressiveness
        return Endpointer(self._vad, config)

    def _new_utterance(self) -> Utterance:
        self._numbers += 1
        return Utterance(self._numbers, self._samples, self._endpointer(), self.options.vad)

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
            if self.closed:
                return  # an event could not be queued: the session failed mid-chunk
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

    def _trim(self, utt: Utterance) -> None:
        """Before speech, keep only what a start of speech could still need (the prefix and a little more)."""
        keep = samples_of(self.options.prefix_ms) + PRE_SPEECH_KEEP_SAMPLES
        excess = utt.samples - keep
        if excess > 0:
            del utt.audio[: excess * 2]
            utt.origin += excess

    def _confirm(self, utt: Utterance) -> bool:
        """Enough speech makes an utterance (SpeechStarted goes out); a click or the onset of steady noise
        (webrtcvad calls ~90 ms of it speech) followed by silence is forgotten. False while unconfirmed."""
        endpointer = utt.endpointer
        if endpointer.speech_ms >= endpointer.config.min_speech_ms:
            utt.confirmed = True
            utt.idle_from = utt.samples
            self._emit(SpeechStarted(utt.number, ms(utt.origin)))
            return True
        silence = ms(endpointer.samples - endpointer.speech_end_sample)
        if utt.vad and silence >= (self.options.silence_ms or self.hub.silence_ms):
            self._utt = Utterance(utt.number, self._samples, self._endpointer(), utt.vad)
        return False

    def _on_mark(self, utt: Utterance, mark: Mark) -> None:
        if mark.event is EndpointEvent.SPEECH_STARTED:
            start = max(0, utt.relative(mark.sample) - samples_of(self.options.prefix_ms))
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
            self._emit(SpeechStopped(utt.number, ms(utt.ep_origin + mark.sample)))
            self._commit(utt, "vad")

    # ---- interim and speculative decodes -----------------------------------------------------

    @staticmethod
    def _final_ready(utt: Utterance, decode: Decode | None) -> bool:
        """Whether a decode can be this utterance's final: gated, not failed, and covering all its speech."""
        return decode is not None and decode.gated and decode.error is None and decode.end_sample >= utt.speech_end

    def _maybe_want(self, utt: Utterance) -> None:
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
        # Between interims the session leaves the workers idle for interim_ms of audio, and at least as long as
        # the last decode took: a decode cannot be stopped midway, so one still running when the speaker pauses
        # delays the final (on a busy machine by up to a whole decode). At most half the time goes to interims.
        interval = samples_of(self._settings.interim_ms)
        wait = max(interval, utt.last_decode_samples)
        if self.options.interim and interval and utt.samples - utt.idle_from >= wait:
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
        decode = Decode(self.hub.stt, padded_utterance(utt, utt.samples), options, utt.samples)
        utt.decode = decode
        task = decode.start()
        self.hub.scheduler.track(task)
        task.add_done_callback(lambda _: self._on_decode_done(utt, decode))

    def _on_decode_done(self, utt: Utterance, decode: Decode) -> None:
        if self.closed or utt.committed or utt is not self._utt or decode is not utt.decode:
            return  # a final uses it (or nobody does)
        utt.idle_from = utt.samples
        utt.last_decode_samples = samples_of(round(decode.decode_ms))
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
                f"the input buffer holds {ms(utt.samples)} ms of audio; at least {ms(MIN_COMMIT_SAMPLES)} ms needed"
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

    def _commit(self, utt: Utterance, reason: str) -> None:
        utt.committed = True
        self._unwant()
        self._utt = self._new_utterance()
        if utt.vad and reason == "vad":
            end = min(utt.samples, utt.speech_end + TRAILING_PAD_SAMPLES)
            end_wall = utt.last_speech_wall or time.monotonic()
        else:
            end = utt.samples
            end_wall = time.monotonic()
        pending = PendingFinal(utt.number, end, end_wall)
        self._pending_samples += end
        self._emit(Committed(utt.number, ms(utt.samples), reason))
        if self.closed:
            return
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
            self._submit(pending, padded_utterance(utt, end))
        self._unpublished.add(pending)
        self._pending.put_nowait(pending)

    def _resolve_reused(self, pending: PendingFinal, utt: Utterance, decode: Decode, end: int) -> None:
        if self.closed:
            return
        if decode.error is not None:  # e.g. refused by a full queue: decode again as a real final
            self._submit(pending, padded_utterance(utt, end))
            return
        pending.resolve(self._final(pending, decode, reused=True))

    def _submit(self, pending: PendingFinal, audio: np.ndarray) -> None:

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

    def _final(self, pending: PendingFinal, decode: Decode, reused: bool) -> Final:
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


class LiveHub:
    """Live transcription for every WebSocket front end; one per process, passed explicitly."""

    def __init__(self, stt: SpeechToText, settings: RealtimeSettings) -> None:
        self.stt = stt
        self.settings = settings
        self.stats = LiveStats()
        self.scheduler = LiveScheduler(stt.manager, settings.queue_size, OverflowPolicy(settings.overflow), self.stats)
        self._sessions: set[LiveSession] = set()

    @property
    def silence_ms(self) -> int:
        """The one endpoint silence (--endpoint-silence-ms) the Wyoming handler uses too; a client may ask for
        another per session."""
        return self.stt.settings.endpoint_silence_ms

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
