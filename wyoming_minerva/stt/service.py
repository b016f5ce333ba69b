"""SpeechToText: the service every front end shares (Wyoming ASR, the HTTP API, live sessions).

It holds the configured programs (one per `--stt-model`, the default first), routes each request to one of them
(programs.py), and runs it on the shared ModelManager: a program's model loads on first use, so an English-only
home never loads the multilingual model. Engines are registered by name (`engines`): adding one is a module with a
TranscriberFactory plus one entry in app.py. With upstreams (`--stt-upstream`), a request goes to them first and
the local program run is the fallback (upstream/failover.py); live sessions stay local (`local_only`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from ..errors import BadRequestError, ModelNotFoundError
from ..runtime.manager import CancelToken, ModelManager
from ..settings import AsrSettings
from ..upstream import TranscribingUpstream, UpstreamPool, stream_with_failover
from .engine import Segment, Transcriber, TranscriberFactory, TranscriptionInfo, TranscriptionOptions
from .programs import Program, ProgramSpec, Route, detector, normalise_language, route

_LOGGER = logging.getLogger(__name__)


class SpeechToText:
    def __init__(
        self,
        settings: AsrSettings,
        manager: ModelManager,
        engines: Mapping[str, TranscriberFactory],
        data_dirs: tuple[Path, ...] = (),
        upstream: UpstreamPool[TranscribingUpstream] | None = None,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.data_dirs = data_dirs
        self.upstream = upstream  # --stt-upstream servers, preferred while healthy; None = local only
        self._engines = dict(engines)
        programs: list[Program] = []
        for value in settings.models:
            spec = ProgramSpec.parse(value)
            factory = self._engines.get(spec.engine)
            if factory is None:
                raise ModelNotFoundError(f"no speech-to-text engine {spec.engine!r} (have: {', '.join(engines)})")
            if any(p.name == spec.name for p in programs):
                continue
            programs.append(Program(spec.name, spec.engine, spec.model, factory.languages(spec.model)))
        if not programs:
            raise ModelNotFoundError("no speech-to-text model configured")
        self.configured: tuple[Program, ...] = tuple(programs)  # every --stt-model, whether servable or not
        self.programs: tuple[Program, ...] = self.configured  # what is offered (describe, /v1/models, routing)

    @property
    def default(self) -> Program:
        return self.programs[0]

    @property
    def model_name(self) -> str:
        """The default program's name (what logs and single-model clients show)."""
        return self.default.name

    def program(self, name: str | None) -> Program:
        return route(self.programs, None, name).program if name else self.default

    def key_of(self, program: Program) -> str:
        return f"stt:{program.name}"

    @property
    def key(self) -> str:
        """The default program's key in the ModelManager."""
        return self.key_of(self.default)

    def is_loaded(self, program: Program) -> bool:
        return self.manager.is_loaded(self.key_of(program))

    def check(self) -> None:
        """Start-up check: every program's model can be found (a lookup; downloads stay for first use)."""
        for program in self.programs:
            self.check_program(program)

    def check_program(self, program: Program) -> None:
        self._engines[program.engine].check(program.model)

    def rescan(self) -> None:
        """After the catalog installed or removed a model: offer the configured programs whose model can be
        served now (a lookup, nothing loads). A model installed beside them does not become a program: programs
        are the operator's --stt-model list. The default stays (the catalog never removes its model)."""
        default, *others = self.configured
        servable = [default]
        for program in others:
            try:
                self.check_program(program)
            except ModelNotFoundError as err:
                _LOGGER.info("Speech-to-text program %s is not offered now: %s", program.name, err)
                continue
            servable.append(program)
        self.programs = tuple(servable)

    def _loader(self, program: Program) -> tuple[str, Callable[[], Transcriber]]:
        factory = self._engines[program.engine]
        return self.key_of(program), lambda: factory.load(program.model)

    async def _model(self, program: Program) -> Transcriber:
        key, load = self._loader(program)
        return await self.manager.get(key, load)

    async def preload(self, all_programs: bool = False) -> None:
        """Load the default program (or every program) now instead of at the first request."""
        for program in self.programs if all_programs else self.programs[:1]:
            await self._model(program)

    def options(
        self,
        language: str | None = None,
        prompt: str | None = None,
        hints: list[str] | None = None,
        model: str | None = None,
        **extra: object,
    ) -> TranscriptionOptions:
        """Request options on top of the server's settings. `model` names a program (None: route by language)."""
        if model is not None:
            self.program(model)  # an unknown name fails now, before any audio is taken
        prompts = [p for p in (self.settings.initial_prompt, prompt) if p]
        return TranscriptionOptions(
            language=language or self.settings.language,
            model=model,
            beam_size=self.settings.beam_size,
            initial_prompt=" ".join(prompts) or None,
            hotwords=", ".join(hints) if hints else None,
            **extra,  # type: ignore[arg-type]
        )

    def plan(self, options: TranscriptionOptions) -> Route:
        """The program and language for these options, before any detection."""
        chosen = route(self.programs, options.language, options.model)
        if options.task == "translate" and not chosen.program.multilingual:
            translator = detector(self.programs)
            if translator is None:
                raise BadRequestError(
                    "translation needs a multilingual speech-to-text model (e.g. --stt-model base); "
                    f"this server has only {', '.join(p.name for p in self.programs)}"
                )
            chosen = Route(translator, options.language if options.language in translator.languages else None)
        return chosen

    async def stream(
        self, audio: np.ndarray, options: TranscriptionOptions
    ) -> AsyncIterator[TranscriptionInfo | Segment]:
        """Yields the TranscriptionInfo first (with the language used or detected), then each Segment as decoded.

        With upstreams, the same audio goes to each one in rotation and then to the local programs; the caller
        gets one answer. ServiceUnavailableError when nothing can serve (--no-local-fallback).
        """
        pool = self.upstream
        if pool is None or options.local_only:
            async for item in self._local(audio, options):
                yield item
            return
        asked = self._upstream_options(options)

        def ask(client: TranscribingUpstream) -> AsyncIterator[TranscriptionInfo | Segment]:
            return _answer_of(client, audio, asked)

        async for item in stream_with_failover(pool, ask, lambda: self._local(audio, options)):
            yield item

    def _upstream_options(self, options: TranscriptionOptions) -> TranscriptionOptions:
        """The request as an upstream gets it: its own programs route it, so no local program name; a program the
        client named still fixes the language it means (an English-only program means English)."""
        language = normalise_language(options.language)
        if options.model is not None:
            language = self.plan(options).language or language
        return dataclasses.replace(options, language=language, model=None)

    async def _local(
        self, audio: np.ndarray, options: TranscriptionOptions
    ) -> AsyncIterator[TranscriptionInfo | Segment]:
        """The local program run: route (detecting the language when needed), then decode on the executor."""
        chosen = self.plan(options)
        if chosen.language is None and options.model is None and len(self.programs) > 1:
            chosen = await self._detect_and_route(audio, chosen)
        options = dataclasses.replace(options, language=chosen.language, model=chosen.program.name)
        key, load = self._loader(chosen.program)
        model: Transcriber
        async with self.manager.use(key, load) as model:

            def produce(cancel: CancelToken) -> Iterator[TranscriptionInfo | Segment]:
                info, segments = model.transcribe(audio, options, cancel)
                yield info
                yield from segments

            async for item in self.manager.iterate(produce):
                yield item

    async def _detect_and_route(self, audio: np.ndarray, chosen: Route) -> Route:
        program = detector(self.programs)
        if program is None:
            return chosen
        key, load = self._loader(program)
        model: Transcriber
        async with self.manager.use(key, load) as model:  # held: an idle sweep never unloads it mid-detection
            language, probability = await self.manager.run(model.detect_language, audio)
        routed = route(self.programs, language)
        _LOGGER.debug("Detected %s (%.2f) → %s", language, probability, routed.program.name)
        return Route(routed.program, (routed.language or language) if routed.program.multilingual else routed.language)

    async def transcribe(self, audio: np.ndarray, options: TranscriptionOptions) -> tuple[str, list[Segment]]:
        """The whole result at once: (language, segments)."""
        language = options.language or ""
        segments: list[Segment] = []
        async for item in self.stream(audio, options):
            if isinstance(item, TranscriptionInfo):
                language = item.language
            else:
                segments.append(item)
        return language, segments


async def _answer_of(
    client: TranscribingUpstream, audio: np.ndarray, options: TranscriptionOptions
) -> AsyncIterator[TranscriptionInfo | Segment]:
    """An upstream's whole answer in the local stream's shape: the info, then the segments."""
    info, segments = await client.transcribe(audio, options)
    yield info
    for segment in segments:
        yield segment
