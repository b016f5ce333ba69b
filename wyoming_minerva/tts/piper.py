"""Text-to-speech on Piper: the engine (one loaded voice) and the TextToSpeech facade.

The facade is what the Wyoming handler and the HTTP API share: voice listing and choice, request options over
the server's flags, sentence-by-sentence streaming (`Speech.stream`), a bounded cache of synthesized pieces.
Voices are models in the ModelManager (several stay loaded); synthesis runs on its executor, one job per
piece, so concurrent requests take turns piece by piece instead of waiting for whole answers.
With upstreams (--tts-upstream) the pieces go to them first and the local voice is the fallback (relay.py): every
front end gets it through `Speech.stream`, in the format the local voice would have used.
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
from ..runtime.manager import CancelToken, ModelManager
from ..settings import TtsSettings
from ..untrusted import clean_text, is_plain_name, looks_like_path, quote_name
from ..upstream import SpeakingUpstream, UpstreamPool
from ..upstream.speech import speak_with_failover
from .engine import StreamingSynthesizer, SynthesisOptions, Synthesizer, VoiceInfo
from .piper_stream import CHUNK_FRAMES, FIRST_CHUNK_FRAMES, VitsModel
from .relay import UpstreamVoice, converted, speed_of
from .sentences import DEFAULT_CONFIG, SentenceSplitter, SplitterConfig, SsmlStripper, split_text
from .support import (
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
from .voices import (
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
    """One loaded Piper voice (implements tts.engine.Synthesizer and StreamingSynthesizer). Thread-safe."""

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
            _LOGGER.error("%s is not a Piper voice config", files.config)
            raise UnknownVoiceError(f"voice {files.name} has no valid Piper config")
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
        upstream: UpstreamPool[SpeakingUpstream] | None = None,
    ) -> None:
        self.settings = settings
        self.upstream = upstream  # --tts-upstream servers, preferred while healthy; None = local only
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
        if configured is not None and looks_like_path(self.settings.voice):
            files[configured.name] = configured  # the operator's voice file, from then on known by its name
        infos = {name: info for name, entry in files.items() if (info := self._info_for(entry.config, name))}
        self._files = {name: files[name] for name in infos}
        self._infos = infos
        self._scanned_at = time.monotonic()

    def rescan(self) -> None:
        """Look at the data dirs now (the catalog installed or removed a voice): no waiting for the next look."""
        self._rescan()

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
        if looks_like_path(self.settings.voice):
            configured = voice_files_for_path(Path(self.settings.voice).expanduser())
            return configured.name if configured is not None else Path(self.settings.voice).stem
        return match_voice(self.settings.voice, self._infos) or self.settings.voice

    def choose(self, voice: str | None = None, language: str | None = None) -> tuple[str, VoiceFiles | None]:
        """The voice a request means: (name, files), files None when it will be downloaded on load.

        `voice` comes from a client: it names an installed voice (data dirs, bundled, the operator's --voice)
        or a downloadable one, and is never opened as a path. Without it, the operator's --voice (a name or a
        path). UnknownVoiceError (naming the available voices, never echoing a path) when nothing matches.
        """
        if not voice and language:
            voice = voice_for_language(language, list(self._infos.values()), self.default_voice)
            if voice is None:
                languages = {code for info in self._infos.values() for code in info.languages}
                raise UnknownVoiceError(
                    f"no voice speaks {quote_name(language)}; available languages: {name_list(languages)}"
                )
        if voice:
            return self._named(voice)
        configured = self.settings.voice
        if looks_like_path(configured):
            files = voice_files_for_path(Path(configured).expanduser())
            if files is None:
                _LOGGER.error("No Piper voice at %s (needs the .onnx and its .onnx.json)", configured)
                raise UnknownVoiceError("the --voice file is missing (it needs the .onnx and its .onnx.json)")
            return files.name, files
        return self._named(configured)

    def _named(self, requested: str) -> tuple[str, VoiceFiles | None]:
        if not is_plain_name(requested):
            raise UnknownVoiceError(
                "voices are chosen by name (file paths are only for the operator's --voice); "
                f"available: {name_list(self._infos)}"
            )
        name = match_voice(requested, self._infos)
        if name is None:
            self._rescan()  # a voice copied into a data dir since the last look
            name = match_voice(requested, self._infos)
        if name is not None:
            return name, self._files[name]
        available = name_list(self._infos)
        if VOICE_PATTERN.fullmatch(requested):
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
        if not text or not clean_text(text).strip():
            raise EmptyTextError("text is empty")
        if len(text) > self.settings.max_text_chars:
            raise TextTooLongError(
                f"text has {len(text)} characters; the limit is {self.settings.max_text_chars} (--max-text-chars)"
            )

    def pieces(self, text: str, text_format: str | None = None) -> list[str]:
        """The pieces a whole text is spoken in; errors for empty, too long or unspeakable text."""
        self.check_text(text)
        text = clean_text(text)  # control characters and non-characters would fail synthesis
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
        """Choose and load the voice (downloading it when allowed), check speaker and options.

        With upstreams, an installed voice is not loaded here (its config says all a request needs): the local
        voice loads only when an answer falls back to it.
        """
        merged = (options or SpeechOptions()).over(self.settings)
        name, files = self.choose(voice, language)
        key, load = self._loader(name, files)
        info = self._infos.get(name) if files is not None and self.upstream is not None else None
        if info is None:
            info = (await self.manager.get(key, load)).info
            if files is None:
                self._rescan()  # the downloaded voice is now installed
        asked = UpstreamVoice(
            name if voice or language else None,  # nothing named: the upstream's own default voice
            None if speaker is None else str(speaker),
            speed_of((options or SpeechOptions()).length_scale, self.settings.length_scale),
        )
        if speaker is None and name == self.default_voice:
            speaker = self.settings.speaker
        synthesis = SynthesisOptions(
            speaker_id=speaker_id_for(speaker, info),
            length_scale=merged.length_scale,
            noise_scale=merged.noise_scale,
            noise_w=merged.noise_w,
            volume=1.0 if merged.volume is None else merged.volume,
        )
        rate = merged.sample_rate or info.sample_rate
        silence = merged.sentence_silence or 0.0
        return Speech(self, key, load, info, synthesis, rate, silence, asked)

    async def synthesize(self, text: str, voice: str | None = None, **kwargs: Any) -> tuple[bytes, AudioFormat]:
        """A whole text as one PCM buffer (for callers that do not stream)."""
        speech = await self.open(voice, **kwargs)
        chunks = [pcm async for pcm in speech.stream(text)]
        return b"".join(chunks), speech.format

    async def preload(self) -> None:
        """Load the default voice and run it once, so the first request pays neither."""
        speech = await self.open()
        synth = await self.manager.get(speech.key, speech.load)
        await self.manager.run(render_piece, synth, "Ready.", speech.synthesis, speech.format.rate)

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
        voice: VoiceInfo,
        synthesis: SynthesisOptions,
        rate: int,
        silence: float,
        upstream_voice: UpstreamVoice | None = None,
    ) -> None:
        self._tts = tts
        self.key = key  # the local voice in the ModelManager, loaded through `load` when first needed
        self.load = load
        self.voice = voice
        self.upstream_voice = upstream_voice or UpstreamVoice()
        self.synthesis = synthesis
        self.format = AudioFormat(rate, 2, 1)
        self._extra_silence = silence
        self._previous: str | None = None  # the piece spoken last, which decides the pause before the next

    async def stream(self, text: str | AsyncIterable[str], text_format: str | None = None) -> AsyncIterator[bytes]:
        """PCM per piece, each as soon as it is synthesized. `text` is a whole text or its deltas as they come.

        Errors: EmptyTextError, TextTooLongError, UnsupportedTextFormatError, QueueFullError, InferenceError;
        with upstreams also ServiceUnavailableError (nothing can serve) and UpstreamError (a failure after the
        first audio). A whole text is checked before the first piece; deltas are checked as they arrive.
        """
        self._tts.stats.requests += 1
        self._previous = None
        pieces = self._pieces(text, text_format)
        pool = self._tts.upstream
        audio = self._local(pieces) if pool is None else speak_with_failover(pool, pieces, self._relay, self._local)
        try:
            async for _, pcm in audio:
                yield pcm
        finally:
            close = getattr(audio, "aclose", None)  # now, not when collected: the voice and connections are freed
            if close is not None:
                await close()

    async def _pieces(self, text: str | AsyncIterable[str], text_format: str | None) -> AsyncIterator[str]:
        """The pieces to speak, cut here whoever speaks them; EmptyTextError when there are none."""
        if isinstance(text, str):
            for piece in self._tts.pieces(text, text_format):
                yield piece
            return
        ssml = SsmlStripper() if text_format_of(text_format) == "ssml" else None
        splitter = SentenceSplitter(self._tts.splitter)
        limit, total, count = self._tts.settings.max_text_chars, 0, 0
        async for raw in text:
            total += len(raw)
            if total > limit:
                raise TextTooLongError(f"the streamed text passed the limit of {limit} characters (--max-text-chars)")
            delta = clean_text(raw)
            for piece in splitter.feed(ssml.feed(delta) if ssml else delta):
                count += 1
                yield piece
        for piece in splitter.feed(ssml.finish()) + splitter.finish() if ssml else splitter.finish():
            count += 1
            yield piece
        if count == 0:
            raise EmptyTextError("the text has nothing to speak" if total else "text is empty")

    async def _local(self, pieces: AsyncIterator[str]) -> AsyncIterator[tuple[AudioFormat, bytes]]:
        async with self._tts.manager.use(self.key, self.load) as synth:  # an idle sweep never unloads it mid-answer
            async for piece in pieces:
                first = self._previous is None
                pause = self._pause_before(piece)
                if first:  # the answer's first piece streams as it is decoded: sooner first audio
                    async for pcm in self._tts.render_stream(self.key, synth, piece, self.synthesis, self.format.rate):
                        yield self.format, pcm
                    continue
                pcm = await self._tts.render(self.key, synth, piece, self.synthesis, self.format.rate)
                yield self.format, pause + pcm

    async def _relay(self, client: SpeakingUpstream, piece: str) -> AsyncIterator[tuple[AudioFormat, bytes]]:
        """One piece from an upstream, in this answer's format, the pause before it as the local voice has it."""
        spoken_before = self._previous is not None
        pause: bytes | None = None
        async for pcm in converted(client, piece, self.upstream_voice, self.format.rate, spoken_before):
            if pause is None:
                pause = self._pause_before(piece)  # at its first audio: a piece that failed before it never counts
                pcm = pause + pcm
            yield self.format, pcm

    def _pause_before(self, piece: str) -> bytes:
        previous, self._previous = self._previous, piece
        if previous is None:
            return b""
        pause = SENTENCE_PAUSE + self._extra_silence if ends_sentence(previous) else CLAUSE_PAUSE
        return bytes(2 * round(pause * self.format.rate))
