"""The faster-whisper engine: model lookup (bundled, data dirs, download), the Transcriber, its factory."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ModelNotFoundError
from ..runtime.manager import CancelToken
from ..settings import AsrSettings
from .bundled import ENGLISH_MODEL, MULTILINGUAL_MODEL, assemble_multilingual, english_model_path, multilingual_parts
from .engine import Segment, TranscriberFactory, TranscriptionInfo, TranscriptionOptions, Word
from .programs import DEFAULT_ENGINE

_LOGGER = logging.getLogger(__name__)

# Names of the rhasspy int8 conversions used by wyoming-faster-whisper ("base-int8" …).
_RHASSPY_INT8 = re.compile(r"^(tiny|base|small|medium)(\.en)?-int8$")
_HF_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # owner/name on the hub, not a path


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


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or (os.sep in name and not _HF_ID.match(name))


def public_name(model: str) -> str:
    """The name a model is shown and asked for by: a path given by the operator shows as its folder's name."""
    return Path(model).expanduser().name if _looks_like_path(model) else model


def _find_local(name: str, data_dirs: tuple[Path, ...]) -> Path | None:
    as_path = Path(name).expanduser()
    if _looks_like_path(name):
        return as_path if _is_model_dir(as_path) else None
    folder_names = (name, name.replace("/", "--"), f"faster-whisper-{name}", name.rsplit("/", 1)[-1])
    for data_dir in data_dirs:
        for folder in folder_names:
            if _is_model_dir(data_dir / folder):
                return data_dir / folder
    english = english_model_path()
    if name == ENGLISH_MODEL and english is not None:
        return english
    return None


def check_model(name: str, data_dirs: tuple[Path, ...], local_files_only: bool) -> None:
    """Raise ModelNotFoundError when `name` cannot be served: a missing folder, an unknown name, or a model that
    is not local while downloads are off. A lookup only: nothing is loaded, assembled or downloaded."""
    if _find_local(name, data_dirs) is not None:
        return
    if _looks_like_path(name):  # the operator's own path: said at start, never to a client
        raise ModelNotFoundError(f"no faster-whisper model folder (model.bin + config.json) at {name}")
    if name == MULTILINGUAL_MODEL and multilingual_parts() is not None:
        return
    if local_files_only:
        raise ModelNotFoundError(
            f"speech-to-text model {name!r} is not in the data dirs and downloads are off (--local-files-only)"
        )
    repo_id_for(name)


def resolve_model(name: str, data_dirs: tuple[Path, ...], local_files_only: bool) -> Path:
    """A local CTranslate2 folder for `name`: a path, a data-dir copy, a bundled model, or a download."""
    local = _find_local(name, data_dirs)
    if local is not None:
        return local
    shown = public_name(name)  # errors reach clients (a request loads the model): a name, never a path
    if _looks_like_path(name):
        _LOGGER.error("No faster-whisper model folder (model.bin + config.json) at %s", name)
        raise ModelNotFoundError(f"speech-to-text model {shown!r} is missing (see the server log)")
    if name == MULTILINGUAL_MODEL:
        assembled = assemble_multilingual(data_dirs)
        if assembled is not None:
            return assembled
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

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        if not self.is_multilingual:
            return "en", 1.0
        language, probability, _ = self._model.detect_language(audio)
        return str(language), float(probability)

    def close(self) -> None:
        del self._model


class WhisperFactory:
    """The faster-whisper engine family (a TranscriberFactory): model lookup, languages by name, loading."""

    def __init__(self, settings: AsrSettings, data_dirs: tuple[Path, ...], local_files_only: bool) -> None:
        self.settings = settings
        self.data_dirs = data_dirs
        self.local_files_only = local_files_only

    def languages(self, model: str) -> tuple[str, ...]:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        return ("en",) if is_english_only(model) else tuple(_LANGUAGE_CODES)

    def check(self, model: str) -> None:
        check_model(model, self.data_dirs, self.local_files_only)

    def load(self, model: str) -> WhisperTranscriber:
        path = resolve_model(model, self.data_dirs, self.local_files_only)
        return WhisperTranscriber(model, path, self.settings)


def whisper_engines(
    settings: AsrSettings, data_dirs: tuple[Path, ...], local_files_only: bool
) -> dict[str, TranscriberFactory]:
    """The registration of this engine family, under the name `--stt-model` values use by default."""
    return {DEFAULT_ENGINE: WhisperFactory(settings, data_dirs, local_files_only)}
