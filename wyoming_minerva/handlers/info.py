"""Pieces shared by every service's `info` answer, and the describe-aware handler base."""

from __future__ import annotations

import logging
from collections.abc import Callable

from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info

from .. import __version__
from ..errors import BadRequestError
from .events import validate_event
from .server import EventSink

_LOGGER = logging.getLogger(__name__)

MINERVA_ATTRIBUTION = Attribution(name="wyoming-minerva", url="https://github.com/wyoming-minerva/wyoming-minerva")
WHISPER_ATTRIBUTION = Attribution(
    name="OpenAI Whisper (faster-whisper)", url="https://github.com/SYSTRAN/faster-whisper"
)
PIPER_ATTRIBUTION = Attribution(name="Piper", url="https://github.com/OHF-Voice/piper1-gpl")
OPENWAKEWORD_ATTRIBUTION = Attribution(name="openWakeWord", url="https://github.com/dscripka/openWakeWord")
MICROWAKEWORD_ATTRIBUTION = Attribution(name="microWakeWord", url="https://github.com/kahrendt/microWakeWord")

VERSION = __version__

InfoBuilder = Callable[[], Info]


class DescribingHandler:
    """Answers `describe` at once from an info builder that never loads or waits for a model.

    Every other event reaches `handle_service_event` only with its fields checked (handlers/events.py).
    """

    def __init__(self, sink: EventSink, build_info: InfoBuilder) -> None:
        self.sink = sink
        self._build_info = build_info

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.sink.send(self._build_info().event())
            return True
        try:
            checked = validate_event(event)
        except BadRequestError as err:
            return await self.handle_invalid_event(event, err)
        return await self.handle_service_event(checked)

    async def handle_invalid_event(self, event: Event, err: BadRequestError) -> bool:
        """An event with a wrongly typed field: by default the error goes back and the connection stays."""
        raise err

    async def handle_service_event(self, event: Event) -> bool:
        _LOGGER.debug("Ignoring unknown event %s from %s", event.type, self.sink.peer)
        return True

    @property
    def busy(self) -> bool:
        """A request is under way (the idle timeout does not apply)."""
        return False

    async def disconnect(self) -> None:
        return None
