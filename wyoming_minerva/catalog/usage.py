"""Which installed models are loaded or in use, and releasing one before it is removed.

The engines name their models in the ModelManager: a Piper voice `piper:<model path>`, speech-to-text
`stt:<name>`, a wake word `wake/<engine>/<name>`. A model is in use while a request holds it
(ModelManager.use); the manager refuses to unload such a model, which is what a removal relies on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from ..runtime.manager import ModelManager
from .entries import Kind
from .installed import InstalledModel


class ModelUsage(Protocol):
    def loaded(self, model: InstalledModel) -> bool: ...

    def in_use(self, model: InstalledModel) -> bool | None:
        """None when it cannot be told without unloading it."""

    def release(self, model: InstalledModel) -> bool:
        """Unload it if loaded and idle; False while a request uses it."""

    def is_default(self, model: InstalledModel) -> bool:
        """The model a service falls back to (the --voice, the --model): not removed."""


def manager_keys(model: InstalledModel) -> tuple[str, ...]:
    if model.kind is Kind.VOICE:
        return (f"piper:{model.paths[0].resolve()}",)
    if model.kind is Kind.STT:
        return (f"stt:{model.runtime_name or model.name}",)
    return (f"wake/{model.engine}/{model.runtime_name or model.name}",)


class ManagerUsage:
    """ModelUsage read from the shared ModelManager. `defaults`: the configured model of each kind;
    `more_keys`: keys an engine gives a model besides the usual one (a speech-to-text program's own name)."""

    def __init__(
        self,
        manager: ModelManager,
        defaults: Callable[[], Mapping[Kind, str | None]],
        more_keys: Callable[[InstalledModel], Iterable[str]] | None = None,
    ) -> None:
        self.manager = manager
        self.defaults = defaults
        self.more_keys = more_keys

    def keys(self, model: InstalledModel) -> tuple[str, ...]:
        more = tuple(self.more_keys(model)) if self.more_keys is not None else ()
        return tuple(dict.fromkeys((*manager_keys(model), *more)))

    def _users(self, key: str) -> int | None:
        users = getattr(self.manager, "users", None)  # ModelManager.users(key), where the manager offers it
        return int(users(key)) if callable(users) else None

    def loaded(self, model: InstalledModel) -> bool:
        return any(self.manager.is_loaded(key) for key in self.keys(model))

    def in_use(self, model: InstalledModel) -> bool | None:
        counts = [self._users(key) for key in self.keys(model)]
        if any(count is None for count in counts):
            return None
        return any(count for count in counts)

    def release(self, model: InstalledModel) -> bool:
        for key in self.keys(model):
            users = self._users(key)
            if users:
                return False  # also while it is still loading for a request
            if self.manager.is_loaded(key) and not self.manager.unload(key):
                return False
        return True

    def is_default(self, model: InstalledModel) -> bool:
        return self.defaults().get(model.kind) in (model.name, model.runtime_name)
