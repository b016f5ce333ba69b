"""The Wyoming wake word handler: Home Assistant's and satellites' sequences on one WakeWords engine.

`detect {names}` (optional) → `audio-start` → chunks, for hours; HA never sends `audio-stop`, it closes
the socket; satellites re-send `detect` + `audio-start` on the same connection. Each audio-start begins a
new stream (timestamps restart at 0). Detections are sent by a forwarding task as the worker finds them,
so a client that reads slowly only delays itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Info, WakeModel, WakeProgram
from wyoming.wake import Detect, Detection, NotDetected

from ..audio import AudioFormat, format_from_event
from ..wake.catalog import Engine
from ..wake.service import WakeStream, WakeWords
from .info import MICROWAKEWORD_ATTRIBUTION, MINERVA_ATTRIBUTION, OPENWAKEWORD_ATTRIBUTION, VERSION, DescribingHandler
from .server import EventSink, error_event

_LOGGER = logging.getLogger(__name__)


def wake_info(wake: WakeWords) -> Info:
    """Built from the catalog only: answered at once, before any model is loaded."""
    models = [
        WakeModel(
            name=info.name,
            description=info.description,
            attribution=OPENWAKEWORD_ATTRIBUTION if info.engine is Engine.OPENWAKEWORD else MICROWAKEWORD_ATTRIBUTION,
            installed=True,
            version=VERSION,
            languages=list(info.languages),
            phrase=info.phrase,
        )
        for info in wake.models()
    ]
    program = WakeProgram(
        name="minerva-wake",
        description="openWakeWord and microWakeWord (wyoming-minerva)",
        attribution=MINERVA_ATTRIBUTION,
        installed=True,
        version=VERSION,
        models=models,
    )
    return Info(wake=[program])


class WakeHandler(DescribingHandler):
    def __init__(self, sink: EventSink, wake: WakeWords) -> None:
        super().__init__(sink, lambda: wake_info(wake))
        self.wake = wake
        self._names: list[str] | None = None  # from the last detect; None = the default model
        self._stream: WakeStream | None = None
        self._forward: asyncio.Task[None] | None = None

    async def handle_service_event(self, event: Event) -> bool:
        if Detect.is_type(event.type):
            self._names = self._detect_names(event)
        elif AudioStart.is_type(event.type):
            await self._start(format_from_event(event.data))
        elif AudioChunk.is_type(event.type):
            await self._chunk(event)
        elif AudioStop.is_type(event.type):
            await self._stop()
        else:
            _LOGGER.debug("Ignoring %s from %s", event.type, self.sink.peer)
        return True

    @property
    def busy(self) -> bool:
        return self._stream is not None  # a stream may pause for a while (a satellite busy with a pipeline)

    def _detect_names(self, event: Event) -> list[str] | None:
        names: list[str] | None = event.data.get("names")  # a list of strings (handlers/events.py)
        if names is None:
            return None
        self.wake.resolve(names)  # unknown names → error event now, listing the known ones
        return names

    async def _start(self, fmt: AudioFormat) -> None:
        await self._end_stream()
        stream = await self.wake.open_stream(self._names, fmt, peer=self.sink.peer)
        self._stream = stream
        self._forward = asyncio.create_task(self._send_detections(stream), name=f"wake-forward-{stream.id}")
        _LOGGER.debug("%s: stream %d for %s", self.sink.peer, stream.id, [label for label, _ in stream.requested])

    async def _chunk(self, event: Event) -> None:
        if self._stream is None:
            # No audio-start (or a new chunk after audio-stop): start from the chunk's own format.
            await self._start(format_from_event(event.data))
        assert self._stream is not None
        fmt = format_from_event(event.data, fallback=self._stream.format)
        await self._stream.feed(event.payload or b"", fmt)

    async def _stop(self) -> None:
        stream = self._stream
        if stream is None:
            await self.sink.send(NotDetected().event())
            return
        detected = await stream.finish()
        if self._forward is not None:
            await self._forward  # every detection is on the wire before not-detected
        if not detected and stream.error is None:
            await self.sink.send(NotDetected().event())
        await self._end_stream()

    async def _send_detections(self, stream: WakeStream) -> None:
        try:
            async for detection in stream:
                # With enrolled voices, who said it (wyoming 1.10's detection.speaker) and how sure that is.
                score = {"speaker_score": detection.speaker_score} if detection.speaker_score is not None else None
                await self.sink.send(
                    Detection(
                        name=detection.name,
                        timestamp=detection.timestamp_ms,
                        speaker=detection.speaker,
                        context=score,
                    ).event()
                )
        except Exception as err:
            _LOGGER.warning("%s: wake stream failed: %s", self.sink.peer, err)
            await self.sink.send(error_event(err))

    async def _end_stream(self) -> None:
        stream, self._stream = self._stream, None
        forward, self._forward = self._forward, None
        if stream is not None:
            await stream.close()
        if forward is not None and not forward.done():
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward

    async def disconnect(self) -> None:
        await self._end_stream()
