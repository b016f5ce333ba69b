"""Which wake word models exist, what they are called, and how sensitive each one is. Pure lookups, no models run.

Naming scheme (names are unique across engines):
- openWakeWord models are named by their file stem, as wyoming-openwakeword names them: `okay_nabu`,
  `hey_jarvis`, a custom `my_word.tflite` is `my_word`.
- microWakeWord models are named by their file stem plus `_micro`: `okay_nabu_micro`, a custom
  `my_word.json` (+ its .tflite) is `my_word_micro`.
- A custom model with the name of a built-in replaces the built-in; between custom folders the first wins.
Lookups also accept `openwakeword:okay_nabu` / `microwakeword:okay_nabu`, any case, spaces or dashes for
underscores, a version suffix (`hey_jarvis_v0.1`), and the legacy `ok_nabu`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from ..errors import ModelNotFoundError
from ..settings import ConfigError, WakeSettings

_LOGGER = logging.getLogger(__name__)

MICRO_SUFFIX = "_micro"
FEATURE_MODELS = ("melspectrogram", "embedding_model")
_VERSION = re.compile(r"_v\d+(\.\d+)*$")
_LEGACY = {"ok_nabu": "okay_nabu"}
# Languages of the built-in openWakeWord models (the package does not say; they are English models).
_OWW_BUILTIN_LANGUAGES = ("en",)


class Engine(StrEnum):
    OPENWAKEWORD = "openwakeword"
    MICROWAKEWORD = "microwakeword"


@dataclass(frozen=True)
class WakeModelInfo:
    name: str
    engine: Engine
    phrase: str
    languages: tuple[str, ...]
    model_path: Path  # the .tflite file
    builtin: bool
    threshold: float | None = None  # the model's own cutoff (microWakeWord JSON), None = the global default
    sliding_window: int = 1  # microWakeWord: probabilities averaged before comparing with the threshold
    description: str = ""

    @property
    def key(self) -> str:
        """The ModelManager key of the loaded model."""
        return f"wake/{self.engine.value}/{self.name}"


@dataclass(frozen=True)
class Sensitivity:
    threshold: float
    trigger_level: int  # activations in a row that make a detection
    refractory_seconds: float  # audio time after a detection during which the model stays quiet


def normalise_name(name: str) -> str:
    """Lower case, underscores for spaces and dashes, no version suffix, legacy names mapped."""
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    key = _VERSION.sub("", key)
    return _LEGACY.get(key, key)


def phrase_from_name(stem: str) -> str:
    """`hey_jarvis_v0.1` → `Hey Jarvis`."""
    return " ".join(word.capitalize() for word in _VERSION.sub("", stem).replace("-", "_").split("_") if word)


# ---- discovery -----------------------------------------------------------------------------------


def builtin_models() -> list[WakeModelInfo]:
    import pymicro_wakeword
    import pyopen_wakeword

    oww_dir = Path(pyopen_wakeword.__file__).parent / "models"
    micro_dir = Path(pymicro_wakeword.__file__).parent / "models"
    found = [
        _oww(oww_dir / f"{model.value}.tflite", builtin=True, languages=_OWW_BUILTIN_LANGUAGES)
        for model in pyopen_wakeword.Model
    ]
    for model in pymicro_wakeword.Model:
        info = _micro(micro_dir / f"{model.value}.json", builtin=True)
        if info is not None:
            found.append(info)
    return found


def _oww(path: Path, builtin: bool, languages: Sequence[str] = (), phrase: str | None = None) -> WakeModelInfo:
    phrase = phrase or phrase_from_name(path.stem)
    return WakeModelInfo(
        name=path.stem,
        engine=Engine.OPENWAKEWORD,
        phrase=phrase,
        languages=tuple(languages),
        model_path=path,
        builtin=builtin,
        description=f"{phrase} (openWakeWord)",
    )


def _micro(config_path: Path, builtin: bool) -> WakeModelInfo | None:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        micro = config["micro"]
        phrase = str(config["wake_word"])
        return WakeModelInfo(
            name=Path(config["model"]).stem + MICRO_SUFFIX,
            engine=Engine.MICROWAKEWORD,
            phrase=phrase,
            languages=tuple(str(lang) for lang in config.get("trained_languages", ())),
            model_path=config_path.parent / config["model"],
            builtin=builtin,
            threshold=float(micro["probability_cutoff"]),
            sliding_window=max(1, int(micro.get("sliding_window_size", 1))),
            description=f"{phrase} (microWakeWord)",
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        _LOGGER.warning("Skipping microWakeWord config %s: %s", config_path, err)
        return None


def custom_models(folder: Path) -> list[WakeModelInfo]:
    """microWakeWord JSON configs (+ their .tflite) and openWakeWord .tflite files in one folder."""
    if not folder.is_dir():
        _LOGGER.warning("Custom wake word folder %s does not exist", folder)
        return []
    found: list[WakeModelInfo] = []
    claimed: set[Path] = set()
    for config_path in sorted(folder.glob("*.json")):
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            _LOGGER.warning("Skipping %s: %s", config_path, err)
            continue
        if not isinstance(config, dict) or "model" not in config:
            continue
        kind = str(config.get("type", "")).lower()
        model_path = folder / str(config["model"])
        if not model_path.is_file():
            _LOGGER.warning("Skipping %s: its model %s is missing", config_path, model_path.name)
            continue
        info: WakeModelInfo | None = None
        if kind == "micro" or "micro" in config:
            info = _micro(config_path, builtin=False)
        elif kind == "openwakeword":
            langs = tuple(str(x) for x in config.get("trained_languages", ()))
            info = _oww(model_path, builtin=False, languages=langs, phrase=config.get("wake_word"))
        if info is not None:
            found.append(info)
            claimed.add(model_path.resolve())
    for path in sorted(folder.glob("*.tflite")):
        if path.resolve() not in claimed and path.stem not in FEATURE_MODELS:
            found.append(_oww(path, builtin=False))
    return found


# ---- the catalog ---------------------------------------------------------------------------------


@dataclass
class WakeCatalog:
    """The models this server offers, looked up by name or alias."""

    models: dict[str, WakeModelInfo]
    default: str
    _keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, info in self.models.items():
            self._keys.setdefault(normalise_name(name), name)
            prefix = info.engine.value + ":"
            bare = name.removesuffix(MICRO_SUFFIX) if info.engine is Engine.MICROWAKEWORD else name
            self._keys.setdefault(prefix + normalise_name(bare), name)

    @staticmethod
    def build(
        available: Iterable[WakeModelInfo], offered: Sequence[str] = (), default: str = "okay_nabu"
    ) -> WakeCatalog:
        """`available` in priority order (custom first); `offered` restricts it (empty = all)."""
        models: dict[str, WakeModelInfo] = {}
        for info in available:
            if info.name in models:
                _LOGGER.info(
                    "Wake word %s from %s is shadowed by %s", info.name, info.model_path, models[info.name].model_path
                )
                continue
            models[info.name] = info
        everything = WakeCatalog(models, default="")
        if offered:
            try:
                chosen = [everything.lookup(name) for name in offered]
            except ModelNotFoundError as err:
                raise ConfigError(f"--wake-model: {err}") from err
            models = {info.name: info for info in chosen}
        catalog = WakeCatalog(dict(sorted(models.items())), default="")
        try:
            catalog.default = catalog.lookup(default).name
        except ModelNotFoundError as err:
            raise ConfigError(f"--default-wake-model: {err}") from err
        return catalog

    @staticmethod
    def discover(settings: WakeSettings) -> WakeCatalog:
        available: list[WakeModelInfo] = []
        for folder in settings.custom_model_dirs:
            available += custom_models(folder)
        available += builtin_models()
        return WakeCatalog.build(available, settings.models, settings.default_model)

    def find(self, name: str) -> WakeModelInfo | None:
        if name in self.models:
            return self.models[name]
        engine, sep, rest = name.partition(":")
        key = f"{engine.strip().lower()}:{normalise_name(rest)}" if sep else normalise_name(name)
        found = self._keys.get(key)
        return self.models[found] if found else None

    def lookup(self, name: str) -> WakeModelInfo:
        info = self.find(name)
        if info is None:
            raise ModelNotFoundError(f"unknown wake word model {name!r}; known: {', '.join(self.models)}")
        return info

    def resolve(self, names: Sequence[str] | None) -> list[tuple[str, WakeModelInfo]]:
        """(name as the client asked, model) for each distinct model; the default when none are named.

        Detections carry the client's own spelling: Home Assistant ignores a name it did not ask for.
        """
        if not names:
            return [(self.default, self.models[self.default])]
        unknown = [name for name in names if self.find(name) is None]
        if unknown:
            listed = ", ".join(repr(name) for name in unknown)
            raise ModelNotFoundError(f"unknown wake word model(s) {listed}; known: {', '.join(self.models)}")
        chosen: dict[str, tuple[str, WakeModelInfo]] = {}
        for name in names:
            info = self.lookup(name)
            chosen.setdefault(info.name, (name, info))
        return list(chosen.values())


# ---- sensitivity ---------------------------------------------------------------------------------

_OPTION_KEYS = {"threshold": float, "trigger_level": int, "refractory_seconds": float}


def parse_model_options(options: Sequence[str], catalog: WakeCatalog) -> dict[str, dict[str, float]]:
    """`NAME:key=value,key=value` items → {model name: {key: value}}.

    An item without `NAME:` continues the previous model, so the comma-split MINERVA_WAKE_MODEL_OPTION
    (`okay_nabu:threshold=0.6,trigger_level=2`) means the same as the flag.
    """
    parsed: dict[str, dict[str, float]] = {}
    current: str | None = None
    for item in options:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            head, sep, rest = part.partition(":")
            if sep and "=" not in head:
                try:
                    current = catalog.lookup(head).name
                except ModelNotFoundError as err:
                    raise ConfigError(f"--wake-model-option {item!r}: {err}") from err
                part = rest
            if current is None:
                raise ConfigError(f"--wake-model-option {item!r}: expected NAME:key=value")
            key, eq, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in _OPTION_KEYS:
                raise ConfigError(f"--wake-model-option {item!r}: keys are {', '.join(_OPTION_KEYS)}")
            try:
                parsed.setdefault(current, {})[key] = _OPTION_KEYS[key](value.strip())
            except ValueError as err:
                raise ConfigError(f"--wake-model-option {item!r}: {key} must be a number") from err
    return parsed


def sensitivity(info: WakeModelInfo, settings: WakeSettings, overrides: dict[str, float] | None = None) -> Sensitivity:
    """Per-model override > the model's own cutoff (microWakeWord) > the global flags."""
    overrides = overrides or {}
    result = Sensitivity(
        threshold=info.threshold if info.threshold is not None else settings.threshold,
        trigger_level=settings.trigger_level,
        refractory_seconds=settings.refractory_seconds,
    )
    result = replace(
        result,
        threshold=float(overrides.get("threshold", result.threshold)),
        trigger_level=int(overrides.get("trigger_level", result.trigger_level)),
        refractory_seconds=float(overrides.get("refractory_seconds", result.refractory_seconds)),
    )
    validate_sensitivity(info.name, result)
    return result


def validate_sensitivity(name: str, value: Sensitivity) -> None:
    if not 0.0 < value.threshold <= 1.0:
        raise ConfigError(f"wake word {name}: threshold must be in (0, 1], got {value.threshold}")
    if value.trigger_level < 1:
        raise ConfigError(f"wake word {name}: trigger_level must be at least 1, got {value.trigger_level}")
    if value.refractory_seconds < 0:
        raise ConfigError(f"wake word {name}: refractory_seconds must not be negative")
