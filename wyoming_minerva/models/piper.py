"""Text-to-speech on Piper: the engine (one loaded voice) and the TextToSpeech facade.

The facade is what the Wyoming handler and the HTTP API share: voice listing and choice, request options over
the server's flags, sentence-by-sentence streaming (`Speech.stream`), a bounded cache of synthesized pieces.
Voices are models in the ModelManager (several stay loaded); synthesis runs on its executor, one job per
piece, so concurrent requests take turns piece by piece instead of waiting for whole answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import AudioConverter, AudioFormat, convert_pcm, float_to_pcm16
from ..errors import InferenceError, MinervaError, QueueFullError
from ..sentences import DEFAULT_CONFIG, SentenceSplitter, SplitterConfig, SsmlStripper, split_text
from ..settings import TtsSettings
from .base import StreamingSynthesizer, SynthesisOptions, Synthesizer, VoiceInfo
from .manager import CancelToken, ModelManager
from .piper_stream import CHUNK_FRAMES, FIRST_CHUNK_FRAMES, VitsModel
from .piper_voices import (
    VOICE_PATTERN,
    VOICE_URL_FORMAT,
    UnknownSpeakerError,
    UnknownVoiceError,
    VoiceFiles,
    bundled_voice,
    download_voice,
    match_voice,
    name_list,
    read_voice_config,
    scan_voices,
    speaker_id_for,
    voice_files_for_path,
    voice_for_language,
    voice_info,
)
from .tts_support import (
    CLAUSE_PAUSE,
    SENTENCE_PAUSE,
    TEXT_FORMATS,
    AudioCache,
    EmptyTextError,
    SilenceTrimmer,
    SpeechOptions,
    TextTooLongError,
    TtsStats,
    UnsupportedTextFormatError,
    ends_sentence,
    text_format_of,
    trim_silence,
)

__all__ = [  # the facade and what its callers need, in one place
    "CLAUSE_PAUSE",
    "SENTENCE_PAUSE",
    "TEXT_FORMATS",
    "AudioCache",
    "EmptyTextError",
    "PiperSynthesizer",
    "Speech",
    "SpeechOptions",
    "TextToSpeech",
    "TextTooLongError",
    "TtsStats",
    "UnknownSpeakerError",
    "UnknownVoiceError",
    "UnsupportedTextFormatError",
    "VoiceLoader",
    "render_piece",
    "trim_silence",
]

_LOGGER = logging.getLogger(__name__)
STREAM_GAIN_WINDOW = 32  # pieces whose peaks set the level of a streamed piece

# ---- the engine ------------------------------------------------------------------------------


class PiperSynthesizer:
    """One loaded Piper voice (implements models.base.Synthesizer and StreamingSynthesizer). Thread-safe."""

    def __init__(self, voice: Any, info: VoiceInfo, model: VitsModel | None = None) -> None:
        self._voice = voice  # phonemes, ids and config; the ONNX model runs in `model`
        self._model = model or VitsModel(whole=voice.session)
        self.info = info
        self._peaks: deque[float] = deque(maxlen=STREAM_GAIN_WINDOW)  # raw peaks of the last pieces
        self._peaks_lock = threading.Lock()

    @staticmethod
    def load(files: VoiceFiles, threads: int | None = None) -> PiperSynthesizer:
        """Blocking: the ONNX session(s) for one voice (call it through the model manager)."""
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        config = read_voice_config(files.config)
        if config is None:
            raise UnknownVoiceError(f"{files.config} is not a Piper voice config")
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.enable_mem_pattern = False  # patterns are per input shape, and every sentence has its own
        # Threads that spin between runs take a core from the other services (and from the other part of a cut
        # model) on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        model = VitsModel.load(files.model, options)
        voice = PiperVoice(session=None, config=PiperConfig.from_dict(config))  # phonemes only: `model` runs it
        return PiperSynthesizer(voice, voice_info(files.name, config), model)

    def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        """Blocking; 16-bit mono PCM at info.sample_rate (espeak may cut the text further: parts are joined).

        As Piper does, each part is scaled to full range (and by the volume).
        """
        parts: list[bytes] = []
        for feeds in self._feeds(text, options):
            audio = np.concatenate(list(self._model.audio(feeds)))
            peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
            self._remember(peak)
            gain = options.volume / peak if peak >= 1e-8 else 0.0
            parts.append(float_to_pcm16(audio * gain))
        return b"".join(parts)

    def stream(self, text: str, options: SynthesisOptions) -> Iterator[bytes]:
        """Blocking; like `synthesize`, but the audio comes as it is decoded, at the voice's usual level.

        The level cannot wait for the peak of the whole piece: the gain is the one that brings the loudest of
        this voice's recent pieces to full range (Piper's per-piece scaling already varies by several dB from
        piece to piece). Before the voice has spoken anything, the piece comes whole.
        """
        with self._peaks_lock:
            loudest = max(self._peaks, default=0.0)
        if not self._model.streams or loudest < 1e-8:
            yield self.synthesize(text, options)
            return
        gain = options.volume / loudest
        for feeds in self._feeds(text, options):
            peak = 0.0
            for audio in self._model.audio(feeds, FIRST_CHUNK_FRAMES, CHUNK_FRAMES):
                peak = max(peak, float(np.max(np.abs(audio))) if len(audio) else 0.0)
                yield float_to_pcm16(audio * gain)
            self._remember(peak)

    def _remember(self, peak: float) -> None:
        if peak >= 1e-8:
            with self._peaks_lock:
                self._peaks.append(peak)

    def _feeds(self, text: str, options: SynthesisOptions) -> Iterator[dict[str, np.ndarray]]:
        """The model's inputs for each sentence espeak finds in `text` (Piper's own input contract)."""
        config = self._voice.config
        scales = np.array(
            [
                config.noise_scale if options.noise_scale is None else options.noise_scale,
                config.length_scale if options.length_scale is None else options.length_scale,
                config.noise_w_scale if options.noise_w is None else options.noise_w,
            ],
            dtype=np.float32,
        )
        speaker = config.default_speaker_id if options.speaker_id is None else options.speaker_id
        for phonemes in self._voice.phonemize(text):
            if not phonemes:
                continue
            ids = np.array([self._voice.phonemes_to_ids(phonemes)], dtype=np.int64)
            feeds: dict[str, np.ndarray] = {
                "input": ids,
                "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
                "scales": scales,
            }
            if config.num_speakers > 1:
                feeds["sid"] = np.array([speaker], dtype=np.int64)
            yield feeds


def render_piece(synth: Synthesizer, text: str, options: SynthesisOptions, rate: int) -> bytes:
    """Blocking (runs on the executor): one piece as 16-bit mono PCM at `rate`, its edge silence trimmed."""
    native = synth.info.sample_rate
    pcm = trim_silence(synth.synthesize(text, options), native)
    return convert_pcm(pcm, AudioFormat(native, 2, 1), rate) if rate != native and pcm else pcm


def stream_piece(
    synth: StreamingSynthesizer, text: str, options: SynthesisOptions, rate: int, cancel: CancelToken
) -> Iterator[bytes]:
    """Blocking (runs on the executor): `render_piece` as it is decoded (edges trimmed, resampled on the way)."""
    native = synth.info.sample_rate
    trimmer = SilenceTrimmer(native)
    converter = AudioConverter(AudioFormat(native, 2, 1), rate) if rate != native else None
    for pcm in synth.stream(text, options):
        if cancel.cancelled:
            return
        out = trimmer.feed(pcm)
        if converter is not None:
            out = converter.convert(out)
        if out:
            yield out
    tail = trimmer.finish()
    if converter is not None:
        tail = converter.convert(tail) + converter.flush()
    if tail:
        yield tail


# ---- the facade --------------------------------------------------------------------------------

VoiceLoader = Callable[[VoiceFiles], Synthesizer]


class TextToSpeech:
    """Text-to-speech for every front end: `await tts.open(...)` validates and loads, `speech.stream(...)` speaks."""

    def __init__(
        self,
        settings: TtsSettings,
        manager: ModelManager,
        data_dirs: tuple[Path, ...] = (),
        local_files_only: bool = False,
        *,
        splitter: SplitterConfig = DEFAULT_CONFIG,
        load_voice: VoiceLoader | None = None,
        voice_url_format: str = VOICE_URL_FORMAT,
        rescan_seconds: float = 5.0,
        threads: int | None = None,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.data_dirs = data_dirs
        self.local_files_only = local_files_only
        self.splitter = splitter
        self.cache = AudioCache(int(settings.cache_mb * 1024 * 1024))
        self.stats = TtsStats()
        # One synthesis uses `threads` cores; a voice runs as many at once as the cores allow (one on a small
        # machine). Requests take turns piece by piece, so a second client waits for one piece, not one answer,
        # and memory stays that of one synthesis per voice.
        cores = os.cpu_count() or 1
        self.threads = threads or min(cores, 4)
        self.parallel_per_voice = max(1, cores // self.threads)
        self._turns: dict[str, asyncio.Semaphore] = {}
        self._waiting = 0  # pieces waiting for their voice's turn (bounded like the executor's queue)
        self._load_voice: VoiceLoader = load_voice or partial(PiperSynthesizer.load, threads=self.threads)
        self._url_format = voice_url_format
        self._rescan_seconds = rescan_seconds
        self._files: dict[str, VoiceFiles] = {}
        self._infos: dict[str, VoiceInfo] = {}
        self._configs: dict[tuple[Path, float], dict[str, Any] | None] = {}
        self._scanned_at = 0.0
        self._rescan()

    # ---- voices ----------------------------------------------------------------------------

    def _rescan(self) -> None:
        files: dict[str, VoiceFiles] = {}
        bundled = bundled_voice()
        if bundled is not None:
            files[bundled.name] = bundled
        files.update(scan_voices(self.data_dirs, lambda config: self._info_for(config) is not None))
        configured = voice_files_for_path(Path(self.settings.voice).expanduser())
        if configured is not None:
            files[configured.name] = configured
        infos = {name: info for name, entry in files.items() if (info := self._info_for(entry.config, name))}
        self._files = {name: files[name] for name in infos}
        self._infos = infos
        self._scanned_at = time.monotonic()

    def _info_for(self, config_path: Path, name: str | None = None) -> VoiceInfo | None:
        """A voice's info from its config, read once per version of the file (describe stays cheap)."""
        try:
            stamp = (config_path, config_path.stat().st_mtime)
        except OSError:
            return None
        if stamp not in self._configs:
            self._configs[stamp] = read_voice_config(config_path)
        config = self._configs[stamp]
        if config is None:
            return None
        return voice_info(name or config_path.name.removesuffix(".onnx.json"), config)

    def voices(self) -> list[VoiceInfo]:
        """Every voice that can be spoken now, without loading any (cheap: for `describe` and /v1/models)."""
        if time.monotonic() - self._scanned_at > self._rescan_seconds:
            self._rescan()
        return [self._infos[name] for name in sorted(self._infos)]

    @property
    def default_voice(self) -> str:
        configured = voice_files_for_path(Path(self.settings.voice).expanduser())
        if configured is not None:
            return configured.name
        return match_voice(self.settings.voice, self._infos) or self.settings.voice

    def choose(self, voice: str | None = None, language: str | None = None) -> tuple[str, VoiceFiles | None]:
        """The voice a request means: (name, files), files None when it will be downloaded on load.

        UnknownVoiceError (naming the available voices) when nothing matches.
        """
        if not voice and language:
            voice = voice_for_language(language, list(self._infos.values()), self.default_voice)
            if voice is None:
                languages = {code for info in self._infos.values() for code in info.languages}
                raise UnknownVoiceError(f"no voice speaks {language!r}; available languages: {name_list(languages)}")
        requested = voice or self.settings.voice
        if requested.endswith(".onnx") or "/" in requested:
            files = voice_files_for_path(Path(requested).expanduser())
            if files is None:
                raise UnknownVoiceError(f"no Piper voice at {requested} (needs the .onnx and its .onnx.json)")
            return files.name, files
        name = match_voice(requested, self._infos)
        if name is None:
            self._rescan()  # a voice copied into a data dir since the last look
            name = match_voice(requested, self._infos)
        if name is not None:
            return name, self._files[name]
        available = name_list(self._infos)
        if VOICE_PATTERN.match(requested):
            if self.local_files_only:
                raise UnknownVoiceError(
                    f"voice {requested!r} is not installed and downloads are off (--local-files-only); "
                    f"available: {available}"
                )
            if self.data_dirs:
                return requested, None
        raise UnknownVoiceError(f"voice {requested!r} is not installed; available: {available}")

    def check_defaults(self) -> None:
        """At start: the configured voice (and speaker) exist or can be downloaded, else UnknownVoiceError."""
        name, files = self.choose()
        info = self._infos.get(name)
        if files is not None and info is not None:
            speaker_id_for(self.settings.speaker, info)

    def _loader(self, name: str, files: VoiceFiles | None) -> tuple[str, Callable[[], Synthesizer]]:
        download_dir = self.data_dirs[0] if self.data_dirs else Path()
        model = files.model if files is not None else download_dir / f"{name}.onnx"

        def load() -> Synthesizer:
            found = files or download_voice(name, download_dir, self._url_format)
            return self._load_voice(found)

        return f"piper:{model.resolve()}", load

    # ---- requests --------------------------------------------------------------------------

    def check_text(self, text: str) -> None:
        """EmptyTextError / TextTooLongError before anything is synthesized (HTTP: before the first byte)."""
        if not text or not text.strip():
            raise EmptyTextError("text is empty")
        if len(text) > self.settings.max_text_chars:
            raise TextTooLongError(
                f"text has {len(text)} characters; the limit is {self.settings.max_text_chars} (--max-text-chars)"
            )

    def pieces(self, text: str, text_format: str | None = None) -> list[str]:
        """The pieces a whole text is spoken in; errors for empty, too long or unspeakable text."""
        self.check_text(text)
        if text_format_of(text_format) == "ssml":
            stripper = SsmlStripper()
            text = stripper.feed(text) + stripper.finish()
        pieces = split_text(text, self.splitter)
        if not pieces:
            raise EmptyTextError("the text has nothing to speak (only markup, code or symbols)")
        return pieces

    async def open(
        self,
        voice: str | None = None,
        *,
        language: str | None = None,
        speaker: str | int | None = None,
        options: SpeechOptions | None = None,
    ) -> Speech:
        """Choose and load the voice (downloading it when allowed), check speaker and options."""
        merged = (options or SpeechOptions()).over(self.settings)
        name, files = self.choose(voice, language)
        key, load = self._loader(name, files)
        synth = await self.manager.get(key, load)
        if files is None:
            self._rescan()  # the downloaded voice is now installed
        if speaker is None and name == self.default_voice:
            speaker = self.settings.speaker
        synthesis = SynthesisOptions(
            speaker_id=speaker_id_for(speaker, synth.info),
            length_scale=merged.length_scale,
            noise_scale=merged.noise_scale,
            noise_w=merged.noise_w,
            volume=1.0 if merged.volume is None else merged.volume,
        )
        rate = merged.sample_rate or synth.info.sample_rate
        silence = merged.sentence_silence or 0.0
        return Speech(self, key, load, synth, synthesis, rate, silence)

    async def synthesize(self, text: str, voice: str | None = None, **kwargs: Any) -> tuple[bytes, AudioFormat]:
        """A whole text as one PCM buffer (for callers that do not stream)."""
        speech = await self.open(voice, **kwargs)
        chunks = [pcm async for pcm in speech.stream(text)]
        return b"".join(chunks), speech.format

    async def preload(self) -> None:
        """Load the default voice and run it once, so the first request pays neither."""
        speech = await self.open()
        await self.manager.run(render_piece, speech.synth, "Ready.", speech.synthesis, speech.format.rate)

    async def render(self, key: str, synth: Synthesizer, piece: str, synthesis: SynthesisOptions, rate: int) -> bytes:
        cache_key = (key, synthesis, rate, piece)
        cached = self.cache.get(cache_key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        async with self._turn(key):
            pcm = await self.manager.run(render_piece, synth, piece, synthesis, rate)
        self.cache.put(cache_key, pcm)
        return pcm

    async def render_stream(
        self, key: str, synth: Synthesizer, piece: str, synthesis: SynthesisOptions, rate: int
    ) -> AsyncIterator[bytes]:
        """`render`, but the audio comes in parts as it is decoded (for the first piece of an answer)."""
        if not isinstance(synth, StreamingSynthesizer) or (key, synthesis, rate, piece) in self.cache:
            yield await self.render(key, synth, piece, synthesis, rate)
            return
        parts: list[bytes] = []
        async with self._turn(key):
            async for pcm in self.manager.iterate(partial(stream_piece, synth, piece, synthesis, rate)):
                parts.append(pcm)
                yield pcm
        self.cache.put((key, synthesis, rate, piece), b"".join(parts))

    @contextlib.asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        """One synthesis of a voice's turns (pieces of concurrent requests alternate), timed and counted."""
        turn = self._turns.setdefault(key, asyncio.Semaphore(self.parallel_per_voice))
        if self._waiting >= self.manager.capacity:
            raise QueueFullError(f"{self._waiting} text-to-speech pieces are waiting; try again shortly")
        self._waiting += 1
        try:
            await turn.acquire()
        finally:
            self._waiting -= 1
        started = time.perf_counter()
        try:
            yield
        except MinervaError:
            raise
        except Exception as err:
            raise InferenceError(f"synthesis failed: {err}") from err
        finally:
            turn.release()
        self.stats.pieces_synthesized += 1
        self.stats.synthesis_seconds += time.perf_counter() - started


class Speech:
    """One request with its voice loaded and options fixed; `format` is the one format of all its audio."""

    def __init__(
        self,
        tts: TextToSpeech,
        key: str,
        load: Callable[[], Synthesizer],
        synth: Synthesizer,
        synthesis: SynthesisOptions,
        rate: int,
        silence: float,
    ) -> None:
        self._tts = tts
        self._key = key
        self._load = load
        self.synth = synth
        self.voice: VoiceInfo = synth.info
        self.synthesis = synthesis
        self.format = AudioFormat(rate, 2, 1)
        self._extra_silence = silence
        self._previous: str | None = None  # the piece spoken last, which decides the pause before the next

    async def stream(self, text: str | AsyncIterable[str], text_format: str | None = None) -> AsyncIterator[bytes]:
        """PCM per piece, each as soon as it is synthesized. `text` is a whole text or its deltas as they come.

        Errors: EmptyTextError, TextTooLongError, UnsupportedTextFormatError, QueueFullError, InferenceError.
        A whole text is checked before the first piece; deltas are checked as they arrive.
        """
        self._tts.stats.requests += 1
        self._previous = None
        async with self._tts.manager.use(self._key, self._load):  # an idle sweep never unloads it mid-answer
            if isinstance(text, str):
                for piece in self._tts.pieces(text, text_format):
                    async for pcm in self._speak(piece):
                        yield pcm
                return
            ssml = SsmlStripper() if text_format_of(text_format) == "ssml" else None
            splitter = SentenceSplitter(self._tts.splitter)
            limit, total = self._tts.settings.max_text_chars, 0
            async for delta in text:
                total += len(delta)
                if total > limit:
                    raise TextTooLongError(
                        f"the streamed text passed the limit of {limit} characters (--max-text-chars)"
                    )
                for piece in splitter.feed(ssml.feed(delta) if ssml else delta):
                    async for pcm in self._speak(piece):
                        yield pcm
            for piece in splitter.feed(ssml.finish()) + splitter.finish() if ssml else splitter.finish():
                async for pcm in self._speak(piece):
                    yield pcm
            if self._previous is None:
                raise EmptyTextError("the text has nothing to speak" if total else "text is empty")

    async def _speak(self, piece: str) -> AsyncIterator[bytes]:
        """A piece: the first of an answer as it is decoded (sooner first audio), the others whole after a pause."""
        previous, self._previous = self._previous, piece
        if previous is None:
            async for pcm in self._tts.render_stream(self._key, self.synth, piece, self.synthesis, self.format.rate):
                yield pcm
            return
        pcm = await self._tts.render(self._key, self.synth, piece, self.synthesis, self.format.rate)
        pause = SENTENCE_PAUSE + self._extra_silence if ends_sentence(previous) else CLAUSE_PAUSE
        yield bytes(2 * round(pause * self.format.rate)) + pcm
