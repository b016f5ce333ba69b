"""The Wyoming speech-to-text handler: Home Assistant's sequence, server-side endpointing, streamed transcripts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from wyoming.asr import Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Info, SelectProgram
from wyoming.vad import VoiceStarted, VoiceStopped

from ..audio import AudioConverter, AudioFormat, format_from_event
from ..budget import AudioBudget, BudgetLease
from ..errors import AudioTooLongError, MinervaError
from ..settings import AsrSettings
from ..speakers.service import SpeakerService
from ..stt.decode import TRAILING_PAD_SAMPLES, Decode, padded
from ..stt.endpointing import (
    NO_END_MS,
    EndpointConfig,
    Endpointer,
    EndpointEvent,
    Mark,
    WebRtcVad,
    silence_for_sensitivity,
)
from ..stt.hallucinations import clean_transcript
from ..stt.programs import normalise_language
from ..stt.service import SpeechToText
from .info import VERSION, WHISPER_ATTRIBUTION, DescribingHandler
from .server import EventSink, error_event
from .speaker_guess import SPEAKER_AUDIO_BYTES, SpeakerGuess

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CONVERT_INLINE_BYTES = 64 * 1024  # larger payloads are converted on a thread, not on the event loop


def asr_info(stt: SpeechToText, settings: AsrSettings) -> Info:
    """One program per configured model, the default first (a client without select-program uses it)."""
    return Info(
        asr=[
            AsrProgram(
                name=program.name,
                description=f"Whisper {program.name} ({'multilingual' if program.multilingual else 'English'}, "
                f"{program.engine})",
                attribution=WHISPER_ATTRIBUTION,
                installed=True,
                version=VERSION,
                models=[
                    AsrModel(
                        name=program.name,  # never the operator's path
                        description=f"Whisper {program.name}",
                        attribution=WHISPER_ATTRIBUTION,
                        installed=True,
                        version=VERSION,
                        languages=list(program.languages),
                    )
                ],
                supports_transcript_streaming=True,
                requires_external_vad=not settings.endpointing,
                # Quiet far-field microphones reach the VAD louder with auto gain; Whisper copes with noise better
                # than with the artefacts of noise suppression (README: Speech-to-text, Audio processing).
                prefers_auto_gain_enabled=True,
                prefers_noise_reduction_enabled=False,
            )
            for program in stt.programs
        ]
    )


@dataclass
class Utterance:
    """Everything about one utterance; replaced whole when the next one starts."""

    language: str | None = None
    program: str | None = None  # transcribe.name or select-program; None = route by language
    silence_ms: int = 400  # the silence that ends it (transcribe.vad_sensitivity)
    hints: list[str] = field(default_factory=list)
    fmt: AudioFormat | None = None
    converter: AudioConverter | None = None
    audio: bytearray = field(default_factory=bytearray)
    endpointer: Endpointer | None = None
    speculative: Decode | None = None
    guess: SpeakerGuess | None = None  # who speaks, found beside the latest decode (with enrolled voices)
    answered: bool = False
    failed: bool = False
    last_speech_wall: float = 0.0
    held: BudgetLease | None = None  # the buffered audio's share of the process-wide budget

    @property
    def samples(self) -> int:
        return len(self.audio) // 2


class AsrHandler(DescribingHandler):
    def __init__(
        self,
        sink: EventSink,
        stt: SpeechToText,
        settings: AsrSettings,
        budget: AudioBudget | None = None,
        speakers: SpeakerService | None = None,
    ) -> None:
        super().__init__(sink, lambda: asr_info(stt, settings))
        self.stt = stt
        self.settings = settings
        self.speakers = speakers  # with enrolled voices, transcripts carry context.speaker
        self._program: str | None = None  # select-program: for the rest of the connection
        self.budget = budget or AudioBudget(1 << 62)  # without one: bounded per utterance only
        self._utterance: Utterance | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- events ------------------------------------------------------------------------------

    async def handle_service_event(self, event: Event) -> bool:
        if event.type == "transcribe":
            data = event.data
            name = data.get("name")
            self._start(
                language=data.get("language"),
                program=name if isinstance(name, str) and name else None,
                sensitivity=data.get("vad_sensitivity"),
                hints=_hints(data),
            )
        elif SelectProgram.is_type(event.type):
            name = event.data.get("name")
            self._program = self.stt.program(name).name if isinstance(name, str) and name else None
        elif AudioStart.is_type(event.type):
            utterance = self._utterance if self._utterance and not self._utterance.fmt else self._start()
            self._set_format(utterance, format_from_event(event.data))
        elif AudioChunk.is_type(event.type):
            await self._on_chunk(event)
        elif AudioStop.is_type(event.type):
            self._on_stop()
        else:
            return await super().handle_service_event(event)
        return True

    @property
    def busy(self) -> bool:
        return self._utterance is not None or bool(self._tasks)

    def _start(
        self,
        language: object = None,
        program: str | None = None,
        sensitivity: object = None,
        hints: list[str] | None = None,
    ) -> Utterance:
        self._discard_speculation()
        if program is not None:
            program = self.stt.program(program).name  # an unknown name is an error now, not after the audio
        if self._utterance is not None and not self._utterance.answered and self._utterance.held is not None:
            self._utterance.held.release()  # replaced before it was answered: its audio is dropped
        self._utterance = Utterance(
            language=language if isinstance(language, str) else None,
            program=program or self._program,
            silence_ms=silence_for_sensitivity(sensitivity, self.settings.endpoint_silence_ms),
            hints=hints or [],
            held=self.budget.lease(),
        )
        return self._utterance

    def _set_format(self, utterance: Utterance, fmt: AudioFormat) -> None:
        utterance.fmt = fmt
        utterance.converter = AudioConverter(fmt, SAMPLE_RATE)
        # Without endpointing the client's audio-stop ends the utterance: pauses of any length stay inside it.
        end_ms = utterance.silence_ms if self.settings.endpointing else NO_END_MS
        utterance.endpointer = Endpointer(WebRtcVad(self.settings.vad_aggressiveness), EndpointConfig(end_ms=end_ms))

    async def _on_chunk(self, event: Event) -> None:
        utterance = self._utterance or self._start()
        if utterance.fmt is None:  # no audio-start: take the format from the chunk itself
            self._set_format(utterance, format_from_event(event.data))
        if utterance.answered or utterance.failed or not event.payload:
            return
        assert utterance.converter is not None and utterance.endpointer is not None
        pcm = await self._convert(utterance, event.payload)
        utterance.audio += pcm
        before = utterance.endpointer.speech_end_sample
        for mark in utterance.endpointer.feed(pcm):
            await self._on_mark(utterance, mark)
        if utterance.endpointer.speech_end_sample != before:
            utterance.last_speech_wall = time.monotonic()

    async def _convert(self, utterance: Utterance, payload: bytes) -> bytes:
        """16 kHz PCM of one chunk, after checking the cap and the budget on the format the client declared."""
        assert utterance.fmt is not None and utterance.converter is not None and utterance.held is not None
        seconds = len(payload) / utterance.fmt.bytes_per_second()
        try:
            if utterance.samples / SAMPLE_RATE + seconds > self.settings.max_audio_seconds:
                raise AudioTooLongError(
                    f"more than {self.settings.max_audio_seconds:g} s of audio in one utterance; the rest is ignored"
                )
            utterance.held.take(int(seconds * SAMPLE_RATE + 1) * 2)  # what the converted chunk will hold
        except MinervaError:
            utterance.failed = True
            utterance.audio = bytearray()  # never decoded now: free it with its share of the budget
            utterance.held.release()
            self._discard_speculation()
            raise
        if len(payload) <= CONVERT_INLINE_BYTES:
            return utterance.converter.convert(payload)
        return await asyncio.to_thread(utterance.converter.convert, payload)

    async def _on_mark(self, utterance: Utterance, mark: Mark) -> None:
        if mark.event is EndpointEvent.SPEECH_STARTED:
            if self.settings.endpointing:  # else the client's own VAD decides, and says nothing of ours
                await self.sink.send(VoiceStarted(timestamp=mark.sample * 1000 // SAMPLE_RATE).event())
        elif mark.event is EndpointEvent.PAUSED:
            self._discard_speculation()
            utterance.speculative = self._decode(utterance, mark.sample)
        elif mark.event is EndpointEvent.RESUMED:
            self._discard_speculation()
        elif mark.event is EndpointEvent.ENDED:
            await self.sink.send(VoiceStopped(timestamp=mark.sample * 1000 // SAMPLE_RATE).event())
            self._answer(utterance, self._reusable(utterance, mark.sample))

    def _on_stop(self) -> None:
        utterance, self._utterance = self._utterance or Utterance(), None
        if utterance.answered or utterance.failed:
            return  # the transcript went out at the endpoint (or an error did)
        if utterance.converter is not None:
            utterance.audio += utterance.converter.flush()
        if utterance.samples == 0:
            self._answer(utterance, None)  # nothing to decode: an empty transcript
            return
        endpointer = utterance.endpointer
        speech_end = endpointer.speech_end_sample if endpointer and endpointer.had_speech else utterance.samples
        self._answer(utterance, self._reusable(utterance, speech_end, whole=True))

    # ---- decoding ----------------------------------------------------------------------------

    def _decode(self, utterance: Utterance, speech_end: int, whole: bool = False) -> Decode:
        end = utterance.samples if whole else min(utterance.samples, speech_end + TRAILING_PAD_SAMPLES)
        options = self.stt.options(language=utterance.language, model=utterance.program, hints=utterance.hints)
        decode = Decode(self.stt, padded(utterance.audio, end, speech_end), options, speech_end)
        decode.start()
        if self.speakers is not None and self.speakers.enrolled:  # homes without enrolled voices pay nothing
            if utterance.guess is not None:
                utterance.guess.cancel()
            pcm = bytes(utterance.audio[: min(2 * end, SPEAKER_AUDIO_BYTES)])
            utterance.guess = SpeakerGuess(self.speakers, pcm, speech_end)
        return decode

    def _reusable(self, utterance: Utterance, speech_end: int, whole: bool = False) -> Decode:
        """The speculative decode when no speech came after it, else a fresh one."""
        speculative, utterance.speculative = utterance.speculative, None
        if speculative is not None and speculative.end_sample == speech_end and speculative.error is None:
            return speculative
        if speculative is not None:
            speculative.cancel()
        heard = utterance.endpointer is not None and utterance.endpointer.had_speech
        return self._decode(utterance, speech_end, whole=whole or not heard)

    def _discard_speculation(self) -> None:
        utterance = self._utterance
        if utterance is not None and utterance.speculative is not None:
            utterance.speculative.cancel()
            utterance.speculative = None

    def _answer(self, utterance: Utterance, decode: Decode | None) -> None:
        utterance.answered = True
        task = asyncio.create_task(self._send_transcript(utterance, decode))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_transcript(self, utterance: Utterance, decode: Decode | None) -> None:
        heard = utterance.endpointer is not None and utterance.endpointer.had_speech
        language = (
            decode.language if decode else normalise_language(utterance.language) or self.stt.default.languages[0]
        )
        started = False
        texts: list[str] = []
        try:
            if decode is not None:
                async for segment in decode.follow():
                    if not started:
                        await self.sink.send(TranscriptStart(language=decode.language).event())
                        started = True
                    texts.append(segment.text)
                    if clean_transcript(segment.text, heard):
                        await self.sink.send(TranscriptChunk(text=segment.text).event())
                language = decode.language
        except MinervaError as err:
            _LOGGER.warning("ASR %s: %s (%s)", self.sink.peer, err, err.code)
            await self.sink.send(error_event(err))
            return
        except Exception as err:
            _LOGGER.exception("ASR %s: transcription failed", self.sink.peer)
            await self.sink.send(error_event(err))
            return
        finally:
            if decode is not None:
                decode.cancel()  # a no-op when it finished; stops the work when we were cancelled
            if utterance.held is not None:
                utterance.held.release()
        text = clean_transcript("".join(texts), heard)
        guess = utterance.guess
        if guess is not None and (decode is None or not text or guess.end_sample != decode.end_sample):
            guess = None  # nothing said, or a guess for other audio than the transcript's
        context = await guess.context() if guess is not None else None
        if not started:
            await self.sink.send(TranscriptStart(language=language).event())
        await self.sink.send(Transcript(text=text, language=language, context=context).event())
        await self.sink.send(TranscriptStop().event())
        since_speech = (time.monotonic() - utterance.last_speech_wall) * 1000 if utterance.last_speech_wall else -1
        _LOGGER.info(
            "ASR %s: %.2f s audio, decode %.0f ms, end of speech → transcript %.0f ms, %d chars%s",
            self.sink.peer,
            decode.audio_seconds if decode else 0.0,
            decode.decode_ms if decode else 0.0,
            since_speech,
            len(text),
            f", waited {guess.waited_ms:.0f} ms for the speaker" if guess is not None else "",
        )

    async def drain(self) -> None:
        """Wait for transcripts still being decoded (stdio: the input ended, the output did not)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def disconnect(self) -> None:
        self._discard_speculation()
        if self._utterance is not None and self._utterance.guess is not None:
            self._utterance.guess.cancel()
        if self._utterance is not None and self._utterance.held is not None:
            self._utterance.held.release()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _hints(data: dict[str, list[str]]) -> list[str]:
    """transcript_names, then transcript_terms (lists of strings: checked in handlers/events.py)."""
    return [v for key in ("transcript_names", "transcript_terms") for v in data.get(key, []) if v.strip()]
