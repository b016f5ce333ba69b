"""Lifecycle: one model manager, the engines, the Wyoming servers, discovery and the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

from .budget import AudioBudget
from .catalog.service import CatalogService
from .catalog.wake_index import WAKE_FOLDER
from .discovery import Advertiser, Endpoint
from .errors import BadRequestError, MinervaError, ModelNotFoundError
from .handlers.asr import AsrHandler
from .handlers.server import EventSink, HandlerFactory, WyomingServer
from .handlers.tts import TtsHandler
from .handlers.wake import WakeHandler
from .http import console
from .http.app import create_app
from .http.deps import HttpContext
from .http.server import HttpServer
from .runtime.manager import ModelManager
from .settings import ConfigError, HttpSettings, Service, Settings
from .speakers.service import SpeakerService
from .speakers.store import SpeakerStore
from .stt.live.hub import LiveHub
from .stt.service import SpeechToText
from .stt.whisper import whisper_engines
from .tts.piper import TextToSpeech
from .upstream import UpstreamPool
from .upstream.pools import build_pools
from .wake.service import WakeWords
from .wake.speaker_gate import SpeakerGate

_LOGGER = logging.getLogger(__name__)


class StartupError(MinervaError):
    """The process cannot start (e.g. a port already in use)."""

    code = "startup_failed"


@dataclass
class Engines:
    """The engines every front end shares (Wyoming handlers and the HTTP API)."""

    stt: SpeechToText | None = None
    tts: TextToSpeech | None = None
    wake: WakeWords | None = None
    speakers: SpeakerService | None = None
    live: LiveHub | None = None  # live WebSocket speech-to-text sessions (on stt), made with the HTTP API


class App:
    def __init__(self, settings: Settings, manager: ModelManager | None = None) -> None:
        self.settings = settings
        self.manager = manager or ModelManager(
            workers=settings.workers,
            queue_size=settings.queue_size,
            idle_unload_seconds=settings.idle_unload_seconds,
        )
        self.engines = Engines()
        # Upstream speech servers (--stt-upstream, --tts-upstream): None for a service without any.
        self.stt_pool, self.tts_pool = build_pools(settings.upstream)
        # One budget of buffered audio for every Wyoming connection of the process.
        self.audio_budget = AudioBudget(settings.wyoming.max_buffered_audio_bytes)
        self.servers: dict[Service, WyomingServer] = {}
        self.http: HttpServer | None = None
        self.catalog: CatalogService | None = None  # the HTTP API's model catalog (installs, removals)
        # Zeroconf probing takes ~1.5 s: it runs beside the already-serving ports, not before them.
        self.advertising: asyncio.Task[Advertiser] | None = None
        self._discovery = contextlib.AsyncExitStack()

    def _stt(self) -> SpeechToText:
        """The one speech-to-text engine, made on first need (Wyoming ASR and HTTP share it)."""
        if self.engines.stt is None:
            s = self.settings
            engines = whisper_engines(s.asr, s.data_dirs, s.local_files_only)  # register more engines here
            stt = SpeechToText(s.asr, self.manager, engines, s.data_dirs, upstream=self.stt_pool)
            try:  # a missing local model or an unknown name fails the start (exit 2), not the first request
                stt.check()
            except ModelNotFoundError as err:
                raise ConfigError(f"--stt-model: {err}") from err
            self.engines.stt = stt
        return self.engines.stt

    def _tts(self) -> TextToSpeech:
        """The one text-to-speech engine, made on first need (Wyoming TTS and HTTP share it)."""
        if self.engines.tts is None:
            s = self.settings
            tts = TextToSpeech(s.tts, self.manager, s.data_dirs, s.local_files_only, upstream=self.tts_pool)
            try:  # a wrong --voice/--speaker fails the start (exit 2), not the first request
                tts.check_defaults()
            except ModelNotFoundError as err:
                raise ConfigError(f"--voice {s.tts.voice}: {err}") from err
            except BadRequestError as err:
                raise ConfigError(f"--speaker {s.tts.speaker}: {err}") from err
            self.engines.tts = tts
        return self.engines.tts

    def _wake(self) -> WakeWords:
        """The one wake word engine (Wyoming wake and the HTTP wake routes share it); loads nothing yet."""
        if self.engines.wake is None:
            installed = tuple(data_dir / WAKE_FOLDER for data_dir in self.settings.data_dirs)  # catalog installs
            gate = SpeakerGate.of(self._speakers(), self.settings.wake.speakers)  # names who said it
            self.engines.wake = WakeWords(self.settings.wake, self.manager, installed_dirs=installed, speakers=gate)
        return self.engines.wake

    def _speakers(self) -> SpeakerService:
        """Speaker recognition (diarization, enrolled voices); its model loads on first use, and only what needs
        enrolled voices (transcript and wake speakers) looks at audio when some are enrolled."""
        if self.engines.speakers is None:
            data_dirs = self.settings.data_dirs
            store = SpeakerStore(data_dirs[0]) if data_dirs else None  # reads speakers.json, if any
            self.engines.speakers = SpeakerService(self.manager, store)
            missing = [n for n in self.settings.wake.speakers if store is None or store.get(n) is None]
            if missing:
                _LOGGER.warning(
                    "--wake-speakers: %s not enrolled yet: until they are, their voices wake nothing", missing
                )
        return self.engines.speakers

    def _factory(self, service: Service) -> HandlerFactory:
        settings = self.settings
        if service is Service.ASR:
            stt = self._stt()
            speakers = self._speakers()
            return lambda sink: AsrHandler(sink, stt, settings.asr, self.audio_budget, speakers=speakers)
        if service is Service.TTS:
            tts = self._tts()
            return lambda sink: TtsHandler(sink, tts)
        if service is Service.WAKE:
            wake = self._wake()
            return lambda sink: WakeHandler(sink, wake)
        raise StartupError(f"the {service.value} service is not available in this build")

    async def start(self) -> None:
        """Engines (their settings checked), then with --preload the models, and only then the ports.

        A port that answers therefore means every model is loaded (with --preload), and a model that cannot load
        ends the start before anyone is told the service is there.
        """
        await self.manager.start()
        try:
            for pool in self._pools():  # probing starts before the ports open: the first probe is under way
                await pool.start()
            factories = {service: self._factory(service) for service in self.settings.services}
            if self.settings.http is not None:  # the HTTP API serves all three
                self._stt()
                self._tts()
                self._wake()
                self._speakers()
            if self.settings.preload:
                await self.preload()
            for service, uri in self.settings.services.items():
                limits = self.settings.wyoming
                server = WyomingServer(service.value, uri, factories[service], limits, self.audio_budget)
                try:
                    await server.start()
                except OSError as err:
                    reason = os.strerror(err.errno) if err.errno else str(err)  # not asyncio's long variant
                    raise StartupError(f"cannot listen for {service.value} on {uri}: {reason}") from err
                self.servers[service] = server
            if self.settings.http is not None:
                await self._start_http(self.settings.http)
            self._advertise()
        except BaseException:
            await self.stop()
            raise

    async def _start_http(self, http: HttpSettings) -> None:
        """The HTTP API in this loop, on the same engines (all of them, also when no Wyoming service runs)."""
        stt = self._stt()
        self.engines.live = LiveHub(stt, self.settings.realtime)
        self._tts()
        self._wake()
        self._speakers()
        app = create_app(self.settings, self.engines, self.manager, services=self._console_services)
        self.catalog = app.state.minerva_catalog
        server = HttpServer(
            app,
            http.host,
            http.port,
            self.settings.shutdown_grace_seconds,
            self.settings.debug,
            header_timeout=http.header_timeout_seconds,
            max_connections=http.max_connections,
        )
        try:
            await server.start()
        except OSError as err:
            reason = os.strerror(err.errno) if err.errno else str(err)
            raise StartupError(f"cannot listen for http on {http.host}:{http.port}: {reason}") from err
        self.http = server

    def _console_services(self, ctx: HttpContext) -> list[console.ServiceCard]:
        """The console's services as they run: the ports really bound (port 0 included) and the zeroconf names
        really registered (none while probing, or when a service is not advertised)."""
        zeroconf = self._advertised()
        cards = []
        for card in console.services_from_settings(ctx):
            if card.service == "http":
                port = self.http.port if self.http is not None else None
                update = {"address": console.http_address(ctx.http.host, port), "running": port is not None}
            else:
                server = self.servers.get(Service(card.service))
                update = {
                    "address": server.describe_address() if server is not None else None,
                    "zeroconf": zeroconf.get(Service(card.service)),
                    "running": server is not None,
                }
            cards.append(card.model_copy(update=update))
        return cards

    def _advertised(self) -> dict[Service, str]:
        """The zeroconf instance name of each service registered so far."""
        task = self.advertising
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return {}
        return {a.service: a.instance for a in task.result().advertised}

    def _advertise(self) -> None:
        """Zeroconf for every TCP service, with the ports really bound (port 0 included)."""
        endpoints = [
            Endpoint(service, server.uri.host, server.port)
            for service, server in self.servers.items()
            if server.uri.scheme == "tcp"
        ]
        if self.settings.discovery.enabled and endpoints:
            advertiser = Advertiser(self.settings.discovery, endpoints)
            self.advertising = asyncio.create_task(self._discovery.enter_async_context(advertiser), name="zeroconf")

    async def _withdraw(self) -> None:
        """Unregister (goodbye packets) and close zeroconf; cancels a registration still probing."""
        task, self.advertising = self.advertising, None
        if task is not None:
            task.cancel()  # no-op once registered
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                _LOGGER.exception("Zeroconf registration failed")
        await self._discovery.aclose()

    async def preload(self) -> None:
        if self.engines.stt is not None:
            await self.engines.stt.preload()
        if self.engines.tts is not None:
            await self.engines.tts.preload()
        if self.engines.wake is not None:
            await self.engines.wake.preload()
        speakers = self.engines.speakers
        if speakers is not None and (speakers.enrolled or self.settings.wake.speakers):  # else it may never load
            await speakers.preload()

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace time, then close everything."""
        for server in self.servers.values():
            await server.stop_accepting()
        # uvicorn stops accepting at once, then gives the requests in flight the same grace time.
        http, self.http = self.http, None
        http_stopped = asyncio.create_task(http.stop()) if http is not None else None
        await self._withdraw()  # first: nobody should be sent to a closing port
        grace = self.settings.shutdown_grace_seconds
        # Wake streams never end by themselves (Home Assistant streams until it closes): nothing to wait for.
        busy = [s for service, s in self.servers.items() if service is not Service.WAKE]
        idle = await asyncio.gather(*(s.wait_idle(grace) for s in busy))
        if not all(idle):
            _LOGGER.info("Closing connections still open after %.1f s", grace)
        for server in self.servers.values():
            await server.close()
        self.servers.clear()
        if http_stopped is not None:
            await http_stopped
        live, self.engines.live = self.engines.live, None
        if live is not None:  # its sessions ended with their sockets; this stops the scheduler
            await live.close()
        for pool in self._pools():  # no request can use an upstream any more
            await pool.close()
        catalog, self.catalog = self.catalog, None
        if catalog is not None:
            await catalog.aclose()  # installs under way stop; their partial files stay, to be resumed
        if self.engines.wake is not None:
            await self.engines.wake.close()  # its worker threads, before the models they use
        await self.manager.close()

    def _pools(self) -> list[UpstreamPool[Any]]:
        return [pool for pool in (self.stt_pool, self.tts_pool) if pool is not None]

    def port(self, service: Service) -> int:
        return self.servers[service].port

    @property
    def http_port(self) -> int:
        assert self.http is not None
        return self.http.port


async def run(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM (or the end of stdin for a stdio:// service), then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    app = App(settings)
    await app.start()
    _LOGGER.info("wyoming-minerva ready")
    waits: list[asyncio.Task[object]] = [asyncio.create_task(stop.wait())]
    waits += [asyncio.create_task(server.wait_stdio_closed()) for server in app.servers.values()]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        _LOGGER.info("Shutting down")
        await app.stop()


__all__ = ["App", "EventSink", "StartupError", "run"]
