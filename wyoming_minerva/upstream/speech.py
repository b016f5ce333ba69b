"""One spoken answer across upstreams: the text arrives piece by piece (sentences from the local splitter, maybe
while a language model is still writing), and the whole answer goes to one backend.

The answer is pinned to the first backend that produces audio: every piece goes to it, so the voice and the format
never change mid-answer. Until that first audio, the pieces handed out are kept, and a backend that fails gets them
replayed to the next one (and to the local engine last). After it, a failure ends the answer (failover.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable

from ..audio import AudioFormat
from ..tts.support import EmptyTextError
from .failover import stream_with_failover
from .health import C, UpstreamPool

Audio = tuple[AudioFormat, bytes]


class Replay:
    """The pieces of one answer for successive backends: those handed out before the commit are replayed."""

    def __init__(self, source: AsyncIterable[str]) -> None:
        self._source = aiter(source)
        self._kept: list[str] = []
        self._committed = False
        self._ended = False

    def commit(self) -> None:
        """Audio has gone out: no other backend will need these pieces again."""
        self._committed = True
        self._kept.clear()

    async def pieces(self) -> AsyncIterator[str]:
        index = 0
        while True:
            if index < len(self._kept):
                yield self._kept[index]
                index += 1
                continue
            if self._ended:
                return
            try:
                piece = await anext(self._source)
            except StopAsyncIteration:
                self._ended = True
                return
            if not self._committed:
                self._kept.append(piece)
            index += 1
            yield piece

    async def first(self) -> bool:
        """Whether there is anything to speak at all (reads the first piece, which stays to be replayed)."""
        if self._kept or self._ended:
            return bool(self._kept)
        try:
            self._kept.append(await anext(self._source))
        except StopAsyncIteration:
            self._ended = True
            return False
        return True


async def speak_with_failover(
    pool: UpstreamPool[C],
    pieces: AsyncIterable[str],
    speak: Callable[[C, str], AsyncIterator[Audio]],
    local: Callable[[AsyncIterator[str]], AsyncIterator[Audio]] | None = None,
) -> AsyncIterator[Audio]:
    """Audio for every piece, from one backend. `speak(client, piece)` is one upstream request (e.g.
    `client.synthesize(piece, voice, speaker=…)`); `local(pieces)` speaks the same pieces with the local engine.

    EmptyTextError when there are no pieces (before any backend is asked: an empty text never counts against one).
    """
    replay = Replay(pieces)
    if not await replay.first():
        raise EmptyTextError("the text has nothing to speak")

    def upstream(client: C) -> AsyncIterator[Audio]:
        async def each_piece() -> AsyncIterator[Audio]:
            async for piece in replay.pieces():
                async for audio in speak(client, piece):
                    yield audio

        return each_piece()

    def local_engine() -> AsyncIterator[Audio]:
        assert local is not None
        return local(replay.pieces())

    async for audio in stream_with_failover(pool, upstream, local_engine if local is not None else None):
        replay.commit()
        yield audio
